"""Reading original checkpoints without executing pickle (safetensors, or ``torch.load(weights_only=True)``), and
their configs."""

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file


def load_torch_checkpoint(path: str | os.PathLike, allowed_globals: Iterable[type] = ()):
    """``torch.load(path, weights_only=True)``: no pickled code runs.

    ``allowed_globals`` lists plain-data classes a training checkpoint may hold besides tensors and
    containers (e.g. ``argparse.Namespace`` for saved command-line arguments); they are rebuilt from
    their attribute dicts only, never by calling code named in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{str(path)!r} could not be loaded with torch.load(weights_only=True) (no pickle is executed): {error}"
        ) from error


def load_original_state_dict(path: str | os.PathLike, inner_key: str | None = None) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` file, or a ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file with ``weights_only=True``.

    ``inner_key`` selects a nested state dict of a training checkpoint (e.g. ``"model"`` or ``"ema"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
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
