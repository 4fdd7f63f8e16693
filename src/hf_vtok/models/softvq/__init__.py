from .configuration_softvq import SOFTVQ_PRESETS, SoftVQConfig
from .modeling_softvq import SoftVQEncoderOutput, SoftVQModel

__all__ = ["SOFTVQ_PRESETS", "SoftVQConfig", "SoftVQEncoderOutput", "SoftVQModel"]
