"""diffusers pipelines composing hf_vtok tokenizers with other components."""

from .v2flow import V2FlowPipeline

__all__ = ["V2FlowPipeline"]
