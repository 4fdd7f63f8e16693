"""Soft vector quantization (SoftVQ-VAE, Chen et al. 2024).

Each latent token is replaced by a convex combination of codewords: ``z_q = softmax(<z, e> / tau) @ e``.
With several codebooks the token *sequence* is cut into ``num_codebooks`` contiguous segments and
segment ``c`` uses codebook ``c`` (not channel groups). With ``l2_normalize`` tokens and codewords are
unit vectors, so the logits are cosine similarities; ``z_q`` is not re-normalised. The logits use the
codebook detached from the graph (codewords learn only through ``z_q``), as in the original.
There is no straight-through estimator and no noise: the quantizer is deterministic and
differentiable, and generators model ``z_q`` directly (the argmax indices are diagnostics).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class SoftVectorQuantizerOutput(ModelOutput):
    """``quantized [B, L, C]``; ``logits`` / ``probs`` ``[B, L, K]`` (over the codebook of each token's
    segment); ``indices [B, L]`` (argmax codeword); ``cosine_similarity``: mean cosine between the
    (normalised) input tokens and ``quantized``; ``entropy_loss``: weighted entropy regulariser
    (training only, else ``None``)."""

    quantized: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    probs: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    cosine_similarity: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None


def codebook_entropy_loss(logits: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """``mean_i H(p_i) - H(mean_i p_i)`` of ``p = softmax(logits / temperature)`` over all rows.

    Low per-token entropy (confident assignments) and high entropy of the average assignment
    (all codewords used), as in MaskGIT / MAGVIT's entropy penalty.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float() / temperature
    probs = F.softmax(flat, dim=-1)
    sample_entropy = -(probs * F.log_softmax(flat, dim=-1)).sum(dim=-1).mean()
    mean_probs = probs.mean(dim=0)
    average_entropy = -(mean_probs * torch.log(mean_probs + 1e-6)).sum()
    return sample_entropy - average_entropy


class SoftVectorQuantizer(nn.Module):
    """Soft VQ over ``num_codebooks`` codebooks of ``codebook_size`` codewords of ``dim`` channels.

    ``codebook`` is ``[num_codebooks, codebook_size, dim]``; ``temperature`` is the softmax ``tau``.
    """

    def __init__(
        self,
        num_codebooks: int,
        codebook_size: int,
        dim: int,
        temperature: float = 0.07,
        l2_normalize: bool = True,
        entropy_loss_ratio: float = 0.0,
        entropy_temperature: float = 0.01,
    ):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the soft-VQ temperature must be positive, got {temperature}")
        self.num_codebooks, self.codebook_size, self.dim = num_codebooks, codebook_size, dim
        self.temperature = temperature
        self.l2_normalize = l2_normalize
        self.entropy_loss_ratio = entropy_loss_ratio
        self.entropy_temperature = entropy_temperature
        self.codebook = nn.Parameter(torch.zeros(num_codebooks, codebook_size, dim))

    def initial_codebook(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """U(-1/K, 1/K), unit-normalised when ``l2_normalize`` (the original initialisation)."""
        codebook = (torch.rand(self.codebook.shape, generator=generator) * 2 - 1) / self.codebook_size
        return F.normalize(codebook, dim=-1) if self.l2_normalize else codebook

    def normalized_codebook(self) -> torch.Tensor:
        """The codewords the quantizer mixes: unit-normalised when ``l2_normalize``."""
        return F.normalize(self.codebook, dim=-1) if self.l2_normalize else self.codebook

    def forward(self, latents: torch.Tensor) -> SoftVectorQuantizerOutput:
        if latents.dim() != 3 or latents.shape[-1] != self.dim:
            raise ValueError(f"soft VQ expects latents [B, L, {self.dim}], got shape {tuple(latents.shape)}")
        batch, length, dim = latents.shape
        if length % self.num_codebooks:
            raise ValueError(
                f"{length} latent tokens cannot be split into {self.num_codebooks} equal codebook segments"
            )
        segment = length // self.num_codebooks
        codebook = self.normalized_codebook()
        tokens = F.normalize(latents, dim=-1) if self.l2_normalize else latents
        # [num_codebooks, B * segment, dim]: row order of the original (codebook, batch, position)
        per_codebook = (
            tokens.view(batch, self.num_codebooks, segment, dim)
            .transpose(0, 1)
            .reshape(self.num_codebooks, batch * segment, dim)
        )
        logits = torch.bmm(per_codebook, codebook.detach().transpose(1, 2))
        probs = F.softmax(logits / self.temperature, dim=-1)
        quantized = torch.bmm(probs, codebook)

        def to_sequence(values: torch.Tensor) -> torch.Tensor:  # [n_cb, B * seg, X] -> [B, L, X]
            channels = values.shape[-1]  # not -1: an empty batch leaves it undetermined
            return (
                values.view(self.num_codebooks, batch, segment, channels)
                .transpose(0, 1)
                .reshape(batch, length, channels)
            )

        quantized, logits, probs = to_sequence(quantized), to_sequence(logits), to_sequence(probs)
        with torch.no_grad():
            cosine = F.cosine_similarity(tokens.reshape(-1, dim), quantized.reshape(-1, dim), dim=-1).mean()
        entropy_loss = None
        if self.training and self.entropy_loss_ratio > 0:
            entropy_loss = self.entropy_loss_ratio * codebook_entropy_loss(logits, self.entropy_temperature)
        return SoftVectorQuantizerOutput(
            quantized=quantized,
            logits=logits,
            probs=probs,
            indices=probs.argmax(dim=-1),
            cosine_similarity=cosine,
            entropy_loss=entropy_loss,
        )

    def extra_repr(self) -> str:
        return (
            f"num_codebooks={self.num_codebooks}, codebook_size={self.codebook_size}, dim={self.dim}, "
            f"temperature={self.temperature}, l2_normalize={self.l2_normalize}"
        )
