"""Every released original checkpoint that hf_vtok converts, in one registry.

    hf-vtok convert --preset maetok-b-128 --output maetok-b-128
    hf-vtok convert --list

    import hf_vtok
    model = hf_vtok.from_preset("softvq-l-64")                     # download (cached) + convert
    pipe = hf_vtok.from_preset("sit-xl_maetok-b-128", pipeline=True)  # generator + its tokenizer

An entry names the original Hub repository, the files of the release (by role), the revision to
fetch (pinned where known; ``None`` means the default branch), the license of the original, the
fields the converted hf_vtok config must have, and for generators the tokenizer they were trained
on and the released sampling recipe. Its converter is the family's module in
``hf_vtok.cli.CONVERTERS``, which implements ``convert_release(entry, files, dtype, **converter_options)`` (and, for
generators, ``build_pipeline(transformer, tokenizer, entry)``).

Downloads go through ``huggingface_hub.hf_hub_download`` (its cache, resumable). Without a network
(``HF_HUB_OFFLINE=1``, or the Hub endpoint unreachable) a file missing from the cache fails at once,
with the command that fetches it, instead of after the client's retries.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

# the papers' code and the license each original release is published under
VITOK_LICENSE = "mit"  # vitok-release README "License: MIT" (its pyproject classifier says Apache-2.0)
CONTINUOUS_TOKENIZER_LICENSE = "apache-2.0"  # the license its PyTorchModelHubMixin pushes carry
FLOWMO_LICENSE = "apache-2.0"  # kylesargent/FlowMo LICENSE

_CHECKPOINT_FILES = {"checkpoint": "model.safetensors", "config": "config.json"}  # PyTorchModelHubMixin layout


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One released original checkpoint and how hf_vtok turns it into a model."""

    name: str
    family: str  # key of hf_vtok.cli.CONVERTERS
    kind: str  # "tokenizer" or "generator"
    repo_id: str
    files: Mapping[str, str]  # role -> file name in the repository
    license: str
    config: Mapping[str, object]  # fields the converted hf_vtok config has
    revision: str | None = None  # a commit to pin; None: the default branch (no commit known offline)
    aliases: tuple[str, ...] = ()
    tokenizer: str | None = None  # generators: the entry of the tokenizer they were trained on
    sampling: Mapping[str, object] = field(default_factory=dict)  # generators: the released recipe
    # keyword arguments of the family's converter this release needs (e.g. arch_overrides of a
    # SoftVQ / MAETok config.json naming a non-standard ViT, FlowMo's original_config / width_table)
    converter_options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("files", "config", "sampling", "converter_options"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def short_name(self) -> str:
        """The name the family's own command uses (``hf-vtok convert vitok --preset 350M-f16x64``)."""
        return self.aliases[0] if self.aliases else self.name

    @property
    def converter(self):
        """The family's converter module (``convert_release``, ``add_arguments``, ``run``)."""
        from .cli import CONVERTERS

        return importlib.import_module(CONVERTERS[self.family])

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    def mismatches(self, config) -> list[str]:
        """Fields of ``config`` (an hf_vtok / diffusers config) that differ from this release's."""
        wrong = []
        for key, expected in self.config.items():
            actual = getattr(config, key, None)
            if isinstance(actual, list):
                actual = tuple(actual)
            if actual != expected:
                wrong.append(f"{key} {actual!r} (the release has {expected!r})")
        return wrong


def _vitok(short: str, variant: str) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=f"vitok-v2-{short}",
        aliases=(short,),
        family="vitok",
        kind="tokenizer",
        repo_id=f"philippehansen/ViTok-v2-{short}",
        files={"encoder": "encoder.safetensors", "decoder": "decoder.safetensors"},
        license=VITOK_LICENSE,
        config={"variant": variant},
    )


def _flowmo(name: str, filename: str, context_dim: int, bits_per_token: int) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=name,
        family="flowmo",
        kind="tokenizer",
        repo_id="ksarge/FlowMo",
        files={"checkpoint": filename},
        license=FLOWMO_LICENSE,
        config={"context_dim": context_dim, "bits_per_token": bits_per_token},
    )


