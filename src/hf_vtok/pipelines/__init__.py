"""Generation pipelines (diffusers ``DiffusionPipeline``s) on hf_vtok tokenizers."""

from .dit_1d import DiT1DPipeline
from .pipeline_utils import TokenizerGenerationPipeline
from .sit import SiTPipeline
from .v2flow import V2FlowLlamaPipeline, V2FlowPipeline, V2FlowVocabulary
from .vitok_dit import ViTokDiTPipeline

__all__ = [
    "DiT1DPipeline",
    "SiTPipeline",
    "TokenizerGenerationPipeline",
    "V2FlowLlamaPipeline",
    "V2FlowPipeline",
    "V2FlowVocabulary",
    "ViTokDiTPipeline",
]
