"""Samplers and schedules of flow models, shared by the families."""

from .dpm_solver import flow_dpm_solver_sample, flow_dpm_solver_timesteps
from .ode import flow_ode_sample
from .schedules import discrete_flow_sigmas, shift_flow_time
from .scheduling_sit import SiTFlowScheduler, score_from_velocity

__all__ = [
    "SiTFlowScheduler",
    "discrete_flow_sigmas",
    "flow_dpm_solver_sample",
    "flow_dpm_solver_timesteps",
    "flow_ode_sample",
    "score_from_velocity",
    "shift_flow_time",
]
