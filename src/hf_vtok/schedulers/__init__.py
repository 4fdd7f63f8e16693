"""Schedulers of the hf_vtok pipelines where diffusers has none that matches the original sampler."""

from .scheduling_gaussian_diffusion import GaussianDiffusionScheduler, space_timesteps
from .scheduling_sit_flow import SiTFlowScheduler, SiTFlowSchedulerOutput, path_coefficients, score_from_velocity
from .scheduling_vitok_flow_unipc import vitok_flow_sigmas, vitok_unipc_scheduler

__all__ = [
    "GaussianDiffusionScheduler",
    "SiTFlowScheduler",
    "SiTFlowSchedulerOutput",
    "path_coefficients",
    "score_from_velocity",
    "space_timesteps",
    "vitok_flow_sigmas",
    "vitok_unipc_scheduler",
]
