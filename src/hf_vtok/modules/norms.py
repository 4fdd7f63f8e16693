"""Normalisation layers that compute in float32 whatever the activation dtype."""

import torch
import torch.nn.functional as F
from torch import nn

# The CPU and CUDA kernels of layer_norm / rms_norm accumulate bfloat16 / float16 inputs in float32
# and round once at the end: the same values as an explicit upcast, without the two extra copies.
_FLOAT32_ACCUMULATING_DEVICES = ("cpu", "cuda")


def _native_reduced_precision(hidden_states: torch.Tensor, *parameters: torch.Tensor | None) -> bool:
    return (
        hidden_states.dtype in (torch.bfloat16, torch.float16)
        and hidden_states.device.type in _FLOAT32_ACCUMULATING_DEVICES
        and all(parameter is None or parameter.dtype == hidden_states.dtype for parameter in parameters)
    )


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
        if _native_reduced_precision(hidden_states, self.weight):
            return F.rms_norm(hidden_states, (self.dim,), self.weight, eps=self.eps)
        weight = self.weight.float() if self.weight is not None else None
        return F.rms_norm(hidden_states.float(), (self.dim,), weight, eps=self.eps).type_as(hidden_states)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class FP32LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` evaluated in float32 (bf16 statistics are too coarse for latents)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if _native_reduced_precision(hidden_states, self.weight, self.bias):
            return F.layer_norm(hidden_states, self.normalized_shape, self.weight, self.bias, self.eps)
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(hidden_states.float(), self.normalized_shape, weight, bias, self.eps).type_as(
            hidden_states
        )
