"""Renaming original checkpoint keys, strict loading with named errors (reading files: ``utils.checkpoints``)."""

import re
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ..utils.checkpoints import (  # noqa: F401  (re-exported)
    load_original_json,
    load_original_state_dict,
    load_torch_checkpoint,
)

# the wrappers a saved state dict may carry: torch.compile's ``_orig_mod.``, DDP's ``module.``
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


# keys of one list shown in a mismatch error, one per key pattern (layer numbers as *); the rest are counted
SHOWN_KEYS = 5
_LAYER_NUMBER = re.compile(r"\.\d+(?=\.|$)")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: lists missing, unexpected and mis-shaped keys by name.

    ``missing`` / ``unexpected`` / ``mismatched`` hold every key (the message shows a few of each kind)."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


def summarise_keys(items: list[str], shown: int = SHOWN_KEYS) -> str:
    """``items`` (sorted key names, or ``"key: ..."`` lines) as a short list: the first of each key pattern
    (``blocks.*.mlp.fc1.weight``), at most ``shown``, and how many more of how many other patterns."""
    patterns: dict[str, str] = {}
    for item in items:
        patterns.setdefault(_LAYER_NUMBER.sub(".*", item.split(":", 1)[0]), item)
    examples = list(patterns.values())[:shown]
    text = ", ".join(examples)
    rest, other_patterns = len(items) - len(examples), len(patterns) - len(examples)
    if rest:
        text += f" and {rest} more" + (f" of {other_patterns} other key patterns" if other_patterns else " like them")
    return text


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


def load_state_dict_strictly(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    hint: Callable[[], str | None] | None = None,
):
    """Load ``state_dict`` into ``model`` (``assign=True``, so meta-device models get the tensors).

    Anything missing, unexpected or of the wrong shape is reported, all at once: counts and a few names of each
    kind (``summarise_keys``; the error's ``missing`` / ``unexpected`` / ``mismatched`` hold all). ``hint()``, called
    on a mismatch, may say what to change (first in the message, so that a shortened one keeps it).
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
        advice = hint() if hint is not None else None
        lines = [f"{source} does not match {type(model).__name__}:" + (f" {advice}" if advice else "")]
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): " + summarise_keys(items))
        raise CheckpointMismatchError("\n".join(lines), missing, unexpected, mismatched)
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    return model
