"""adaLN modulation helpers."""

import torch


def modulate(hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` (DiT / SiT / Flux convention); shift/scale broadcast over tokens."""
    return hidden_states * (1 + scale) + shift
