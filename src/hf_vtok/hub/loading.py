"""The one loader of the commands: any hf_vtok tokenizer, diffusers autoencoder or pipeline, by folder or Hub id.

    model, processor = load_tokenizer("vitok-350M-f16x64")            # AutoModel + AutoImageProcessor
    autoencoder = load_autoencoder("mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers")
    pipe = load_pipeline("sit-xl_maetok-b-128")                        # the class in model_index.json

What a folder holds is read off its ``model_index.json`` (a pipeline) or ``config.json`` (an hf_vtok
``model_type``: a tokenizer; a diffusers ``_class_name``: an autoencoder); ``load`` does the rest.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

import hf_vtok  # registers the tokenizers with the Auto classes

TOKENIZER, AUTOENCODER, PIPELINE = "tokenizer", "autoencoder", "pipeline"
DIFFUSERS_AUTOENCODERS = ("AutoencoderDC", "AutoencoderKL")
# pipelines whose tokenizer turns images into ids: as an autoencoder of the latent cache they store token ids
IMAGE_TOKEN_PIPELINES = ("V2FlowPipeline", "V2FlowLlamaPipeline")


@dataclass(frozen=True)
class Checkpoint:
    """What a folder or Hub repository holds: ``kind`` and its class (pipelines, autoencoders) or model type."""

    name_or_path: str
    kind: str
    class_name: str
    subfolder: str | None = None


def _read_json(name_or_path: str, filename: str, subfolder: str | None) -> dict | None:
    """A JSON file of a local folder or a Hub repository; None where it has none."""
    folder = Path(name_or_path) / (subfolder or "")
    if Path(name_or_path).is_dir():
        path = folder / filename
        return _parse_json_file(path) if path.is_file() else None
    path = _hub_file(name_or_path, filename, subfolder)
    return None if path is None else _parse_json_file(Path(path))


def _parse_json_file(path: Path) -> dict:
    """A JSON object file, or a ``ValueError`` naming it."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return content


def _hub_file(name_or_path: str, filename: str, subfolder: str | None) -> str | None:
    """Local path of ``filename`` of the Hub repository ``name_or_path`` (downloaded into the Hub cache), None where
    the repository has no such file; one-line errors for an id that is no folder and no reachable repository."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from .presets import _hub_unreachable_reason

    not_local = f"{name_or_path!r} is not a local folder"
    if Path(name_or_path).expanduser().exists():
        raise ValueError(f"{name_or_path!r} is a file, not a model folder")
    reason = _hub_unreachable_reason()
    try:
        return hf_hub_download(name_or_path, filename, subfolder=subfolder, local_files_only=reason is not None)
    except HFValidationError:
        raise FileNotFoundError(f"{not_local}, and not a valid Hub id (owner/name)") from None
    except LocalEntryNotFoundError:
        if _repository_cached(name_or_path):
            return None  # the cached snapshot has no such file
        raise FileNotFoundError(
            f"{not_local}, and the Hub repository of that name is not in the local Hub cache and cannot be fetched "
            f"now ({reason or 'no network'})"
        ) from None
    except GatedRepoError:
        raise FileNotFoundError(f"{not_local}; the Hub repository is gated: accept its terms and log in") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{not_local}, and there is no Hub repository of that name (or it is private: log in with `hf auth login`)"
        ) from None
    except EntryNotFoundError:
        return None
    except Exception as error:  # network errors of many types
        raise FileNotFoundError(
            f"{not_local}, and the Hub repository could not be reached: {type(error).__name__}: {error}"
        ) from error


def _repository_cached(repo_id: str) -> bool:
    """Whether the local Hub cache holds some snapshot of the model repository ``repo_id``."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots").is_dir()


def check_weight_files(name_or_path: str | Path, subfolder: str | None = None) -> None:
    """Every ``*.safetensors`` file of a local model folder (and its sub-folders) is complete: a truncated, empty
    or corrupt one is a ``ValueError`` naming it (read from the headers, before any weights are loaded)."""
    from ..utils.checkpoints import check_safetensors_file

    folder = Path(name_or_path) / (subfolder or "")
    if folder.is_dir():
        for path in sorted(folder.rglob("*.safetensors")):
            check_safetensors_file(path)


