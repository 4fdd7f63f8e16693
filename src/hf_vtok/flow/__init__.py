"""Samplers and schedules of flow models, shared by the families."""

from .dpm_solver import flow_dpm_solver_sample, flow_dpm_solver_timesteps
from .guidance import classifier_free_guidance
from .ode import flow_ode_sample
from .schedules import discrete_flow_sigmas, shift_flow_time

__all__ = [
    "classifier_free_guidance",
    "discrete_flow_sigmas",
    "flow_dpm_solver_sample",
    "flow_dpm_solver_timesteps",
    "flow_ode_sample",
    "shift_flow_time",
]
