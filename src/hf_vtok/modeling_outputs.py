"""Output dataclasses shared by every hf_vtok tokenizer.

They are transformers ``ModelOutput``s (attribute, key and tuple access). Families subclass them
to add their extras (e.g. ViTok's patch layout, a quantizer's logits).
"""

from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from transformers.utils import ModelOutput


@dataclass
class VisualTokenizerEncoderOutput(ModelOutput):
    """Result of ``tokenizer.encode``.

    Args:
        latents: what a generator consumes (continuous latents, or the quantized code of a
            discrete tokenizer), ``[B, N, C]`` for token sequences or ``[B, C, h, w]`` for grids.
        image_tokens: integer token ids (discrete tokenizers only).
        hidden_states: per-layer encoder states when ``output_hidden_states=True``.
    """

    latents: torch.FloatTensor | None = None
    image_tokens: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def latent(self) -> torch.FloatTensor | None:
        """diffusers' ``EncoderOutput.latent`` spelling of ``latents``."""
        return self.latents


@dataclass
class VisualTokenizerDecoderOutput(ModelOutput):
    """Result of ``tokenizer.decode``: ``sample`` is the decoded image (or patch sequence)."""

    sample: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class VisualTokenizerOutput(ModelOutput):
    """Result of ``tokenizer(pixel_values)``: reconstruction, latents and, when asked, losses.

    With ``output_hidden_states=True`` (or ``config.output_hidden_states``): ``hidden_states`` are the encoder's
    states (its embedding output, then one per block), ``decoder_hidden_states`` the decoder's where one decoder
    pass makes the reconstruction (a sampling decoder runs many; its family documents where its states are).
    """

    loss: torch.FloatTensor | None = None
    sample: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    image_tokens: torch.LongTensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None


class SequenceLatentDistribution:
    """A diffusers ``DiagonalGaussianDistribution`` over ``[B, C, N, 1]`` seen in the latents' ``[B, N, C]`` layout.

    ``sample(generator)`` draws the noise as the wrapped distribution does (so with the same generator it equals the
    tokenizer's own posterior sample), ``mode()`` is the mean; ``kl()`` / ``nll()`` are the wrapped ones (per sample).
    """

    def __init__(self, distribution: DiagonalGaussianDistribution):
        self.distribution = distribution

    @classmethod
    def point_mass(cls, latents: torch.Tensor) -> "SequenceLatentDistribution":
        """The distribution of a deterministic code ``[B, N, C]``: ``sample()`` and ``mode()`` are ``latents``."""
        moments = torch.cat([latents, torch.zeros_like(latents)], dim=-1).movedim(-1, 1).unsqueeze(-1)
        return cls(DiagonalGaussianDistribution(moments, deterministic=True))

    def __eq__(self, other) -> bool:
        """Equal parameters (bit for bit) and determinism: what makes two encodings' posteriors the same."""
        if not isinstance(other, SequenceLatentDistribution):
            return NotImplemented
        mine, theirs = self.distribution, other.distribution
        return mine.deterministic == theirs.deterministic and torch.equal(mine.parameters, theirs.parameters)

    @staticmethod
    def _tokens(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.squeeze(-1).movedim(1, -1)

    def sample(self, generator: torch.Generator | None = None) -> torch.FloatTensor:
        return self._tokens(self.distribution.sample(generator))

    def mode(self) -> torch.FloatTensor:
        return self._tokens(self.distribution.mode())

    @property
    def mean(self) -> torch.FloatTensor:
        return self._tokens(self.distribution.mean)

    @property
    def std(self) -> torch.FloatTensor:
        return self._tokens(self.distribution.std)

    @property
    def var(self) -> torch.FloatTensor:
        return self._tokens(self.distribution.var)

    @property
    def logvar(self) -> torch.FloatTensor:
        return self._tokens(self.distribution.logvar)

    def kl(self, other: "SequenceLatentDistribution | None" = None) -> torch.FloatTensor:
        return self.distribution.kl(None if other is None else other.distribution)

    def nll(self, sample: torch.Tensor, dims=(1, 2, 3)) -> torch.FloatTensor:
        """Negative log-likelihood of ``sample [B, N, C]``."""
        return self.distribution.nll(sample.movedim(-1, 1).unsqueeze(-1), dims=dims)
