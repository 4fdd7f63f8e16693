"""Generation pipelines (diffusers ``DiffusionPipeline``s) on hf_vtok tokenizers."""

from .dit_1d import DiT1DPipeline, GaussianDiffusionScheduler
from .pipeline_utils import TokenizerGenerationPipeline
from .sit import SiTPipeline
from .v2flow import V2FlowLlamaPipeline, V2FlowPipeline
from .vitok_dit import ViTokDiTPipeline, vitok_flow_sigmas, vitok_unipc_scheduler

__all__ = [
    "DiT1DPipeline",
    "GaussianDiffusionScheduler",
    "SiTPipeline",
    "TokenizerGenerationPipeline",
    "V2FlowLlamaPipeline",
    "V2FlowPipeline",
    "ViTokDiTPipeline",
    "vitok_flow_sigmas",
    "vitok_unipc_scheduler",
]
