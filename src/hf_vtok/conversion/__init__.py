"""Helpers shared by the per-family converters (original checkpoints -> hf_vtok folders)."""

from .checks import NonFiniteWeightsError, check_finite_weights, finish_conversion, unify_dtype
from .converter import Conversion, Converter
from .state_dicts import (
    WRAPPER_PREFIXES,
    CheckpointMismatchError,
    load_original_json,
    load_original_state_dict,
    load_state_dict_strictly,
    load_torch_checkpoint,
    rename_keys,
    rename_original_keys,
    strip_prefixes,
)

__all__ = [
    "WRAPPER_PREFIXES",
    "CheckpointMismatchError",
    "Conversion",
    "Converter",
    "NonFiniteWeightsError",
    "check_finite_weights",
    "finish_conversion",
    "load_original_json",
    "load_original_state_dict",
    "load_state_dict_strictly",
    "load_torch_checkpoint",
    "rename_keys",
    "rename_original_keys",
    "strip_prefixes",
    "unify_dtype",
]