def _latent_tokens(family: str, org: str, name: str, tokens: int, channels: int, size: int) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=name,
        family=family,
        kind="tokenizer",
        repo_id=f"{org}/{name}",
        files=_CHECKPOINT_FILES,
        license=CONTINUOUS_TOKENIZER_LICENSE,
        config={"num_latent_tokens": tokens, "latent_channels": channels, "image_size": size},
    )


# README "SiT Generation": SDE sampler, cosine path, 250 steps, CFG 1.75 on t <= 0.7
SIT_RECIPE = {
    "sampler": "sde",
    "path_type": "cosine",
    "num_inference_steps": 250,
    "guidance_scale": 1.75,
    "guidance_interval": (0.0, 0.7),
}
# README "DiT Generation": cosine schedule, 250 ancestral steps, CFG 1.75 (clip_denoised False)
DIT_RECIPE = {"num_inference_steps": 250, "guidance_scale": 1.75}
_XL = {"hidden_size": 1152, "num_layers": 28, "num_attention_heads": 16}


def _generator(family: str, org: str, tokenizer: PretrainedCheckpoint) -> PretrainedCheckpoint:
    return PretrainedCheckpoint(
        name=f"{family}-xl_{tokenizer.name}",
        family=family,
        kind="generator",
        repo_id=f"{org}/{family}-xl_{tokenizer.name}",
        files=_CHECKPOINT_FILES,
        license=CONTINUOUS_TOKENIZER_LICENSE,
        config={
            **_XL,
            "num_tokens": tokenizer.config["num_latent_tokens"],
            "in_channels": tokenizer.config["latent_channels"],
        },
        tokenizer=tokenizer.name,
        sampling=SIT_RECIPE if family == "sit" else DIT_RECIPE,
    )


_SOFTVQ = [
    _latent_tokens("softvq", "SoftVQVAE", name, tokens, channels, size)
    for name, tokens, channels, size in (
        ("softvq-l-64", 64, 32, 256),
        ("softvq-bl-64", 64, 32, 256),
        ("softvq-b-64", 64, 32, 256),
        ("softvq-l-32", 32, 64, 256),
        ("softvq-bl-32", 32, 64, 256),
        ("softvq-b-32", 32, 64, 256),
        ("softvq-bl-64-512", 64, 32, 512),
        ("softvq-l-32-512", 32, 64, 512),
    )
]
_MAETOK = [
    _latent_tokens("maetok", "MAETok", "maetok-b-128", 128, 32, 256),
    _latent_tokens("maetok", "MAETok", "maetok-b-128-512", 128, 32, 512),
]
_BY_NAME = {entry.name: entry for entry in _SOFTVQ + _MAETOK}

PRETRAINED: dict[str, PretrainedCheckpoint] = {
    entry.name: entry
    for entry in [
        _vitok("350M-f16x16", "Ld4-Ld24/1x16x16"),
        _vitok("350M-f16x32", "Ld4-Ld24/1x16x32"),
        _vitok("350M-f16x64", "Ld4-Ld24/1x16x64"),
        _vitok("5B-f16x16", "Td4-T/1x16x16"),
        _vitok("5B-f16x32", "Td4-T/1x16x32"),
        _vitok("5B-f16x64", "Td4-T/1x16x64"),
        _vitok("5B-f32x64", "Td4-T/1x32x64"),
        _vitok("5B-f32x128", "Td4-T/1x32x128"),
        _vitok("5B-f32x256", "Td4-T/1x32x256"),
        _flowmo("flowmo-lo", "flowmo_lo.pth", 18, 9),
        _flowmo("flowmo-hi", "flowmo_hi.pth", 56, 14),
        *_SOFTVQ,
        *_MAETOK,
        *(
            _generator("sit", "MAETok" if name.startswith("maetok") else "SoftVQVAE", _BY_NAME[name])
            for name in (
                "maetok-b-128",
                "maetok-b-128-512",
                "softvq-l-64",
                "softvq-bl-64",
                "softvq-b-64",
                "softvq-l-32",
                "softvq-bl-32",
                "softvq-b-32",
                "softvq-bl-64-512",
                "softvq-l-32-512",
            )
        ),
        _generator("dit", "SoftVQVAE", _BY_NAME["softvq-l-64"]),
        _generator("dit", "SoftVQVAE", _BY_NAME["softvq-l-32"]),
    ]
}
_ALIASES = {alias: entry.name for entry in PRETRAINED.values() for alias in entry.aliases}


