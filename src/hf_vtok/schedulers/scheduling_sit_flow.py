"""The SiT samplers of the SoftVQ-VAE / MAETok generators as a diffusers scheduler.

Time runs from ``t = 1`` (noise) to ``t = 0`` (data) with ``x_t = alpha_t * x_0 + sigma_t * noise``;
the model predicts the velocity ``dx_t / dt`` (``noise - x_0`` on the linear path: the diffusers
sign convention, so no sign flip anywhere). Sampler state is float64, as in the original
(``modelling/samplers.py``); the pipeline evaluates the model in its own dtype.

* ODE (``sampler="ode"``): Euler on ``linspace(1, 0, n + 1)``; with ``heun=True`` every step but
  the last is corrected by a second evaluation at ``t_next`` (Heun's method).
* SDE (``sampler="sde"``): Euler-Maruyama on ``linspace(1, sde_end_time, n)`` then ``0``, diffusion
  ``w(t) = 2 t``, drift ``v - w / 2 * score`` with the score derived from the velocity on the
  chosen path (``"linear"``: alpha = 1 - t, sigma = t; ``"cosine"``: alpha = cos(pi t / 2),
  sigma = sin(pi t / 2)); the final step to 0 is mean-only (no noise).

diffusers' ``FlowMatchEulerDiscreteScheduler`` takes the same Euler steps but in float32 (it
upcasts the sample to float32 and keeps float32 sigmas), and diffusers has no SDE sampler for
velocity models, hence this scheduler.
"""

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

SAMPLERS = ("ode", "sde")
PATH_TYPES = ("linear", "cosine")


@dataclass
class SiTFlowSchedulerOutput(BaseOutput):
    """``prev_sample``: the float64 sample after this model evaluation's update."""

    prev_sample: torch.Tensor


def path_coefficients(time: torch.Tensor, path_type: str, like: torch.Tensor):
    """``(alpha_t, d alpha_t / dt, sigma_t, d sigma_t / dt)`` of the interpolation path, broadcast like ``like``."""
    time = time.reshape(-1, *([1] * (like.dim() - 1)))
    if path_type == "linear":
        return 1 - time, torch.ones_like(like) * -1, time, torch.ones_like(like)
    if path_type == "cosine":
        return (
            torch.cos(time * np.pi / 2),
            -np.pi / 2 * torch.sin(time * np.pi / 2),
            torch.sin(time * np.pi / 2),
            np.pi / 2 * torch.cos(time * np.pi / 2),
        )
    raise ValueError(f"unknown path_type {path_type!r}; expected one of {PATH_TYPES}")


def score_from_velocity(
    velocity: torch.Tensor, sample: torch.Tensor, time: torch.Tensor, path_type: str
) -> torch.Tensor:
    """Score ``grad log p_t(x)`` of a velocity prediction:
    ``((alpha / alpha') v - x) / (sigma^2 - (alpha / alpha') sigma' sigma)``."""
    alpha, d_alpha, sigma, d_sigma = path_coefficients(time, path_type, sample)
    reverse_alpha_ratio = alpha / d_alpha
    variance = sigma**2 - reverse_alpha_ratio * d_sigma * sigma
    return (reverse_alpha_ratio * velocity - sample) / variance


