"""diffusers' UniPC set up as ViTok-v2's ``FlowUniPCMultistepScheduler`` (the ViTok DiT's sampler)."""

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler


def vitok_flow_sigmas(num_inference_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> np.ndarray:
    """The sigma grid of the original ``FlowUniPCMultistepScheduler.set_timesteps`` (before its shift).

    It spans ``[sigma_max, sigma_min]`` of the shifted float32 training sigmas ``1 - linspace(1, 1/T, T)``
    (0.999 .. 0 unshifted), where diffusers' flow sigmas span ``[1, 1/T]``; passing this grid as
    ``UniPCMultistepScheduler.set_timesteps(sigmas=...)`` reproduces the original's timesteps and steps.
    """
    train = torch.from_numpy(1.0 - np.linspace(1, 1 / num_train_timesteps, num_train_timesteps)[::-1].copy()).float()
    train = shift * train / (1 + (shift - 1) * train)
    return np.linspace(train[0].item(), train[-1].item(), num_inference_steps + 1).copy()[:-1]


def vitok_unipc_scheduler(shift: float = 1.0) -> UniPCMultistepScheduler:
    """diffusers UniPC configured as the original FlowUniPC (flow sigmas, flow prediction, bh2, order 2)."""
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
