"""Rotary position embeddings over any number of position axes.

Tables are built from raw (integer) positions: each axis ``a`` of width ``axes_dims[a]`` gets
``axes_dims[a] / 2`` frequencies ``theta ** (-2i / axes_dims[a])``; the per-axis angle tables are
concatenated, so a 2D table for head_dim ``D`` with ``axes_dims=(D/2, D/2)`` is ``[rows | cols]``.
Two rotation layouts exist in the wild and both are supported:

* ``"interleaved"``: pairs ``(x[2i], x[2i+1])`` (ViTok, Flux/FlowMo, timm mixed RoPE);
* ``"half"``: pairs ``(x[i], x[i + D/2])`` (LLaMA's ``rotate_half``).
"""

from collections.abc import Sequence

import torch


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
    does; ``compute_dtype=torch.float32`` rotates in float32 and casts back (Flux / FlowMo).
    """
    if compute_dtype is not None and compute_dtype != hidden_states.dtype:
        rotated = apply_rotary_embedding(hidden_states.to(compute_dtype), cos, sin, layout)
        return rotated.to(hidden_states.dtype)
    cos = cos.to(hidden_states.dtype)
    sin = sin.to(hidden_states.dtype)
    if layout == "interleaved":
        pairs = hidden_states.unflatten(-1, (-1, 2))
        real, imag = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
        return rotated.flatten(-2)
    if layout == "half":
        real, imag = hidden_states.chunk(2, dim=-1)
        return torch.cat((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    raise ValueError(f"unknown RoPE layout {layout!r}; expected 'interleaved' or 'half'")
