"""Rotary position embeddings over any number of position axes.

Tables are built from raw (integer) positions: each axis ``a`` of width ``axes_dims[a]`` gets
``axes_dims[a] / 2`` frequencies ``theta ** (-2i / axes_dims[a])``; the per-axis angle tables are
concatenated, so a 2D table for head_dim ``D`` with ``axes_dims=(D/2, D/2)`` is ``[rows | cols]``.
Two rotation layouts exist in the wild and both are supported:

* ``"interleaved"``: pairs ``(x[2i], x[2i+1])`` (ViTok, Flux/FlowMo, timm mixed RoPE);
* ``"half"``: pairs ``(x[i], x[i + D/2])`` (LLaMA's ``rotate_half``).

``LearnedMixedRope2D`` is the learned variant of RoPE-Mixed (Heo et al., 2024; MAETok): each layer
and head owns its own 2D frequency vectors, trained with the model, so the rotation angle of a
channel pair is ``col * f_x + row * f_y`` rather than one axis at a time.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn


def rope_inverse_frequencies(
    axis_dim: int, theta: float, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``axis_dim / 2`` inverse frequencies ``1 / theta ** (arange(0, axis_dim, 2) / axis_dim)`` in ``dtype``."""
    if axis_dim % 2:
        raise ValueError(f"a RoPE axis needs an even number of channels, got {axis_dim}")
    exponents = torch.arange(0, axis_dim, 2, device=device, dtype=dtype) / axis_dim
    return 1.0 / (theta**exponents)


def rope_tables(
    positions: torch.Tensor,
    axes_dims: Sequence[int],
    theta: float = 10000.0,
    angle_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[..., sum(axes_dims) / 2]`` (float32) for ``positions [..., num_axes]``.

    Frequencies, angles and cos/sin are computed in ``angle_dtype``; ``torch.float64`` is what
    Flux-style models (FlowMo) do, which keeps large positions accurate. The tables are float32.
    """
    if positions.dim() == 0 or positions.shape[-1] != len(axes_dims):
        raise ValueError(
            f"positions of shape {tuple(positions.shape)} do not end in one entry per axis "
            f"of axes_dims={tuple(axes_dims)}"
        )
    angles = []
    for axis, axis_dim in enumerate(axes_dims):
        inv_freq = rope_inverse_frequencies(axis_dim, theta, device=positions.device, dtype=angle_dtype)
        angles.append(positions[..., axis].to(angle_dtype).unsqueeze(-1) * inv_freq)
    angles = torch.cat(angles, dim=-1)
    return angles.cos().float(), angles.sin().float()


def rope_tables_2d(
    row_idx: torch.Tensor, col_idx: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D tables ``[..., head_dim / 2]``: the first half rotates by row, the second by column."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {head_dim}")
    positions = torch.stack((row_idx, col_idx), dim=-1)
    return rope_tables(positions, (head_dim // 2, head_dim // 2), theta)


def apply_rotary_embedding(
    hidden_states: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    layout: str = "interleaved",
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Rotate the last dimension of ``hidden_states`` by angle tables broadcastable to ``[..., D/2]``.

    By default the rotation runs in the dtype of ``hidden_states`` (tables are cast to it), as ViTok
    does; ``compute_dtype=torch.float32`` rotates in float32 and casts back (Flux / FlowMo). Every
    eager path gives the bits of the textbook ``(x1 cos - x2 sin, x1 sin + x2 cos)``: float32 / float64
    interleaved pairs as one complex multiply, other cases (and everything under ``torch.compile``,
    which fuses it) as ``x * cos' + swap(x) * sin'`` on contiguous full-width tables; both are far
    cheaper than rotating strided halves.
    """
    if layout not in ("interleaved", "half"):
        raise ValueError(f"unknown RoPE layout {layout!r}; expected 'interleaved' or 'half'")
    if compute_dtype is not None and compute_dtype != hidden_states.dtype:
        rotated = apply_rotary_embedding(hidden_states.to(compute_dtype), cos, sin, layout)
        return rotated.to(hidden_states.dtype)
    dtype = hidden_states.dtype
    if layout == "interleaved" and dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
        # eager only: inductor does not generate code for complex operators (it fuses the real form)
        pairs = hidden_states.unflatten(-1, (-1, 2))
        if pairs.storage_offset() % 2 or any(stride % 2 for stride in pairs.stride()[:-1]):
            pairs = pairs.contiguous()  # a complex view needs pair-aligned strides (views of q / k have them)
        rotation = torch.complex(cos.to(dtype), sin.to(dtype))
        return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2)
    cos, sin = cos.to(dtype), sin.to(dtype)
    if layout == "interleaved":
        cos_full = cos.repeat_interleave(2, dim=-1)
        sin_signed = torch.stack((-sin, sin), dim=-1).flatten(-2)
        swapped = hidden_states.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (x2, x1) per pair
    else:
        cos_full = torch.cat((cos, cos), dim=-1)
        sin_signed = torch.cat((-sin, sin), dim=-1)
        first, second = hidden_states.chunk(2, dim=-1)
        swapped = torch.cat((second, first), dim=-1)
    return hidden_states * cos_full + swapped * sin_signed


