"""Diagonal-Gaussian (KL) bottleneck on top of diffusers' ``DiagonalGaussianDistribution``.

The encoder predicts ``2C`` channels per position: ``C`` means then ``C`` log-variances
(clamped to [-30, 20]). The bottleneck samples ``mean + exp(logvar / 2) * eps`` (or returns the
mean) and gives the KL divergence to N(0, I), summed over everything but the batch.
"""

from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class DiagonalGaussianOutput(ModelOutput):
    """``latents``: the sample (or the mean), ``[..]`` like the input with ``C`` instead of ``2C`` channels.

    ``mean`` / ``logvar`` in the same layout; ``kl``: per-sample KL to N(0, I) ``[B]`` (when asked);
    ``latent_dist``: the diffusers distribution, channels moved to dim 1 and flattened to ``[B, C, N, 1]``.
    """

    latents: torch.FloatTensor | None = None
    mean: torch.FloatTensor | None = None
    logvar: torch.FloatTensor | None = None
    kl: torch.FloatTensor | None = None
    latent_dist: DiagonalGaussianDistribution | None = None


class DiagonalGaussianBottleneck(nn.Module):
    r"""Gaussian posterior from ``2C`` moment channels at ``channel_dim``; no parameters.

    Noise is drawn (``generator`` or an explicit ``noise`` tensor) in the channel-major layout
    ``[B, C, *rest]``, which is how FlowMo (``b t f -> b (f t)``) and the LDM VAEs order it, so a
    seeded run reproduces theirs.
    """

    def __init__(self, channel_dim: int = 1):
        super().__init__()
        self.channel_dim = channel_dim

    def distribution(self, moments: torch.Tensor) -> DiagonalGaussianDistribution:
        """``moments`` (``2C`` channels at ``channel_dim``) -> diffusers distribution over ``[B, C, N, 1]``."""
        if moments.dim() < 2:
            raise ValueError(f"moments need a batch and a channel dimension, got shape {tuple(moments.shape)}")
        channels = moments.shape[self.channel_dim]
        if channels % 2:
            raise ValueError(
                f"moments of shape {tuple(moments.shape)} have {channels} channels at dim {self.channel_dim}; "
                "a Gaussian bottleneck needs an even number (means then log-variances)"
            )
        flat = moments.movedim(self.channel_dim, 1).flatten(2).unsqueeze(-1)
        return DiagonalGaussianDistribution(flat)

    def _to_input_layout(self, tensor: torch.Tensor, moments: torch.Tensor) -> torch.Tensor:
        channel_dim = self.channel_dim % moments.dim()
        moved_shape = list(moments.movedim(channel_dim, 1).shape)
        moved_shape[1] //= 2
        return tensor.squeeze(-1).reshape(moved_shape).movedim(1, channel_dim)

    def forward(
        self,
        moments: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        return_kl: bool = False,
    ) -> DiagonalGaussianOutput:
        """Sample (``sample=True``) or take the mean of the posterior given by ``moments``.

        ``noise`` (same shape as the latents) replaces the random draw; ``return_kl`` adds the
        per-sample KL ``0.5 * sum(mean^2 + var - 1 - logvar)``.
        """
        dist = self.distribution(moments)
        mean = self._to_input_layout(dist.mean, moments)
        if sample:
            if noise is None:
                flat_noise = randn_tensor(
                    dist.mean.shape, generator=generator, device=moments.device, dtype=moments.dtype
                )
            else:
                if tuple(noise.shape) != tuple(mean.shape):
                    raise ValueError(
                        f"noise has shape {tuple(noise.shape)}, expected the latent shape {tuple(mean.shape)}"
                    )
                flat_noise = noise.to(moments).movedim(self.channel_dim, 1).flatten(2).unsqueeze(-1)
            latents = self._to_input_layout(dist.mean + dist.std * flat_noise, moments)
        else:
            latents = mean
        return DiagonalGaussianOutput(
            latents=latents,
            mean=mean,
            logvar=self._to_input_layout(dist.logvar, moments),
            kl=dist.kl() if return_kl else None,
            latent_dist=dist,
        )
