from .pipeline_vitok_dit import ViTokDiTPipeline, vitok_flow_sigmas, vitok_unipc_scheduler

__all__ = ["ViTokDiTPipeline", "vitok_flow_sigmas", "vitok_unipc_scheduler"]
