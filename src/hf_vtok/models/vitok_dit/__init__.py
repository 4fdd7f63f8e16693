from .configuration_vitok_dit import parse_vitok_dit_variant
from .convert_vitok_dit_original_to_hf import convert_vitok_dit_checkpoint
from .modeling_vitok_dit import ViTokDiTTransformerModel

__all__ = ["ViTokDiTTransformerModel", "convert_vitok_dit_checkpoint", "parse_vitok_dit_variant"]
