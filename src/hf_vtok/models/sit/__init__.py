from .convert_sit_original_to_hf import SIT_PRESETS, convert_sit_checkpoint
from .modeling_sit import SiTTransformer1DModel

__all__ = ["SIT_PRESETS", "SiTTransformer1DModel", "convert_sit_checkpoint"]
