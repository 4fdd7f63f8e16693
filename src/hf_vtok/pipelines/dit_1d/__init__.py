from .pipeline_dit_1d import DiT1DPipeline
from .scheduling_gaussian_diffusion import GaussianDiffusionScheduler, space_timesteps

__all__ = ["DiT1DPipeline", "GaussianDiffusionScheduler", "space_timesteps"]
