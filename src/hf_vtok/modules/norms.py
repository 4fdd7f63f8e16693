"""Normalisation layers that compute in float32 whatever the activation dtype."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension, computed in float32 and cast back to the input dtype.

    Used for pre-norms and for per-head QK-norm (``dim = head_dim``).
    """

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        return F.rms_norm(hidden_states.float(), (self.dim,), weight, eps=self.eps).type_as(hidden_states)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class FP32LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` evaluated in float32 (bf16 statistics are too coarse for latents)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(hidden_states.float(), self.normalized_shape, weight, bias, self.eps).type_as(hidden_states)