def get_pretrained(name: str | PretrainedCheckpoint) -> PretrainedCheckpoint:
    """The registry entry of a preset name (or alias); a ``ValueError`` lists the known names."""
    if isinstance(name, PretrainedCheckpoint):
        return name
    entry = PRETRAINED.get(name) or PRETRAINED.get(_ALIASES.get(name, ""))
    if entry is None:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRETRAINED)}")
    return entry


def family_presets(family: str) -> dict[str, PretrainedCheckpoint]:
    """The entries of one family under the names its own ``hf-vtok convert FAMILY --preset`` takes."""
    return {entry.short_name: entry for entry in PRETRAINED.values() if entry.family == family}


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
):
    """``(model, image_processor)`` of a release (processor ``None`` for generators).

    ``files`` (role -> local path) skips the download. The converted config is checked against the
    entry's: files of another release are an error.
    """
    from .conversion import CheckpointMismatchError

    entry = get_pretrained(name)
    if files is None:
        files = download_pretrained(entry, revision=revision, cache_dir=cache_dir)
    unknown = sorted(set(files) - set(entry.files))
    absent = sorted(set(entry.files) - set(files))
    if unknown or absent:
        raise ValueError(f"preset {entry.name!r} takes the files {dict(entry.files)}; got roles {sorted(files)}")
    files = {role: str(path) for role, path in files.items()}
    model, processor = entry.converter.convert_release(entry, files, dtype, **entry.converter_options)
    wrong = entry.mismatches(model.config)
    if wrong:
        raise CheckpointMismatchError(f"these files are not {entry.repo_id}: " + ", ".join(wrong))
    return model, processor


def from_preset(
    name: str,
    *,
    pipeline: bool = False,
    return_processor: bool = False,
    dtype=None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
):
    """A released original checkpoint as an hf_vtok model: downloaded (cached) and converted.

    Tokenizers come back as their ``PreTrainedModel`` (with ``return_processor=True``: ``(model,
    image_processor)``); generators as their diffusers transformer, or with ``pipeline=True`` as the
    complete pipeline with the tokenizer they were trained on and the released sampling recipe.
    """
    entry = get_pretrained(name)
    if pipeline and entry.kind != "generator":
        raise ValueError(f"preset {entry.name!r} is a {entry.kind}; pipeline=True needs a generator preset")
    options = {"dtype": dtype, "cache_dir": cache_dir}
    model, processor = convert_pretrained(entry, revision=revision, **options)
    if pipeline:
        tokenizer, _ = convert_pretrained(entry.tokenizer, **options)
        return entry.converter.build_pipeline(model, tokenizer, entry)
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
) -> str:
    """Download, convert and ``save_pretrained`` a release (with its image processor) into ``output_dir``."""
    entry = get_pretrained(name)
    if pipeline:
        if files is not None:
            raise ValueError("files= is for one checkpoint; a pipeline also converts the tokenizer preset")
        result = from_preset(entry.name, pipeline=True, dtype=dtype, revision=revision, cache_dir=cache_dir)
        result.save_pretrained(output_dir)
        return str(output_dir)
    if files is None:
        files = download_pretrained(entry, revision=revision, cache_dir=cache_dir)
    model, processor = convert_pretrained(entry, files=files, dtype=dtype)
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


def format_registry() -> str:
    """A text table of every entry (``hf-vtok convert --list``)."""
    rows = [("preset", "family", "original repository", "files", "license")]
    for entry in PRETRAINED.values():
        rows.append((entry.name, entry.family, entry.repo_id, ", ".join(entry.files.values()), entry.license))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


__all__ = [
    "PRETRAINED",
    "PretrainedCheckpoint",
    "PretrainedNotAvailableError",
    "convert_pretrained",
    "download_pretrained",
    "family_presets",
    "format_registry",
    "from_preset",
    "get_pretrained",
    "save_preset",
]
