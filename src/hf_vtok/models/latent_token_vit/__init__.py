from .configuration_latent_token_vit import LatentTokenViTConfig
from .image_processing_latent_token_vit import LatentTokenImageProcessor
from .modeling_latent_token_vit import (
    LatentTokenEncoderOutput,
    LatentTokenViTDecoder,
    LatentTokenViTEncoder,
    LatentTokenViTOutput,
    LatentTokenViTPreTrainedModel,
)

__all__ = [
    "LatentTokenEncoderOutput",
    "LatentTokenImageProcessor",
    "LatentTokenViTConfig",
    "LatentTokenViTDecoder",
    "LatentTokenViTEncoder",
    "LatentTokenViTOutput",
    "LatentTokenViTPreTrainedModel",
]
