from .pipeline_dit_1d import DiT1DPipeline

__all__ = ["DiT1DPipeline"]
