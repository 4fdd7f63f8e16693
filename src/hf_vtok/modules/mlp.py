"""Feed-forward blocks."""

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.prepack import linear_gelu


def rounded_hidden_size(hidden_size: int, mlp_ratio: float, multiple_of: int = 16) -> int:
    """``int(hidden_size * mlp_ratio)`` rounded to the nearest multiple (ties up), as ViTok-v2 sizes SwiGLU."""
    hidden = int(hidden_size * mlp_ratio)
    return ((hidden + multiple_of // 2) // multiple_of) * multiple_of


class SwiGLU(nn.Module):
    """``fc2(silu(gate) * value)`` with one fused input projection ``fc1 -> [value | gate]``.

    ``gate_first=True`` swaps the halves for checkpoints that store ``[gate | value]``.
    """

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False, gate_first: bool = False):
        super().__init__()
        self.gate_first = gate_first
        self.fc1 = nn.Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.fc2 = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        value, gate = self.fc1(hidden_states).chunk(2, dim=-1)
        if self.gate_first:
            value, gate = gate, value
        return self.fc2(F.silu(gate) * value)


class GELUMLP(nn.Module):
    """``fc2(gelu(fc1(x)))``; ``approximate="tanh"`` for the DiT/SiT family.

    ``dropout`` (training mode only) follows the activation and ``fc2``, as timm's ``Mlp(drop=...)``.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        bias: bool = True,
        approximate: str = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.approximate = approximate
        self.dropout = float(dropout)
        self.fc1 = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.fc2 = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # inference on CPU: one oneDNN call, the GELU fused into the matmul's epilogue (hf_vtok.utils.prepack)
        hidden_states = linear_gelu(self.fc1, hidden_states, self.approximate)
        if self.dropout:
            hidden_states = F.dropout(hidden_states, self.dropout, self.training)
            return F.dropout(self.fc2(hidden_states), self.dropout, self.training)
        return self.fc2(hidden_states)