def init_mixed_rope_frequencies(
    head_dim: int, num_heads: int, theta: float = 10.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Initial RoPE-Mixed frequencies ``[2 (x, y), num_heads, head_dim / 2]`` (float32).

    Per head, ``head_dim / 4`` magnitudes ``theta ** (-4i / head_dim)`` are laid along a random
    direction ``a`` and along ``a + pi/2``: ``f_x = [m cos a, m cos(a + pi/2)]``, ``f_y = [m sin a,
    m sin(a + pi/2)]``.
    """
    if head_dim % 4:
        raise ValueError(f"mixed 2D RoPE needs a head dimension divisible by 4, got {head_dim}")
    magnitudes = 1.0 / theta ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim)
    angles = torch.rand(num_heads, 1, generator=generator) * 2 * math.pi
    freqs_x = torch.cat((magnitudes * torch.cos(angles), magnitudes * torch.cos(angles + math.pi / 2)), dim=-1)
    freqs_y = torch.cat((magnitudes * torch.sin(angles), magnitudes * torch.sin(angles + math.pi / 2)), dim=-1)
    return torch.stack((freqs_x, freqs_y), dim=0)


def mixed_rope_tables(
    frequencies: torch.Tensor, x_positions: torch.Tensor, y_positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[..., N, F]`` of angles ``x * f_x + y * f_y`` for ``frequencies [2, ..., F]``.

    Computed in float32 whatever the parameter dtype (the angles grow with the grid size).
    """
    freqs_x, freqs_y = frequencies.float().unsqueeze(-2).unbind(0)  # each [..., 1, F]
    angles = x_positions.float().unsqueeze(-1) * freqs_x + y_positions.float().unsqueeze(-1) * freqs_y
    return angles.cos(), angles.sin()


class LearnedMixedRope2D(nn.Module):
    """Learned per-layer, per-head 2D rotary frequencies (RoPE-Mixed).

    ``frequencies`` is ``[2, num_layers, num_heads, head_dim / 2]``. ``forward(rows, cols)`` returns one
    ``(cos, sin)`` pair per layer, each ``[1, num_heads, S, head_dim / 2]`` for a sequence of
    ``num_leading`` unrotated tokens, the ``rows x cols`` grid in raster order (x = column, y = row,
    integer positions), then ``num_trailing`` unrotated tokens; ``Attention`` takes them as they are.
    """

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, theta: float = 10.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"mixed 2D RoPE needs a head dimension divisible by 4, got {head_dim}")
        self.num_layers, self.num_heads, self.head_dim, self.theta = num_layers, num_heads, head_dim, theta
        self.frequencies = nn.Parameter(torch.zeros(2, num_layers, num_heads, head_dim // 2))

    def initial_frequencies(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh random initialisation (one random direction per layer and head)."""
        per_layer = [
            init_mixed_rope_frequencies(self.head_dim, self.num_heads, self.theta, generator)
            for _ in range(self.num_layers)
        ]
        return torch.stack(per_layer, dim=1)

    def grid_tables(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tables of the grid tokens only: ``[num_layers, num_heads, rows*cols, head_dim / 2]``."""
        device = self.frequencies.device
        y_positions, x_positions = torch.meshgrid(
            torch.arange(rows, device=device), torch.arange(cols, device=device), indexing="ij"
        )
        return mixed_rope_tables(self.frequencies, x_positions.flatten(), y_positions.flatten())

    def forward(
        self, rows: int, cols: int, num_leading: int = 0, num_trailing: int = 0
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cos, sin = self.grid_tables(rows, cols)
        if num_leading or num_trailing:
            layers, heads, _, half = cos.shape
            ones_before = cos.new_ones(layers, heads, num_leading, half)
            ones_after = cos.new_ones(layers, heads, num_trailing, half)
            cos = torch.cat((ones_before, cos, ones_after), dim=2)
            sin = torch.cat((torch.zeros_like(ones_before), sin, torch.zeros_like(ones_after)), dim=2)
        return [(cos[layer].unsqueeze(0), sin[layer].unsqueeze(0)) for layer in range(self.num_layers)]

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, num_heads={self.num_heads}, head_dim={self.head_dim}, theta={self.theta}"
        )
