"""adaLN modulation helpers."""

import torch


def modulate(
    hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, scale_offset: float = 1.0
) -> torch.Tensor:
    """``x * (scale_offset + scale) + shift``; shift/scale broadcast over tokens.

    The default ``scale_offset=1`` is the DiT / SiT / Flux convention ``x * (1 + scale) + shift``;
    MAETok's latent-modulated decoder uses ``scale_offset=0`` (``x * scale + shift``).
    """
    return hidden_states * (scale_offset + scale) + shift
