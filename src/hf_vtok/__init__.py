"""hf_vtok: recent visual tokenizers as HuggingFace-native models.

Importing the package registers every tokenizer family of ``hf_vtok.registry`` with ``AutoConfig``,
``AutoModel`` and ``AutoImageProcessor``, so saved folders and Hub repositories load without
``trust_remote_code``. It also imports every generator, scheduler and pipeline: diffusers resolves the
component classes recorded in a pipeline's ``model_index.json`` among the names of this package.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

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
from .models.vitok_dit import ViTokDiTTransformerModel, parse_vitok_dit_variant
from .pipelines import (
    DiT1DPipeline,
    SiTPipeline,
    V2FlowLlamaPipeline,
    V2FlowPipeline,
    V2FlowVocabulary,
    ViTokDiTPipeline,
)
from .registry import PRETRAINED, TOKENIZER, PretrainedCheckpoint, families
from .schedulers import GaussianDiffusionScheduler, SiTFlowScheduler, vitok_flow_sigmas, vitok_unipc_scheduler
from .utils.imports import import_object
from .utils.prepack import prepack_linear_weights, unpack_linear_weights

__version__ = "0.1.0"


def _register_tokenizers() -> None:
    """``AutoConfig`` / ``AutoModel`` / ``AutoImageProcessor`` entries of every tokenizer family in the registry."""
    for spec in families(TOKENIZER):
        config, model, processor = (import_object(ref) for ref in (spec.config, spec.model, spec.processor))
        AutoConfig.register(config.model_type, config, exist_ok=True)
        AutoModel.register(config, model, exist_ok=True)
        AutoImageProcessor.register(config, image_processor_classes={"pil": processor}, exist_ok=True)


_register_tokenizers()


def from_preset(name: str, **kwargs):
    """A released original checkpoint as an hf_vtok model (downloaded, cached, converted); see
    ``hf_vtok.hub.presets.from_preset`` for the options."""
    from .hub.presets import from_preset as load_preset  # the application layer, reached on call only

    return load_preset(name, **kwargs)


__all__ = [
    "DIT_PRESETS",
    "FLOWMO_PRESETS",
    "MAETOK_PRESETS",
    "PRETRAINED",
    "SIT_PRESETS",
    "SOFTVQ_PRESETS",
    "V2FLOW_PRESETS",
    "VITOK_PRESETS",
    "DiT1DPipeline",
    "DiTTransformer1DModel",
    "FlowMoConfig",
    "FlowMoDecoderOutput",
    "FlowMoEncoderOutput",
    "FlowMoImageProcessor",
    "FlowMoModel",
    "FlowMoOutput",
    "FlowMoVelocityOutput",
    "GaussianDiffusionScheduler",
    "HOGFeatures",
    "LatentTokenEncoderOutput",
    "LatentTokenImageProcessor",
    "LatentTokenViTOutput",
    "MAETokConfig",
    "MAETokFeatureTargets",
    "MAETokModel",
    "PretrainedCheckpoint",
    "SiTFlowScheduler",
    "SiTPipeline",
    "SiTTransformer1DModel",
    "SoftVQConfig",
    "SoftVQEncoderOutput",
    "SoftVQModel",
    "V2FlowConfig",
    "V2FlowDecodeStep",
    "V2FlowDecoderOutput",
    "V2FlowEncoderOutput",
    "V2FlowImageProcessor",
    "V2FlowLlamaPipeline",
    "V2FlowModel",
    "V2FlowOutput",
    "V2FlowPipeline",
    "V2FlowVocabulary",
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
    "prepack_linear_weights",
    "unpack_linear_weights",
    "vitok_flow_sigmas",
    "vitok_unipc_scheduler",
]
