"""Time schedules of rectified-flow models."""

import numpy as np


def shift_flow_time(t, shift: float):
    """SD3 / Sana time shift ``shift * t / (1 + (shift - 1) * t)`` (tensors, arrays or floats)."""
    return shift * t / (1 + (shift - 1) * t)


def discrete_flow_sigmas(num_train_timesteps: int = 1000, shift: float = 1.0) -> np.ndarray:
    """Noise levels of a discrete-time rectified flow trained on ``num_train_timesteps`` indices (float64).

    Index ``i`` has the unshifted level ``1 - beta_i`` with ``beta = linspace(1, 1/num_train_timesteps,
    num_train_timesteps)`` (Sana's ``linear_flow`` schedule, i.e. ``i / num_train_timesteps``), then
    ``shift_flow_time``; ``x_i = (1 - sigma_i) x0 + sigma_i noise``.
    """
    scale = 1000 / num_train_timesteps
    betas = np.linspace(scale * 1.0, scale * 0.001, num_train_timesteps, dtype=np.float64)
    return shift_flow_time(1.0 - betas, shift)
