from .convert_dit_1d_original_to_hf import DIT_PRESETS, convert_dit_checkpoint
from .modeling_dit_1d import DiTTransformer1DModel

__all__ = ["DIT_PRESETS", "DiTTransformer1DModel", "convert_dit_checkpoint"]
