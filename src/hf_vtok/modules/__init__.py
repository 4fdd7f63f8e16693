"""Layers written once and shared by every hf_vtok family."""

from .attention import Attention, joint_attention, padding_attention_mask
from .layers import DropPath, LayerScale
from .modulation import AdaLNModulation, modulate
from .mlp import GELUMLP, SwiGLU, rounded_hidden_size
from .norms import FP32LayerNorm, RMSNorm
from .patches import grid_positions, patchify, scatter_to_canvas, unpatchify
from .rope import apply_rotary_embedding, rope_inverse_frequencies, rope_tables, rope_tables_2d

__all__ = [
    "AdaLNModulation",
    "Attention",
    "DropPath",
    "FP32LayerNorm",
    "GELUMLP",
    "LayerScale",
    "RMSNorm",
    "SwiGLU",
    "apply_rotary_embedding",
    "grid_positions",
    "joint_attention",
    "modulate",
    "patchify",
    "scatter_to_canvas",
    "unpatchify",
    "padding_attention_mask",
    "rope_inverse_frequencies",
    "rope_tables",
    "rope_tables_2d",
    "rounded_hidden_size",
]
