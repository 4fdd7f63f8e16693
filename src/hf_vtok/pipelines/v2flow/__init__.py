from .pipeline_v2flow import V2FlowPipeline

__all__ = ["V2FlowPipeline"]