class SiTFlowScheduler(SchedulerMixin, ConfigMixin):
    """ODE (Euler / Heun) and SDE (Euler-Maruyama) sampling of SiT velocity models (``SiTPipeline``).

    Args:
        sampler: ``"sde"`` (the original's default mode) or ``"ode"``.
        path_type: ``"linear"`` or ``"cosine"`` interpolation (changes only the SDE's score conversion).
        heun: Heun correction for the ODE (ignored by the SDE, as in the original).
        sde_end_time: last time of the SDE grid before the mean-only step to 0 (0.04).

    ``timesteps`` are the float64 times at which the model is evaluated, in order (Heun evaluates
    twice per step, at ``t_cur`` then ``t_next``); ``interval_start_times`` gives the ``t_cur`` of the
    step each evaluation belongs to, which decides whether classifier-free guidance applies (the
    original tests the guidance interval on ``t_cur``, also for the Heun correction).
    ``step(velocity, t, sample)`` expects the (guided) velocity at that evaluation.
    """

    order = 1

    @register_to_config
    def __init__(
        self, sampler: str = "sde", path_type: str = "linear", heun: bool = False, sde_end_time: float = 0.04
    ):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        if path_type not in PATH_TYPES:
            raise ValueError(f"unknown path_type {path_type!r}; expected one of {PATH_TYPES}")
        if not 0.0 < sde_end_time < 1.0:
            raise ValueError(f"sde_end_time must be in (0, 1), got {sde_end_time}")
        self.num_inference_steps = None
        self.timesteps = torch.empty(0, dtype=torch.float64)
        self.interval_start_times = torch.empty(0, dtype=torch.float64)
        self._plan: list[tuple[str, int]] = []
        self._step_index = 0

    @property
    def step_index(self) -> int:
        return self._step_index

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        steps = int(num_inference_steps)
        if self.config.sampler == "ode":
            grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        else:
            grid = torch.linspace(1.0, self.config.sde_end_time, steps, dtype=torch.float64)
            grid = torch.cat([grid, torch.tensor([0.0], dtype=torch.float64)])
        # plan: one entry per model evaluation -> (kind, step)
        plan = []
        for step in range(len(grid) - 1):
            if self.config.sampler == "sde":
                plan.append(("sde_final" if step == len(grid) - 2 else "sde", step))
            elif self.config.heun and step < len(grid) - 2:
                plan += [("heun_predict", step), ("heun_correct", step)]
            else:
                plan.append(("euler", step))
        self.num_inference_steps = steps
        self._grid = grid
        self._plan = plan
        self.timesteps = torch.stack([grid[step + (kind == "heun_correct")] for kind, step in plan]).to(device)
        self.interval_start_times = torch.stack([grid[step] for _, step in plan]).to(device)
        self._step_index = 0
        self._predictor = None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SiTFlowSchedulerOutput | tuple:
        """Advance by one model evaluation. ``noise`` replaces the SDE step's normal draw (shape of ``sample``)."""
        if self._step_index >= len(self._plan):
            raise ValueError("the scheduler has run all its steps; call set_timesteps again")
        kind, step = self._plan[self._step_index]
        t_cur, t_next = self._grid[step].to(sample.device), self._grid[step + 1].to(sample.device)
        sample = sample.to(torch.float64)
        velocity = model_output.to(torch.float64)
        if kind == "euler":
            prev_sample = sample + (t_next - t_cur) * velocity
        elif kind == "heun_predict":
            self._predictor = (sample, velocity)
            prev_sample = sample + (t_next - t_cur) * velocity
        elif kind == "heun_correct":
            start, first_velocity = self._predictor
            prev_sample = start + (t_next - t_cur) * (0.5 * first_velocity + 0.5 * velocity)
            self._predictor = None
        else:
            dt = t_next - t_cur
            diffusion = 2 * t_cur
            time = torch.ones(sample.shape[0], dtype=torch.float64, device=sample.device) * t_cur
            drift = velocity - 0.5 * diffusion * score_from_velocity(velocity, sample, time, self.config.path_type)
            if kind == "sde_final":  # mean only
                prev_sample = sample + dt * drift
            else:
                if noise is None:
                    noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=torch.float64)
                elif noise.shape != sample.shape:
                    raise ValueError(f"noise has shape {tuple(noise.shape)}, the sample {tuple(sample.shape)}")
                noise_increment = noise.to(sample.device, torch.float64) * torch.sqrt(torch.abs(dt))
                prev_sample = sample + drift * dt + torch.sqrt(diffusion) * noise_increment
        self._step_index += 1
        if not return_dict:
            return (prev_sample,)
        return SiTFlowSchedulerOutput(prev_sample=prev_sample)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x_t = alpha_t x_0 + sigma_t noise`` on the configured path (``timesteps`` = flow times in [0, 1])."""
        time = timesteps.to(original_samples.dtype)
        alpha, _, sigma, _ = path_coefficients(time, self.config.path_type, original_samples)
        return alpha * original_samples + sigma * noise