def inspect_checkpoint(name_or_path: str | Path, subfolder: str | None = None) -> Checkpoint:
    """What ``name_or_path`` (``/subfolder``) holds, from its ``model_index.json`` or ``config.json``."""
    name_or_path = str(name_or_path)
    if subfolder is None:
        index = _read_json(name_or_path, "model_index.json", None)
        if index is not None:
            class_name = index.get("_class_name")
            if isinstance(class_name, list):  # remote code: [module of the bundle, class]
                class_name = class_name[-1]
            return Checkpoint(name_or_path, PIPELINE, str(class_name))
    config = _read_json(name_or_path, "config.json", subfolder)
    where = f"{name_or_path!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    if config is None:
        raise ValueError(f"{where} has neither a model_index.json (a pipeline) nor a config.json (a model)")
    if "model_type" in config:
        return Checkpoint(name_or_path, TOKENIZER, str(config["model_type"]), subfolder)
    if config.get("_class_name") in DIFFUSERS_AUTOENCODERS:
        return Checkpoint(name_or_path, AUTOENCODER, config["_class_name"], subfolder)
    raise ValueError(
        f"{where} is neither an hf_vtok tokenizer (config.json with model_type) nor a diffusers "
        f"{' / '.join(DIFFUSERS_AUTOENCODERS)} (config.json with _class_name); found "
        f"_class_name={config.get('_class_name')!r}"
    )


def _pipeline_class(checkpoint: Checkpoint):
    import diffusers

    cls = getattr(hf_vtok, checkpoint.class_name, None) or getattr(diffusers, checkpoint.class_name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"{checkpoint.name_or_path!r}: pipeline class {checkpoint.class_name!r} is neither an hf_vtok nor a "
            "diffusers pipeline"
        )
    return cls


def _diffusers_dtype(dtype: torch.dtype) -> dict:
    """diffusers >= 0.42 names the ``from_pretrained`` argument ``dtype`` (``torch_dtype`` before)."""
    import diffusers
    from packaging import version

    return {"dtype" if version.parse(diffusers.__version__).release >= (0, 42) else "torch_dtype": dtype}


class CheckpointLoadError(ValueError):
    """A model or pipeline (folder or Hub id) that cannot be loaded; the message names it."""


@contextlib.contextmanager
def _held_library_logs(names=("transformers", "diffusers")):
    """Log records of the libraries during a load are held back (the list is yielded): handled as usual when the
    load succeeds, dropped when it fails (the error then says what went wrong, instead of a report above it)."""
    held: list[logging.LogRecord] = []

    class Hold(logging.Handler):
        def emit(self, record):
            held.append(record)

    hold = Hold()
    saved = [(logger, logger.handlers[:], logger.propagate) for logger in map(logging.getLogger, names)]
    for logger, _, _ in saved:
        logger.handlers, logger.propagate = [hold], False
    try:
        yield held
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
    for record in held:  # only reached without an error
        logging.getLogger(record.name).handle(record)


_REPORT_ROW = re.compile(r"^\s*(\S+)\s*\|\s*(MISSING|MISMATCH|UNEXPECTED)\s*\|\s*(.*?)\s*$")


def _load_report_summary(records: list[logging.LogRecord]) -> str:
    """transformers' load report (a table of MISSING / MISMATCH / UNEXPECTED keys) in a few words, or ""."""
    rows = [
        match.groups()
        for record in records
        for line in record.getMessage().splitlines()
        if (match := _REPORT_ROW.match(line))
    ]
    if not rows:
        return ""
    counts = {status: sum(row[1] == status for row in rows) for status in ("MISSING", "MISMATCH", "UNEXPECTED")}
    words = ", ".join(f"{count} {status.lower()}" for status, count in counts.items() if count)
    mismatch = next((f"; e.g. {key}: {detail}" for key, status, detail in rows if status == "MISMATCH"), "")
    return f"the weights do not fit the model ({words} keys{mismatch})"


def _names_the_checkpoint(function):
    """Errors of loading ``name_or_path`` (the first argument) that do not name it are raised as a
    ``CheckpointLoadError`` that does (a corrupt config, an unknown model type, a failing constructor)."""

    @functools.wraps(function)
    def wrapper(name_or_path, *args, **kwargs):
        held: list[logging.LogRecord] = []
        try:
            with _held_library_logs() as held:
                return function(name_or_path, *args, **kwargs)
        except CheckpointLoadError:
            raise
        except Exception as error:
            message = " ".join(str(error).split())
            report = _load_report_summary(held)
            if str(name_or_path) in message and isinstance(error, (ValueError, OSError)) and not report:
                raise
            raise CheckpointLoadError(
                f"{str(name_or_path)!r} cannot be loaded: {report or f'{type(error).__name__}: {message}'}"
            ) from error

    return wrapper


