"""Reading original checkpoints without executing pickle, renaming keys, strict loading with named errors."""

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: lists missing, unexpected and mis-shaped keys by name."""


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


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``_orig_mod.`` of torch.compile, ``module.`` of DDP) wherever they lead a key."""
    prefixes = tuple(prefixes)
    stripped = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        stripped[key] = value
    return stripped


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply every ``(regex, replacement)`` rule, in order, to every key."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in compiled:
            new_key = pattern.sub(replacement, new_key)
        if new_key in renamed:
            raise CheckpointMismatchError(f"two checkpoint keys map to {new_key!r} (one of them is {key!r})")
        renamed[new_key] = value
    return renamed


def load_state_dict_strictly(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"):
    """Load ``state_dict`` into ``model`` (``assign=True``, so meta-device models get the tensors).

    Anything missing, unexpected or of the wrong shape is reported, all at once, by name.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match {type(model).__name__}:"]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    return model
