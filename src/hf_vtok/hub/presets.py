"""Released original checkpoints as hf_vtok models: download (Hub cache), convert, save.

    hf-vtok convert --preset maetok-b-128 --output maetok-b-128
    hf-vtok convert --list

    import hf_vtok
    model = hf_vtok.from_preset("softvq-l-64")                     # download (cached) + convert
    pipe = hf_vtok.from_preset("sit-xl_maetok-b-128", pipeline=True)  # generator + its tokenizer

The releases are the entries of ``hf_vtok.registry.PRETRAINED``; each converts through its family's
``CONVERTER`` (``convert_release``). Downloads go through ``huggingface_hub.hf_hub_download`` (its cache,
resumable). Without a network (``HF_HUB_OFFLINE=1``, or the Hub endpoint unreachable) a file missing from
the cache fails at once, with the command that fetches it, instead of after the client's retries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from ..registry import PRETRAINED, PretrainedCheckpoint, format_registry, get_family, get_pretrained
from ..utils.imports import import_object

logger = logging.getLogger(__name__)


def converter_of(family: str):
    """The ``CONVERTER`` of a family (``hf_vtok.conversion.Converter``), its module imported on first use."""
    spec = get_family(family)
    if spec.converter is None:
        raise ValueError(f"family {spec.name!r} has no converter")
    return import_object(f"{spec.converter}:CONVERTER")


def build_pipeline(family: str, transformer, tokenizer, sampling: Mapping | None = None):
    """A generator family's pipeline of a converted transformer and a tokenizer (model, folder or Hub id),
    with the scheduler of the release's ``sampling`` recipe (the family's default recipe without one)."""
    spec = get_family(family)
    if spec.pipeline is None:
        raise ValueError(f"family {spec.name!r} has no pipeline")
    sampling = sampling or converter_of(family).default_sampling
    return import_object(spec.pipeline).from_components(transformer, tokenizer, sampling=sampling)


class PretrainedNotAvailableError(RuntimeError):
    """A release's files are neither in the local Hub cache nor downloadable now."""


def _hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub endpoint cannot be reached right now, or None (also None behind a proxy: let the client try)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return None
    except OSError as error:  # DNS failure, refused, unreachable, timed out
        return f"{endpoint.hostname}:{port} is unreachable ({error})"


