"""Layers written once and shared by every hf_vtok family."""

from .attention import Attention, joint_attention, padding_attention_mask
from .layers import DropPath, LayerScale
from .mlp import GELUMLP, SwiGLU, rounded_hidden_size
from .modulation import AdaLNFinalLayer, AdaLNModulation, adaln_chunks, gated_residual, modulate
from .norms import FP32LayerNorm, RMSNorm
from .patches import grid_positions, patchify, scatter_to_canvas, unpatchify
from .position_embedding import LearnedPositionEmbedding, sincos_1d_interleaved
from .rope import (
    LearnedMixedRope2D,
    apply_rotary_embedding,
    init_mixed_rope_frequencies,
    mixed_rope_tables,
    rope_inverse_frequencies,
    rope_tables,
    rope_tables_2d,
)
from .timesteps import TIMESTEP_FREQUENCY_DIM, sinusoidal_timesteps
from .vit_blocks import LatentModulatedNorm, LatentModulatedViTBlock, ViTBlock, modulate_trailing_tokens

__all__ = [
    "TIMESTEP_FREQUENCY_DIM",
    "AdaLNFinalLayer",
    "AdaLNModulation",
    "Attention",
    "adaln_chunks",
    "DropPath",
    "FP32LayerNorm",
    "GELUMLP",
    "LatentModulatedNorm",
    "LatentModulatedViTBlock",
    "LayerScale",
    "LearnedMixedRope2D",
    "LearnedPositionEmbedding",
    "RMSNorm",
    "SwiGLU",
    "ViTBlock",
    "apply_rotary_embedding",
    "gated_residual",
    "grid_positions",
    "init_mixed_rope_frequencies",
    "mixed_rope_tables",
    "joint_attention",
    "modulate",
    "modulate_trailing_tokens",
    "patchify",
    "scatter_to_canvas",
    "sincos_1d_interleaved",
    "sinusoidal_timesteps",
    "unpatchify",
    "padding_attention_mask",
    "rope_inverse_frequencies",
    "rope_tables",
    "rope_tables_2d",
    "rounded_hidden_size",
]
