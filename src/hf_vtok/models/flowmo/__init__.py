from .configuration_flowmo import FLOWMO_PRESETS, FlowMoConfig
from .image_processing_flowmo import FlowMoImageProcessor
from .modeling_flowmo import (
    FlowMoDecoderOutput,
    FlowMoEncoderOutput,
    FlowMoModel,
    FlowMoOutput,
    FlowMoVelocityOutput,
    flowmo_position_ids,
)
from .sampling_flowmo import flowmo_time_grid

__all__ = [
    "FLOWMO_PRESETS",
    "FlowMoConfig",
    "FlowMoDecoderOutput",
    "FlowMoEncoderOutput",
    "FlowMoImageProcessor",
    "FlowMoModel",
    "FlowMoOutput",
    "FlowMoVelocityOutput",
    "flowmo_position_ids",
    "flowmo_time_grid",
]
