"""Renaming original checkpoint keys, strict loading with named errors (reading files: ``utils.checkpoints``)."""

import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ..utils.checkpoints import (  # noqa: F401  (re-exported)
    load_original_json,
    load_original_state_dict,
    load_torch_checkpoint,
)

# the wrappers a saved state dict may carry: torch.compile's ``_orig_mod.``, DDP's ``module.``
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: lists missing, unexpected and mis-shaped keys by name."""


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


def rename_original_keys(
    state_dict: Mapping[str, torch.Tensor], rules: Iterable[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    """Original names -> hf_vtok names: ``WRAPPER_PREFIXES`` stripped, then ``rules`` applied (``rename_keys``)."""
    return rename_keys(strip_prefixes(state_dict, WRAPPER_PREFIXES), rules)


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
