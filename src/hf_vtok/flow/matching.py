"""Flow-matching training: the probability paths a flow model is trained on and its per-row regression loss.

Two paths, each with the velocity its model regresses:

- ``"linear_flow"`` (Sana / PixArt): discrete training indices ``i`` in ``[0, num_train_timesteps)`` with noise
  levels ``sigma_i`` (``discrete_flow_sigmas``), ``x = (1 - sigma) x0 + sigma noise``, velocity ``noise - x0``
  (diffusers' convention); the model sees the integer time ``int(sigma * num_train_timesteps)``.
- ``"CondOT"`` (Meta's ``flow_matching``): times ``t`` in [0, 1] from noise (0) to data (1),
  ``x_t = t x1 + (1 - t) noise``, velocity ``x1 - noise``; the model sees ``t``.
"""

from collections.abc import Callable

import numpy as np
import torch

from .schedules import discrete_flow_sigmas

FLOW_PATHS = ("linear_flow", "CondOT")

VelocityModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[N]`` -> ``[N, 1, ...]``, broadcasting one value per row of ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def linear_flow_schedule(
    timestep_index: torch.Tensor, num_train_timesteps: int = 1000, shift: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``linear_flow`` training point of each index in ``[0, num_train_timesteps)``: the data and noise weights
    ``1 - sigma`` and ``sigma`` (computed in float64, returned in float32, as the reference) and the integer time
    the model sees, ``int(sigma * num_train_timesteps)``."""
    index = timestep_index.long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_train_timesteps):
        raise ValueError(f"timestep indices must be in [0, {num_train_timesteps})")
    sigmas = discrete_flow_sigmas(num_train_timesteps, shift)
    index_cpu = index.cpu().numpy()
    alpha = torch.from_numpy(1.0 - sigmas[index_cpu]).float()
    sigma = torch.from_numpy(sigmas[index_cpu]).float()
    model_time = torch.from_numpy((sigmas * num_train_timesteps).astype(np.int64)[index_cpu])
    return alpha.to(index.device), sigma.to(index.device), model_time.to(index.device)


def condot_path(target: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CondOT path point ``x_t = t x1 + (1 - t) x0`` (x0 = noise, x1 = target, one ``t`` per row) and its velocity
    ``x1 - x0``."""
    time = _per_row(t.to(target), target)
    return (1 - time) * noise + time * target, target - noise


def flow_matching_loss_per_row(
    velocity_model: VelocityModel,
    target: torch.Tensor,
    path: str = "linear_flow",
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    num_train_timesteps: int = 1000,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Flow-matching loss of each row of ``target [N, ...]``: the mean squared error (float32) between
    ``velocity_model(x_t, model_time)`` and the path's velocity, averaged over all but the row axis.

    ``noise`` defaults to a normal draw like ``target``; ``timesteps`` to the path's training distribution:
    ``linear_flow`` indices ``int(sigmoid(N(0, 1)) * num_train_timesteps)`` (logit-normal), ``CondOT`` times
    uniform in [0, 1), drawn after the noise with ``generator``.
    """
    if path not in FLOW_PATHS:
        raise ValueError(f"path must be one of {FLOW_PATHS}, got {path!r}")
    rows, device = target.shape[0], target.device
    if noise is None:
        noise = torch.randn(target.shape, generator=generator, device=device, dtype=target.dtype)
    if path == "linear_flow":
        if timesteps is None:
            logit = torch.randn(rows, generator=generator, device=device)
            timesteps = (logit.sigmoid() * num_train_timesteps).long()
        alpha, sigma, model_time = linear_flow_schedule(timesteps, num_train_timesteps, shift)
        noisy = _per_row(alpha, target) * target + _per_row(sigma, target) * noise
        velocity_target = noise - target
    else:
        if timesteps is None:
            timesteps = torch.rand(rows, generator=generator, device=device)
        noisy, velocity_target = condot_path(target, noise, timesteps)
        model_time = timesteps
    prediction = velocity_model(noisy, model_time)
    return (prediction.float() - velocity_target.float()).pow(2).flatten(1).mean(dim=-1)
