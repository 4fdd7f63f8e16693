"""Fixed positional embeddings."""

import math

import torch


def sincos_1d_interleaved(length: int, dim: int) -> torch.Tensor:
    """``[length, dim]`` float32 table: ``pe[:, 0::2] = sin(pos * w)``, ``pe[:, 1::2] = cos(pos * w)``.

    ``w = exp(-ln(10000) * arange(0, dim, 2) / dim)``: the transformer-paper encoding, channels
    interleaved (not the MAE ``[sin | cos]`` halves). Used by SiT / DiT on 1D latent tokens.
    """
    if dim % 2:
        raise ValueError(f"a sin-cos positional embedding needs an even dimension, got {dim}")
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequencies)
    table[:, 1::2] = torch.cos(position * frequencies)
    return table
