"""Reading original checkpoints without executing pickle (safetensors, or ``torch.load(weights_only=True)``), and
their configs."""

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

_UNSUPPORTED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
_MAX_SAFETENSORS_HEADER = 100 * 2**20  # what the safetensors format itself allows


class UnsafeCheckpointError(ValueError):
    """A ``.pth`` file holds a pickled object that ``weights_only`` loading does not rebuild (``global_name``)."""

    def __init__(self, message: str, global_name: str):
        super().__init__(message)
        self.global_name = global_name


def _torch_load_error(path: Path, error: Exception) -> ValueError:
    """torch's refusal / failure -> a one-line error naming the file; torch's hint to load with
    ``weights_only=False`` (which would run code from the file) is not passed on."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    match = _UNSUPPORTED_GLOBAL.search(text)
    if match:
        return UnsafeCheckpointError(
            f"{str(path)!r} holds a pickled {match.group(1)}, which hf_vtok does not unpickle: .pth files are "
            "read with torch.load(weights_only=True), tensors and plain containers only, so that no code in the "
            "file runs",
            match.group(1),
        )
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else ""
        detail = " ".join(detail.split("Check the documentation")[0].split()) or "an object it does not rebuild"
        return ValueError(
            f"{str(path)!r} is not a torch checkpoint that torch.load(weights_only=True) can read ({detail}): "
            "not a checkpoint, or corrupt"
        )
    first = " ".join(text.split(". ")[0].split())
    return ValueError(
        f"{str(path)!r} could not be read as a torch checkpoint (truncated, corrupt, or not a checkpoint): "
        f"{type(error).__name__}: {first}"
    )


def check_safetensors_file(path: str | os.PathLike) -> None:
    """A ``ValueError`` naming ``path`` when it is empty, truncated, or its header is not safetensors JSON (read
    from the header alone: cheap for any size)."""
    path = Path(path)
    size = path.stat().st_size
    problem = None
    if size == 0:
        problem = "it is empty (0 bytes)"
    else:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else None
            if length is None or length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                problem = f"its header does not fit in its {size} bytes (truncated, or not safetensors)"
            else:
                try:
                    header = json.loads(handle.read(length))
                    end = max(
                        (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"),
                        default=0,
                    )
                except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
                    problem = f"its header is corrupt ({type(error).__name__}: {error})"
                else:
                    if 8 + length + end > size:
                        problem = f"it is truncated: it holds {size} bytes, its header describes {8 + length + end}"
    if problem:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {problem}")


def load_torch_checkpoint(path: str | os.PathLike, allowed_globals: Iterable[type] = ()):
    """``torch.load(path, weights_only=True)``: no pickled code runs.

    ``allowed_globals`` lists plain-data classes a training checkpoint may hold besides tensors and
    containers (e.g. ``argparse.Namespace`` for saved command-line arguments); they are rebuilt from
    their attribute dicts only, never by calling code named in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {str(path)!r} is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise _torch_load_error(path, error) from error


def load_original_state_dict(path: str | os.PathLike, inner_key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` file, or a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file with ``weights_only=True``.

    ``inner_key`` selects a nested state dict of a training checkpoint (e.g. ``"model"`` or ``"ema"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        check_safetensors_file(path)
        try:
            state_dict = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    else:
        state_dict = load_torch_checkpoint(path)
    if inner_key is not None:
        if not isinstance(state_dict, Mapping) or inner_key not in state_dict:
            keys = sorted(state_dict)[:20] if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise KeyError(f"{str(path)!r} has no entry {inner_key!r}; top-level entries: {keys}")
        state_dict = state_dict[inner_key]
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state_dict.values()
    ):
        raise ValueError(f"{str(path)!r} does not hold a flat name -> tensor state dict")
    return dict(state_dict)


def load_original_json(path: str | os.PathLike) -> dict:
    """An original ``config.json`` as a dict; a missing file, invalid JSON or a non-object are named errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"original config {str(path)!r} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return config
