"""SoftVQ-VAE configuration."""

from huggingface_hub.dataclasses import strict

from ...utils.validation import check_finite, check_positive
from ..latent_token_vit.configuration_latent_token_vit import (
    LatentTokenViTConfig,
    ReleasedTokenizer,
    released_tokenizers,
)

# The released checkpoints (entries of hf_vtok.pretrained): preset name -> original Hub repository and sizes.
SOFTVQ_PRESETS: dict[str, ReleasedTokenizer] = released_tokenizers("softvq")


@strict
class SoftVQConfig(LatentTokenViTConfig):
    r"""Configuration of a SoftVQ-VAE tokenizer (``SoftVQModel``).

    Everything of ``LatentTokenViTConfig`` (defaults: absolute position embeddings, decoder class token,
    LayerScale blocks, as all released SoftVQ models), plus the soft quantizer:

    Args:
        codebook_size: codewords per codebook (8192 in the releases).
        num_codebooks: the latent sequence is cut into this many contiguous segments, one codebook each;
            ``num_latent_tokens`` must be a multiple of it.
        temperature: softmax temperature ``tau`` of the code assignment (0.07 in the releases).
        codebook_l2_norm: unit-normalise tokens and codewords (cosine logits).
        entropy_loss_ratio: weight of the codebook entropy regulariser returned while training (0 disables).
        scaling_factor / shift_factor: ``1 / vq_std`` and ``vq_mean`` of the release (see the base class).
    """

    model_type = "softvq"

    num_latent_tokens: int = 64
    latent_channels: int = 32
    codebook_size: int = 8192
    num_codebooks: int = 4
    temperature: float | int = 0.07
    codebook_l2_norm: bool = True
    entropy_loss_ratio: float | int = 0.0

    def __post_init__(self, **kwargs):
        check_positive(self, "codebook_size", "num_codebooks", "temperature")
        check_finite(self, "entropy_loss_ratio")
        if self.num_latent_tokens % self.num_codebooks:
            raise ValueError(
                f"num_latent_tokens={self.num_latent_tokens} must be a multiple of num_codebooks={self.num_codebooks} "
                "(each codebook quantizes one contiguous segment of the latent sequence)"
            )
        super().__post_init__(**kwargs)
