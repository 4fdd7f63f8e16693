from .pipeline_vitok_dit import ViTokDiTPipeline

__all__ = ["ViTokDiTPipeline"]
