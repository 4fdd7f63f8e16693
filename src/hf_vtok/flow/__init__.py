"""Samplers, schedules, training paths and losses of flow models, shared by the families."""

from .dpm_solver import flow_dpm_solver_sample, flow_dpm_solver_timesteps
from .guidance import classifier_free_guidance
from .matching import FLOW_PATHS, condot_path, flow_matching_loss_per_row, linear_flow_schedule
from .ode import flow_ode_sample
from .schedules import discrete_flow_sigmas, shift_flow_time

__all__ = [
    "FLOW_PATHS",
    "classifier_free_guidance",
    "condot_path",
    "discrete_flow_sigmas",
    "flow_dpm_solver_sample",
    "flow_dpm_solver_timesteps",
    "flow_matching_loss_per_row",
    "flow_ode_sample",
    "linear_flow_schedule",
    "shift_flow_time",
]
