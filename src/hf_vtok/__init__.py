"""hf_vtok: recent visual tokenizers as HuggingFace-native models.

Importing the package registers every tokenizer with ``AutoConfig``, ``AutoModel`` and
``AutoImageProcessor``, so saved folders and Hub repositories load without ``trust_remote_code``.
It also imports every generator, scheduler and pipeline module: diffusers resolves the component
classes recorded in a pipeline's ``model_index.json`` only among imported modules.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .flow import SiTFlowScheduler
from .image_processing_utils import VisualTokenizerImageProcessor
from .modeling_outputs import VisualTokenizerDecoderOutput, VisualTokenizerEncoderOutput, VisualTokenizerOutput
from .modeling_utils import VisualTokenizerPreTrainedModel
from .models.dit_1d import DIT_PRESETS, DiTTransformer1DModel
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
from .models.latent_token_vit import LatentTokenEncoderOutput, LatentTokenImageProcessor, LatentTokenViTOutput
from .models.maetok import MAETOK_PRESETS, HOGFeatures, MAETokConfig, MAETokFeatureTargets, MAETokModel
from .models.sit import SIT_PRESETS, SiTTransformer1DModel
from .models.softvq import SOFTVQ_PRESETS, SoftVQConfig, SoftVQEncoderOutput, SoftVQModel
from .models.v2flow import (
    V2FLOW_PRESETS,
    V2FlowConfig,
    V2FlowDecoderOutput,
    V2FlowDecodeStep,
    V2FlowEncoderOutput,
    V2FlowImageProcessor,
    V2FlowModel,
    V2FlowOutput,
    V2FlowVocabulary,
)
from .models.vitok import (
    VITOK_PRESETS,
    ViTokConfig,
    ViTokDecoderOutput,
    ViTokDiTTransformerModel,
    ViTokEncoderOutput,
    ViTokImageProcessor,
    ViTokModel,
    ViTokOutput,
    parse_vitok_dit_variant,
    parse_vitok_variant,
)
from .pipelines import (
    DiT1DPipeline,
    GaussianDiffusionScheduler,
    SiTPipeline,
    V2FlowLlamaPipeline,
    V2FlowPipeline,
    ViTokDiTPipeline,
    vitok_flow_sigmas,
    vitok_unipc_scheduler,
)
from .pretrained import PRETRAINED, PretrainedCheckpoint, from_preset
from .utils.prepack import prepack_linear_weights, unpack_linear_weights

__version__ = "0.1.0"

_TOKENIZERS = [
    (ViTokConfig, ViTokModel, ViTokImageProcessor),
    (SoftVQConfig, SoftVQModel, LatentTokenImageProcessor),
    (MAETokConfig, MAETokModel, LatentTokenImageProcessor),
    (V2FlowConfig, V2FlowModel, V2FlowImageProcessor),
    (FlowMoConfig, FlowMoModel, FlowMoImageProcessor),
]

for _config, _model, _processor in _TOKENIZERS:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoImageProcessor.register(_config, image_processor_classes={"pil": _processor}, exist_ok=True)

__all__ = [
    "prepack_linear_weights",
    "unpack_linear_weights",
    "DIT_PRESETS",
    "DiT1DPipeline",
    "DiTTransformer1DModel",
    "GaussianDiffusionScheduler",
    "HOGFeatures",
    "LatentTokenEncoderOutput",
    "LatentTokenImageProcessor",
    "LatentTokenViTOutput",
    "MAETOK_PRESETS",
    "MAETokConfig",
    "MAETokFeatureTargets",
    "MAETokModel",
    "PRETRAINED",
    "PretrainedCheckpoint",
    "SIT_PRESETS",
    "SOFTVQ_PRESETS",
    "SiTFlowScheduler",
    "SiTPipeline",
    "SiTTransformer1DModel",
    "SoftVQConfig",
    "SoftVQEncoderOutput",
    "SoftVQModel",
    "V2FLOW_PRESETS",
    "V2FlowConfig",
    "V2FlowDecodeStep",
    "V2FlowDecoderOutput",
    "V2FlowEncoderOutput",
    "V2FlowImageProcessor",
    "V2FlowModel",
    "V2FlowOutput",
    "V2FlowLlamaPipeline",
    "V2FlowPipeline",
    "V2FlowVocabulary",
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
    "ViTokDiTPipeline",
    "ViTokDiTTransformerModel",
    "ViTokEncoderOutput",
    "ViTokImageProcessor",
    "ViTokModel",
    "ViTokOutput",
    "VisualTokenizerDecoderOutput",
    "VisualTokenizerEncoderOutput",
    "VisualTokenizerImageProcessor",
    "VisualTokenizerOutput",
    "VisualTokenizerPreTrainedModel",
    "from_preset",
    "parse_vitok_dit_variant",
    "parse_vitok_variant",
    "vitok_flow_sigmas",
    "vitok_unipc_scheduler",
]
