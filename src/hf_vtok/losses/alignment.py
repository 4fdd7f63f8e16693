"""REPA-style representation alignment of latent tokens with a frozen vision encoder (SoftVQ-VAE's REPA loss)."""

import torch
import torch.nn.functional as F
from torch import nn


class RepaProjector(nn.Module):
    """MLP ``latent_channels -> hidden -> hidden -> feature_dim`` (SiLU) applied to each latent token."""

    def __init__(self, latent_channels: int, feature_dim: int, hidden_size: int = 1024):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(latent_channels, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, feature_dim),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.mlp(latents)


def repa_loss(projected: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Negative cosine similarity between projected latent tokens ``[B, L, D]`` and teacher patch features
    ``[B, N, D]``; with ``L < N`` each token is repeated ``N / L`` times ("repeat" alignment)."""
    length, patches = projected.shape[1], features.shape[1]
    if projected.shape[0] != features.shape[0] or projected.shape[-1] != features.shape[-1]:
        raise ValueError(
            f"REPA needs [B, L, D] and [B, N, D], got {tuple(projected.shape)} and {tuple(features.shape)}"
        )
    if patches % length:
        raise ValueError(f"{patches} teacher patches cannot be split evenly among {length} latent tokens")
    projected = projected.repeat_interleave(patches // length, dim=1)
    return -F.cosine_similarity(projected.float(), features.float(), dim=-1).mean()


__all__ = ["RepaProjector", "repa_loss"]
