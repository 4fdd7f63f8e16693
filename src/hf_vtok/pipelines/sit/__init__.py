from .pipeline_sit import SiTPipeline

__all__ = ["SiTPipeline"]
