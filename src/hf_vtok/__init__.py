"""hf_vtok: recent visual tokenizers as HuggingFace-native models.

Importing the package registers every tokenizer with ``AutoConfig``, ``AutoModel`` and
``AutoImageProcessor``, so saved folders and Hub repositories load without ``trust_remote_code``.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .image_processing_utils import VisualTokenizerImageProcessor
from .modeling_outputs import VisualTokenizerDecoderOutput, VisualTokenizerEncoderOutput, VisualTokenizerOutput
from .modeling_utils import VisualTokenizerPreTrainedModel
from .models.flowmo import (
    FLOWMO_PRESETS,
    FlowMoConfig,
    FlowMoDecoderOutput,
    FlowMoEncoderOutput,
    FlowMoImageProcessor,
    FlowMoModel,
    FlowMoOutput,
    FlowMoVelocityOutput,
)
from .models.vitok import (
    VITOK_PRESETS,
    ViTokConfig,
    ViTokDecoderOutput,
    ViTokEncoderOutput,
    ViTokImageProcessor,
    ViTokModel,
    ViTokOutput,
    parse_vitok_variant,
)

__version__ = "0.1.0"

_TOKENIZERS = [
    (ViTokConfig, ViTokModel, ViTokImageProcessor),
    (FlowMoConfig, FlowMoModel, FlowMoImageProcessor),
]

for _config, _model, _processor in _TOKENIZERS:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoImageProcessor.register(_config, image_processor_classes={"pil": _processor}, exist_ok=True)

__all__ = [
    "FLOWMO_PRESETS",
    "FlowMoConfig",
    "FlowMoDecoderOutput",
    "FlowMoEncoderOutput",
    "FlowMoImageProcessor",
    "FlowMoModel",
    "FlowMoOutput",
    "FlowMoVelocityOutput",
    "VITOK_PRESETS",
    "ViTokConfig",
    "ViTokDecoderOutput",
    "ViTokEncoderOutput",
    "ViTokImageProcessor",
    "ViTokModel",
    "ViTokOutput",
    "VisualTokenizerDecoderOutput",
    "VisualTokenizerEncoderOutput",
    "VisualTokenizerImageProcessor",
    "VisualTokenizerOutput",
    "VisualTokenizerPreTrainedModel",
    "parse_vitok_variant",
]