@_names_the_checkpoint
def load(
    name_or_path: str | Path,
    kinds: tuple[str, ...] = (TOKENIZER, AUTOENCODER, PIPELINE),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    subfolder: str | None = None,
):
    """The model or pipeline at ``name_or_path`` in eval mode on ``device`` / ``dtype``; an error names what it
    is when it is none of ``kinds``. Tokenizers come back as ``(model, image_processor)``."""
    from diffusers import AutoencoderDC, AutoencoderKL
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    checkpoint = inspect_checkpoint(name_or_path, subfolder)
    check_weight_files(name_or_path, subfolder)
    if checkpoint.kind not in kinds:
        raise ValueError(
            f"{str(name_or_path)!r} holds a {checkpoint.kind} ({checkpoint.class_name}), not a {' or '.join(kinds)}"
        )
    where = {"subfolder": subfolder} if subfolder else {}
    if checkpoint.kind == PIPELINE:
        pipeline = _pipeline_class(checkpoint).from_pretrained(str(name_or_path), **_diffusers_dtype(dtype))
        pipeline = pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline
    if checkpoint.kind == AUTOENCODER:
        cls = AutoencoderDC if checkpoint.class_name == "AutoencoderDC" else AutoencoderKL
        return cls.from_pretrained(str(name_or_path), **_diffusers_dtype(dtype), **where).to(device).eval()
    AutoConfig.from_pretrained(str(name_or_path), **where)  # a clear error for unknown model types
    model = AutoModel.from_pretrained(str(name_or_path), dtype=dtype, **where).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(str(name_or_path), **where)
    return model, processor


def load_tokenizer(name_or_path: str | Path, device="cpu", dtype: torch.dtype = torch.float32):
    """``(model, image_processor)`` of an hf_vtok tokenizer folder or Hub id."""
    return load(name_or_path, (TOKENIZER,), device, dtype)


def load_pipeline(name_or_path: str | Path, device="cpu", dtype: torch.dtype = torch.float32):
    """A saved pipeline: the class named in its ``model_index.json`` (hf_vtok's first, then diffusers')."""
    return load(name_or_path, (PIPELINE,), device, dtype)


@_names_the_checkpoint
def load_autoencoder(name_or_path: str | Path, device="cpu", dtype=torch.float32, subfolder: str | None = None):
    """What ``hf-vtok cache-latents`` encodes with: an hf_vtok tokenizer, a diffusers ``AutoencoderDC`` /
    ``AutoencoderKL``, or a saved ``V2FlowPipeline`` (an ``ImageTokenEncoder``: the cache stores token ids)."""
    from diffusers import AutoencoderDC
    from transformers import AutoModel

    from ..data.latent_cache import ImageTokenEncoder

    checkpoint = inspect_checkpoint(name_or_path, subfolder)
    check_weight_files(name_or_path, subfolder)
    if checkpoint.kind == PIPELINE:
        if checkpoint.class_name not in IMAGE_TOKEN_PIPELINES:
            raise ValueError(
                f"{str(name_or_path)!r} is a {checkpoint.class_name}; cache-latents takes a tokenizer, an autoencoder "
                f"or a {' / '.join(IMAGE_TOKEN_PIPELINES)} folder"
            )
        # only the DC-AE and the V2Flow tokenizer (not a V2FlowLlamaPipeline's language model)
        vae = AutoencoderDC.from_pretrained(str(name_or_path), subfolder="vae", **_diffusers_dtype(dtype))
        tokenizer = AutoModel.from_pretrained(str(name_or_path), subfolder="tokenizer", dtype=dtype)
        return ImageTokenEncoder(hf_vtok.V2FlowPipeline(vae=vae, tokenizer=tokenizer)).to(device).eval()
    loaded = load(name_or_path, (TOKENIZER, AUTOENCODER), device, dtype, subfolder)
    return loaded[0] if isinstance(loaded, tuple) else loaded  # a tokenizer's processor: the cache frames itself


__all__ = [
    "Checkpoint",
    "CheckpointLoadError",
    "check_weight_files",
    "inspect_checkpoint",
    "load",
    "load_autoencoder",
    "load_pipeline",
    "load_tokenizer",
]
