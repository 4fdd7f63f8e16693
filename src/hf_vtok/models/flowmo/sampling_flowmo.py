"""FlowMo's decoding sampler: Euler steps of the rectified flow from noise (t = 1) towards the image, with
classifier-free guidance on an interval of flow times, as the original ``rf_sample`` runs it.

``FlowMoModel.decode`` prepares the code and the noise and calls ``flowmo_sample`` with a velocity function;
everything here works on tensors only (the network stays in ``modeling_flowmo.py``).
"""

from collections.abc import Callable

import torch
import torch.utils.checkpoint

from ...flow.guidance import classifier_free_guidance  # not flow/__init__: no ODE solvers in remote code
from .configuration_flowmo import parse_sampling_schedule

StepVelocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def flowmo_time_grid(num_steps: int, schedule: str = "pow_0.25", device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The original sampler's flow times ``[N]`` (from 1 down, t = 0 never evaluated) and step sizes ``[N]``.

    ``"pow_<p>"``: ``t_k = (k / N)^(1/p)`` for k = N..1 with ``dt_k = t_k - t_(k-1)``; ``"linear"``:
    ``t_k = k / N`` with every ``dt = 1 / N``. float32, computed exactly as the original does.
    """
    if num_steps <= 0:
        raise ValueError(f"num_inference_steps must be positive, got {num_steps}")
    kind, power = parse_sampling_schedule(schedule)
    if kind == "linear":
        times = torch.arange(1, num_steps + 1).flip(0) / num_steps
        steps = torch.ones_like(times) * (1.0 / num_steps)
    else:
        grid = torch.arange(0, num_steps + 1).flip(0) ** (1 / power) / num_steps ** (1 / power)
        times, steps = grid[:-1], grid[:-1] - grid[1:]
    return times.to(device), steps.to(device)


def sampler_time_grid(
    timesteps: torch.Tensor | None, num_steps: int, schedule: str, batch: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(times, step sizes) on ``device``: from a custom grid ``[N+1]`` / per sample ``[B, N+1]`` (flow times from
    1 down; step ``i`` goes from ``t_i`` to ``t_(i+1)``), else ``flowmo_time_grid(num_steps, schedule)``."""
    if timesteps is None:
        return flowmo_time_grid(num_steps, schedule, device)
    grid = torch.as_tensor(timesteps, dtype=torch.float32, device=device)
    if grid.dim() not in (1, 2) or grid.shape[-1] < 2 or (grid.dim() == 2 and grid.shape[0] != batch):
        raise ValueError(
            f"timesteps must be a decreasing flow-time grid [N+1] or per sample [B={batch}, N+1] "
            f"(from 1 = noise towards 0 = data), got shape {tuple(grid.shape)}"
        )
    return grid[..., :-1], grid[..., :-1] - grid[..., 1:]


def guidance_interval_in_flow_time(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    """EDM noise levels ``sigma`` -> flow times ``sigma / (1 + sigma)`` (python floats, as the original compares)."""
    if interval is None:
        return None
    low, high = interval
    return low / (1 + low), high / (1 + high)


def guidance_steps(
    times: torch.Tensor, guidance_scale: float, interval: tuple[float, float] | None
) -> torch.BoolTensor:
    """The steps (``[N]``, or ``[B, N]`` for per-sample grids; on the CPU) on which guidance runs: none for
    ``guidance_scale == 1``, all for ``interval=None``, else those whose flow time lies in the (flow-time)
    interval. The comparisons are python-float ones of the float32 times, as in the original."""
    times_cpu = times.detach().to("cpu", torch.float64)
    if guidance_scale == 1.0:
        return torch.zeros_like(times_cpu, dtype=torch.bool)
    if interval is None:
        return torch.ones_like(times_cpu, dtype=torch.bool)
    return (times_cpu >= interval[0]) & (times_cpu <= interval[1])


def flowmo_sample(
    step_velocity: StepVelocity,
    noise: torch.Tensor,
    code_states: torch.Tensor,
    null_code_states: torch.Tensor | None,
    times: torch.Tensor,
    steps: torch.Tensor,
    guided: torch.BoolTensor,
    guidance_scale: float,
    checkpoint_steps: bool = False,
    output_trajectory: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    r"""Euler-integrate the flow from ``noise`` ``[B, C, H, W]``: ``z -= dt_i * v_i`` for every step ``i``.

    ``step_velocity(z, t, code_states)`` is one decoder evaluation (float32 velocity ``~ noise - image``) at
    flow times ``t`` ``[B]``. On a guided step (``guided`` from ``guidance_steps``) the conditional and the
    null code (``null_code_states``, needed when any step is guided) run as one batch of ``2B`` and are mixed
    with ``classifier_free_guidance``; per-sample grids (``times`` / ``steps`` / ``guided`` ``[B, N]``) guide
    only the samples whose step is guided. The loop is differentiable; ``checkpoint_steps`` recomputes each
    decoder evaluation in the backward pass instead of keeping its activations. Returns the last state
    (unclipped) and, with ``output_trajectory``, the state after each step (else ``[]``).
    """
    batch, device = noise.shape[0], noise.device
    if bool(guided.any()):  # conditional and null code side by side, one batched decoder call per guided step
        paired_states = torch.cat([code_states, null_code_states])
    recompute = checkpoint_steps and torch.is_grad_enabled()

    def velocity_of(*inputs):
        if recompute:
            return torch.utils.checkpoint.checkpoint(step_velocity, *inputs, use_reentrant=False)
        return step_velocity(*inputs)

    state = noise
    trajectory = []
    for step in range(times.shape[-1]):
        time, step_size = times[..., step], steps[..., step]
        step_guided = guided[..., step]
        flow_times = time.expand(batch) if time.dim() == 0 else time
        if bool(step_guided.any()):
            both = velocity_of(torch.cat([state, state]), torch.cat([flow_times, flow_times]), paired_states)
            velocity, null_velocity = both.chunk(2)
            guided_velocity = classifier_free_guidance(velocity, null_velocity, guidance_scale)
            if step_guided.dim() == 0 or bool(step_guided.all()):
                velocity = guided_velocity
            else:
                velocity = torch.where(step_guided.to(device)[:, None, None, None], guided_velocity, velocity)
        else:
            velocity = velocity_of(state, flow_times, code_states)
        step_size = step_size if step_size.dim() == 0 else step_size[:, None, None, None]
        state = state - step_size * velocity
        if output_trajectory:
            trajectory.append(state)
    return state, trajectory
