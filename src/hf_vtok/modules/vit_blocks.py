"""Pre-norm ViT blocks in the timm layout, and their latent-modulated (adaLN) variant.

``ViTBlock``: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))`` with LayerNorm, GELU MLP and
optional LayerScale (DINOv2-style ViTs).

``LatentModulatedViTBlock`` / ``LatentModulatedNorm``: the trailing ``L`` tokens of the sequence
(the latent tokens of a 1D tokenizer decoder) are modulated token by token from a condition
``[B, L, C]`` (``shift, scale = Linear(SiLU(condition))``, applied as ``x * scale + shift``); the other
tokens only see the non-affine norm. This is MAETok's decoder block ("MoVQ" block), without LayerScale.
"""

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import Attention
from .layers import DropPath, LayerScale
from .mlp import GELUMLP
from .modulation import adaln_chunks, modulate
from .norms import FP32LayerNorm


def modulate_trailing_tokens(hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * scale + shift`` on the last ``shift.shape[1]`` tokens; earlier tokens pass unchanged."""
    num_modulated = shift.shape[1]
    head, tail = hidden_states[:, :-num_modulated], hidden_states[:, -num_modulated:]
    return torch.cat((head, modulate(tail, shift, scale, scale_offset=0.0)), dim=1)


class ViTBlock(GradientCheckpointingLayer):
    """timm ``Block``: pre-LayerNorm attention and GELU MLP residuals, each with optional LayerScale."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        layer_scale_init: float | None = None,
        drop_path: float = 0.0,
        rope_layout: str = "interleaved",
    ):
        super().__init__()
        self.norm1 = FP32LayerNorm(hidden_size, eps=norm_eps)
        self.attention = Attention(hidden_size, num_heads, qkv_bias=qkv_bias, out_bias=True, rope_layout=rope_layout)
        self.layer_scale1 = (
            LayerScale(hidden_size, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        )
        self.norm2 = FP32LayerNorm(hidden_size, eps=norm_eps)
        self.mlp = GELUMLP(hidden_size, int(hidden_size * mlp_ratio))
        self.layer_scale2 = (
            LayerScale(hidden_size, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        )
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        attended = self.attention(self.norm1(hidden_states), rotary, attention_mask)
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(attended))
        return hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))


class LatentModulatedViTBlock(GradientCheckpointingLayer):
    """ViT block with non-affine norms whose trailing tokens are adaLN-modulated by a per-token condition."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        condition_dim: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
        rope_layout: str = "interleaved",
    ):
        super().__init__()
        self.norm1 = FP32LayerNorm(hidden_size, eps=norm_eps, elementwise_affine=False)
        self.attention = Attention(hidden_size, num_heads, qkv_bias=qkv_bias, out_bias=True, rope_layout=rope_layout)
        self.norm2 = FP32LayerNorm(hidden_size, eps=norm_eps, elementwise_affine=False)
        self.mlp = GELUMLP(hidden_size, int(hidden_size * mlp_ratio))
        self.modulation = nn.Linear(condition_dim, 4 * hidden_size)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        condition: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        shift_attn, scale_attn, shift_mlp, scale_mlp = adaln_chunks(self.modulation, condition, 4)
        normed = modulate_trailing_tokens(self.norm1(hidden_states), shift_attn, scale_attn)
        hidden_states = hidden_states + self.drop_path(self.attention(normed, rotary, attention_mask))
        normed = modulate_trailing_tokens(self.norm2(hidden_states), shift_mlp, scale_mlp)
        return hidden_states + self.drop_path(self.mlp(normed))


class LatentModulatedNorm(nn.Module):
    """Final norm of a latent-modulated stack: non-affine LayerNorm, trailing tokens ``x * scale + shift``."""

    def __init__(self, hidden_size: int, condition_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.norm = FP32LayerNorm(hidden_size, eps=norm_eps, elementwise_affine=False)
        self.modulation = nn.Linear(condition_dim, 2 * hidden_size)

    def forward(self, hidden_states: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift, scale = adaln_chunks(self.modulation, condition, 2)
        return modulate_trailing_tokens(self.norm(hidden_states), shift, scale)
