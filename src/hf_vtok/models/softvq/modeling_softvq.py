"""SoftVQ-VAE (Chen et al., 2024): a 1D latent-token ViT autoencoder with soft vector quantization."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)
from transformers import initialization as init

from ...quantizers import SoftVectorQuantizer
from ..latent_token_vit.modeling_latent_token_vit import (
    LatentTokenEncoderOutput,
    LatentTokenViTDecoder,
    LatentTokenViTEncoder,
    LatentTokenViTOutput,
    LatentTokenViTPreTrainedModel,
)
from .configuration_softvq import SoftVQConfig


@dataclass
class SoftVQEncoderOutput(LatentTokenEncoderOutput):
    """``latents [B, L, C]``: the soft-quantized tokens (what decoders and generators use).
    ``unquantized_latents [B, L, C]``: the encoder projection before quantization.
    ``code_logits`` / ``code_probs`` ``[B, L, K]``: cosine logits and ``softmax(logits / tau)`` over the
    codebook of each token's segment. ``code_indices [B, L]``: the most probable codeword (diagnostic).
    ``cosine_similarity``: mean cosine between normalised unquantized and quantized tokens.
    ``entropy_loss``: weighted codebook entropy regulariser (training only)."""

    unquantized_latents: torch.FloatTensor | None = None
    code_logits: torch.FloatTensor | None = None
    code_probs: torch.FloatTensor | None = None
    code_indices: torch.LongTensor | None = None
    cosine_similarity: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None


class SoftVQModel(LatentTokenViTPreTrainedModel):
    r"""SoftVQ-VAE tokenizer: images in [-1, 1] -> ``num_latent_tokens`` soft-quantized latent tokens -> images.

    ```python
    >>> import hf_vtok
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> processor = AutoImageProcessor.from_pretrained("softvq-l-64")     # a converted folder
    >>> model = AutoModel.from_pretrained("softvq-l-64").eval()
    >>> pixel_values = processor(images, return_tensors="pt").pixel_values  # [B, 3, 256, 256]
    >>> encoded = model.encode(pixel_values)            # encoded.latents: [B, 64, 32]
    >>> images = model.decode(encoded.latents).sample   # [B, 3, 256, 256]
    >>> z = model.normalize_latents(encoded.latents)    # generator space: (z - shift) * scale
    ```
    """

    config: SoftVQConfig

    def __init__(self, config: SoftVQConfig):
        super().__init__(config)
        self.encoder = LatentTokenViTEncoder(config)
        self.quantizer = SoftVectorQuantizer(
            config.num_codebooks,
            config.codebook_size,
            config.latent_channels,
            temperature=config.temperature,
            l2_normalize=config.codebook_l2_norm,
            entropy_loss_ratio=config.entropy_loss_ratio,
        )
        self.decoder = LatentTokenViTDecoder.from_config(config)
        self.post_init()

    def _init_weights(self, module) -> None:
        super()._init_weights(module)
        if isinstance(module, SoftVectorQuantizer):
            init.copy_(module.codebook, module.initial_codebook())

    def encode(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> SoftVQEncoderOutput | tuple:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> soft-quantized latent tokens ``[B, L, C]`` (see
        ``SoftVQEncoderOutput``)."""
        pixel_values = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        unquantized, last_hidden_state, hidden_states = self._encoder_states(
            pixel_values, None, interpolate_pos_encoding, output_hidden_states
        )
        quantized = self.quantizer(unquantized)
        output = SoftVQEncoderOutput(
            latents=quantized.quantized,
            hidden_states=hidden_states,
            last_hidden_state=last_hidden_state,
            unquantized_latents=unquantized,
            code_logits=quantized.logits,
            code_probs=quantized.probs,
            code_indices=quantized.indices,
            cosine_similarity=quantized.cosine_similarity,
            entropy_loss=quantized.entropy_loss,
        )
        return output if return_dict else output.to_tuple()

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
    ) -> LatentTokenViTOutput | tuple:
        """Encode then decode at the input size. While training, ``losses`` holds the entropy regulariser
        (when ``entropy_loss_ratio > 0``); reconstruction / perceptual / GAN losses belong to the trainer.
        ``hidden_states`` / ``decoder_hidden_states``: the encoder's / decoder's states when asked."""
        output_hidden_states = self._output_hidden_states(output_hidden_states)
        encoded = self.encode(pixel_values, interpolate_pos_encoding, output_hidden_states)
        decoded = self._reconstruct(encoded.latents, pixel_values, interpolate_pos_encoding, output_hidden_states)
        losses = {"entropy": encoded.entropy_loss} if encoded.entropy_loss is not None else None
        return self._forward_output(encoded, decoded, losses, return_dict)
