from .configuration_vitok import VITOK_PRESETS, ViTokConfig, parse_vitok_dit_variant, parse_vitok_variant
from .image_processing_vitok import ViTokImageProcessor
from .modeling_vitok import (
    ViTokDecoderOutput,
    ViTokEncoderOutput,
    ViTokModel,
    ViTokOutput,
)
from .modeling_vitok_dit import ViTokDiTTransformerModel

__all__ = [
    "VITOK_PRESETS",
    "ViTokConfig",
    "ViTokDecoderOutput",
    "ViTokEncoderOutput",
    "ViTokImageProcessor",
    "ViTokModel",
    "ViTokDiTTransformerModel",
    "ViTokOutput",
    "parse_vitok_dit_variant",
    "parse_vitok_variant",
]