def download_pretrained(
    name: str | PretrainedCheckpoint, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> dict[str, str]:
    """Local paths of a release's files (role -> path), downloaded into the Hub cache where missing.

    ``revision`` overrides the entry's pinned one. Offline, or with the endpoint unreachable, a file
    that is not cached raises ``PretrainedNotAvailableError`` at once, naming what to fetch.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    entry = get_pretrained(name)
    revision = revision or entry.revision
    options = {"revision": revision, "cache_dir": cache_dir}
    paths, missing = {}, {}
    for role, filename in entry.files.items():
        try:
            paths[role] = hf_hub_download(entry.repo_id, filename, local_files_only=True, **options)
        except LocalEntryNotFoundError:
            missing[role] = filename
    if not missing:
        return paths
    reason = _hub_unreachable_reason()
    if reason is None:
        try:
            for role, filename in missing.items():
                paths[role] = hf_hub_download(entry.repo_id, filename, **options)
            return paths
        except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as error:
            reason = f"{type(error).__name__}: {error}"
    files = " ".join(missing.values())
    pin = f" --revision {revision}" if revision else ""
    raise PretrainedNotAvailableError(
        f"could not fetch {', '.join(missing.values())} of {entry.repo_id!r} for preset {entry.name!r}: not in the "
        f"Hub cache and {reason}. Fetch them where there is a network with `hf download {entry.repo_id} {files}{pin}` "
        "(then copy the Hub cache here or point HF_HUB_CACHE at it), or pass the files to "
        f"`hf-vtok convert {entry.family}` directly."
    )


def convert_pretrained(
    name: str | PretrainedCheckpoint,
    files: Mapping[str, str | os.PathLike] | None = None,
    dtype=None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_non_finite: bool = False,
):
    """``(model, image_processor)`` of a release (processor ``None`` for generators).

    ``files`` (role -> local path) skips the download. The converted config is checked against the
    entry's: files of another release are an error. Weights holding NaN / inf are an error unless
    ``allow_non_finite``; originals of mixed dtypes are cast to one (``hf_vtok.conversion.finish_conversion``).
    """
    from ..conversion import CheckpointMismatchError, finish_conversion

    entry = get_pretrained(name)
    if files is None:
        files = download_pretrained(entry, revision=revision, cache_dir=cache_dir)
    unknown = sorted(set(files) - set(entry.files))
    absent = sorted(set(entry.files) - set(files))
    if unknown or absent:
        raise ValueError(f"preset {entry.name!r} takes the files {dict(entry.files)}; got roles {sorted(files)}")
    files = {role: str(path) for role, path in files.items()}
    model, processor = converter_of(entry.family).convert_release(entry, files, dtype)
    wrong = entry.mismatches(model.config)
    if wrong:
        raise CheckpointMismatchError(f"these files are not {entry.repo_id}: " + ", ".join(wrong))
    for note in finish_conversion(model, dtype, allow_non_finite, source=" + ".join(files.values())):
        logger.warning(f"{entry.name}: {note}")
    return model, processor


def from_preset(
    name: str,
    *,
    pipeline: bool = False,
    return_processor: bool = False,
    dtype=None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_non_finite: bool = False,
):
    """A released original checkpoint as an hf_vtok model: downloaded (cached) and converted.

    Tokenizers come back as their ``PreTrainedModel`` (with ``return_processor=True``: ``(model,
    image_processor)``); generators as their diffusers transformer, or with ``pipeline=True`` as the
    complete pipeline with the tokenizer they were trained on and the released sampling recipe.
    """
    entry = get_pretrained(name)
    if pipeline and entry.kind != "generator":
        raise ValueError(f"preset {entry.name!r} is a {entry.kind}; pipeline=True needs a generator preset")
    options = {"dtype": dtype, "cache_dir": cache_dir, "allow_non_finite": allow_non_finite}
    model, processor = convert_pretrained(entry, revision=revision, **options)
    if pipeline:
        tokenizer, _ = convert_pretrained(entry.tokenizer, **options)
        return build_pipeline(entry.family, model, tokenizer, entry.sampling)
    return (model, processor) if return_processor else model


def save_preset(
    name: str,
    output_dir: str | os.PathLike,
    *,
    pipeline: bool = False,
    dtype=None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    files: Mapping[str, str | os.PathLike] | None = None,
    allow_non_finite: bool = False,
) -> str:
    """Download, convert and ``save_pretrained`` a release (with its image processor) into ``output_dir``."""
    entry = get_pretrained(name)
    if pipeline:
        if files is not None:
            raise ValueError("files= is for one checkpoint; a pipeline also converts the tokenizer preset")
        result = from_preset(
            entry.name,
            pipeline=True,
            dtype=dtype,
            revision=revision,
            cache_dir=cache_dir,
            allow_non_finite=allow_non_finite,
        )
        result.save_pretrained(output_dir)
        return str(output_dir)
    if files is None:
        files = download_pretrained(entry, revision=revision, cache_dir=cache_dir)
    model, processor = convert_pretrained(entry, files=files, dtype=dtype, allow_non_finite=allow_non_finite)
    model.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    write_provenance(entry, files, output_dir)
    return str(output_dir)


PROVENANCE_FILE = "original_checkpoint.json"


def write_provenance(entry: PretrainedCheckpoint, files: Mapping[str, str | os.PathLike], output_dir) -> Path:
    """``original_checkpoint.json``: the release a converted folder came from, with the commit of the files
    (read off the Hub cache's ``snapshots/<commit>/`` folder; None for files from elsewhere)."""
    commits = {Path(path).parent.name for path in files.values() if Path(path).parent.parent.name == "snapshots"}
    record = {
        "preset": entry.name,
        "repo_id": entry.repo_id,
        "revision": commits.pop() if len(commits) == 1 else None,
        "files": dict(entry.files),
        "license": entry.license,
    }
    path = Path(output_dir) / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


__all__ = [
    "PRETRAINED",
    "PretrainedCheckpoint",
    "PretrainedNotAvailableError",
    "build_pipeline",
    "convert_pretrained",
    "converter_of",
    "download_pretrained",
    "format_registry",
    "from_preset",
    "get_pretrained",
    "save_preset",
    "write_provenance",
]
