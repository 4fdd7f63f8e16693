from .configuration_v2flow import V2FLOW_PRESETS, V2FlowConfig
from .image_processing_v2flow import V2FlowImageProcessor
from .modeling_v2flow import V2FlowEncoderOutput, V2FlowModel, V2FlowOutput
from .sampling_v2flow import V2FlowDecoderOutput, V2FlowDecodeStep

__all__ = [
    "V2FLOW_PRESETS",
    "V2FlowConfig",
    "V2FlowDecodeStep",
    "V2FlowDecoderOutput",
    "V2FlowEncoderOutput",
    "V2FlowImageProcessor",
    "V2FlowModel",
    "V2FlowOutput",
]
