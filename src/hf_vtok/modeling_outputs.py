"""Output dataclasses shared by every hf_vtok tokenizer.

They are transformers ``ModelOutput``s (attribute, key and tuple access). Families subclass them
to add their extras (e.g. ViTok's patch layout, a quantizer's logits).
"""

from dataclasses import dataclass

import torch
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
    """Result of ``tokenizer(pixel_values)``: reconstruction, latents and, when asked, losses."""

    loss: torch.FloatTensor | None = None
    sample: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    image_tokens: torch.LongTensor | None = None
    losses: dict[str, torch.Tensor] | None = None
