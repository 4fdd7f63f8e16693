"""hf_vtok: recent visual tokenizers as HuggingFace-native models.

Importing the package registers every tokenizer with ``AutoConfig``, ``AutoModel`` and
``AutoImageProcessor``, so saved folders and Hub repositories load without ``trust_remote_code``.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .image_processing_utils import VisualTokenizerImageProcessor
from .modeling_outputs import VisualTokenizerDecoderOutput, VisualTokenizerEncoderOutput, VisualTokenizerOutput
from .modeling_utils import VisualTokenizerPreTrainedModel
from .models.v2flow import (
    V2FLOW_PRESETS,
    V2FlowConfig,
    V2FlowDecoderOutput,
    V2FlowDecodeStep,
    V2FlowEncoderOutput,
    V2FlowImageProcessor,
    V2FlowModel,
    V2FlowOutput,
)
from .pipelines import V2FlowPipeline
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
    (V2FlowConfig, V2FlowModel, V2FlowImageProcessor),
]

for _config, _model, _processor in _TOKENIZERS:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoImageProcessor.register(_config, image_processor_classes={"pil": _processor}, exist_ok=True)

__all__ = [
    "V2FLOW_PRESETS",
    "V2FlowConfig",
    "V2FlowDecodeStep",
    "V2FlowDecoderOutput",
    "V2FlowEncoderOutput",
    "V2FlowImageProcessor",
    "V2FlowModel",
    "V2FlowOutput",
    "V2FlowPipeline",
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
