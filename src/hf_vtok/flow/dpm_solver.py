"""Multistep DPM-Solver++ (2M) for rectified-flow models, as Sana / PixArt's ``DPMS(model_type="flow")`` runs it.

Convention: ``x_t = (1 - t) x0 + t noise`` with ``t`` from 1 (noise) to 0 (data), and the model
predicts the velocity ``v = noise - x0`` (diffusers' flow convention). The solver works on the data
prediction ``x0 = (x_t - t eps) / (1 - t)`` with ``eps = (1 - t) v + x_t``; classifier-free
guidance mixes ``eps`` of the conditional and unconditional calls. Every operation follows the
reference order, so results match it to float rounding (diffusers' ``DPMSolverMultistepScheduler``
with flow sigmas gives the same grid but feeds integer timesteps to the model).
"""

from collections.abc import Callable

import torch

from .guidance import classifier_free_guidance
from .schedules import shift_flow_time

FlowModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def flow_dpm_solver_timesteps(
    num_steps: int, shift: float = 1.0, t_start: float = 1.0, t_end: float = 1e-3, device=None
) -> torch.Tensor:
    """``num_steps + 1`` times from ``shift``-ed ``1 - t_end`` down to 0 (``time_uniform_flow`` spacing).

    Uniform in the unshifted time ``s``, then mapped by ``shift * s / (1 + (shift - 1) * s)``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    unshifted = 1.0 - torch.linspace(t_start, t_end, num_steps + 1, device=device)
    return shift_flow_time(unshifted, shift).flip(dims=[0])


def _log_snr(t: torch.Tensor) -> torch.Tensor:
    """Half log-SNR ``log(1 - t) - log(t)`` of the flow schedule (alpha = 1 - t, sigma = t)."""
    return torch.log(1 - t) - torch.log(t)


def _first_order_update(x, t_prev, t, data_prev):
    step = _log_snr(t) - _log_snr(t_prev)
    alpha_t = torch.exp(torch.log(1 - t))  # not (1 - t): the reference's rounding, bit for bit
    phi = torch.expm1(-step)
    return t / t_prev * x - alpha_t * phi * data_prev


def _second_order_update(x, t_prev2, t_prev, t, data_prev2, data_prev):
    lambda_prev2, lambda_prev, lambda_t = _log_snr(t_prev2), _log_snr(t_prev), _log_snr(t)
    alpha_t = torch.exp(torch.log(1 - t))
    step_prev = lambda_prev - lambda_prev2
    step = lambda_t - lambda_prev
    ratio = step_prev / step
    derivative = (1.0 / ratio) * (data_prev - data_prev2)
    phi = torch.expm1(-step)
    return (t / t_prev) * x - (alpha_t * phi) * data_prev - 0.5 * (alpha_t * phi) * derivative


def flow_dpm_solver_sample(
    model: FlowModel,
    noise: torch.Tensor,
    condition: torch.Tensor,
    unconditional_condition: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    num_steps: int = 20,
    shift: float = 1.0,
    time_scale: float = 1000.0,
    guidance_interval: tuple[float, float] = (0.0, 1.0),
    t_end: float = 1e-3,
) -> torch.Tensor:
    r"""Sample from ``noise`` with DPM-Solver++ 2M (first order on the first and last steps).

    Args:
        model: ``model(x, t * time_scale, condition) -> velocity`` (noise - x0), batched over rows; the
            time is one 0-dim tensor for every row (a model can embed it once per call).
        noise: the start ``x_1`` ``[N, ...]``.
        condition / unconditional_condition: per-row conditions ``[N, ...]``; guided calls run the model
            once on ``[unconditional; conditional]``.
        guidance_scale: classifier-free guidance on the noise prediction, applied for steps with
            ``guidance_interval[0] < t < guidance_interval[1]`` when an unconditional condition is given.
        num_steps: solver steps (= model calls).
        shift: time shift of the grid (see ``flow_dpm_solver_timesteps``).
        time_scale: the model sees ``t * time_scale`` (1000 for models trained on discrete timesteps).
        t_end: the last unshifted time before the final step to 0.

    Returns the sample ``x_0``.
    """
    timesteps = flow_dpm_solver_timesteps(num_steps, shift, t_end=t_end, device=noise.device)
    guided = guidance_scale != 1.0 and unconditional_condition is not None
    low, high = guidance_interval
    # step-independent: the guided calls' conditions
    paired_conditions = torch.cat([unconditional_condition, condition]) if guided else None

    def data_prediction(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if guided and low < float(t) < high:
            x_in = torch.cat([x, x])
            velocity = model(x_in, t * time_scale, paired_conditions)
            eps_unconditional, eps_conditional = ((1 - t.to(x_in)) * velocity + x_in).chunk(2)
            eps = classifier_free_guidance(eps_conditional, eps_unconditional, guidance_scale)
        else:
            velocity = model(x, t * time_scale, condition)
            eps = (1 - t.to(x)) * velocity + x
        return (x - t * eps) / (1 - t)

    x = noise
    times = [timesteps[0]]
    data = [data_prediction(x, timesteps[0])]
    for step in range(1, num_steps + 1):
        t = timesteps[step]
        first_order = step == 1 or step == num_steps  # warm-up, and lower_order_final on the step to t=0
        if first_order:
            x = _first_order_update(x, times[-1], t, data[-1])
        else:
            x = _second_order_update(x, times[-2], times[-1], t, data[-2], data[-1])
        times = [times[-1], t]
        if step < num_steps:  # the value at t=0 is never needed
            data = [data[-1], data_prediction(x, t)]
    return x
