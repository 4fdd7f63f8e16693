from .configuration_vitok import VITOK_PRESETS, ViTokConfig, parse_vitok_variant
from .image_processing_vitok import ViTokImageProcessor
from .modeling_vitok import (
    ViTokDecoderOutput,
    ViTokEncoderOutput,
    ViTokModel,
    ViTokOutput,
)

__all__ = [
    "VITOK_PRESETS",
    "ViTokConfig",
    "ViTokDecoderOutput",
    "ViTokEncoderOutput",
    "ViTokImageProcessor",
    "ViTokModel",
    "ViTokOutput",
    "parse_vitok_variant",
]
