"""FlowMo's training objective (the original ``rf_loss`` and post-training ``posttrain_sample``).

Pre-training: one flow time per image (``config.timestep_sampling``), ``x_t = (1 - t) x + t noise``, the
whole code dropped to the null code with probability ``config.cfg_dropout_prob``, and the rectified-flow
loss ``mean((noise - v - x)^2)`` plus the quantizer loss. Post-training also samples the image through
the differentiable sampler chain on random per-sample grids, for the trainer's sample-level perceptual
loss. ``FlowMoModel.forward(return_loss=True)`` calls ``flowmo_training_losses``; the draws here use the
generator's device, as diffusers' ``randn_tensor`` does, so a seed gives the same numbers on any device.
"""

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn


def uniform(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """``torch.rand`` drawn on the generator's device (like diffusers' ``randn_tensor``), then moved."""
    rand_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=rand_device).to(device)


def sample_training_timesteps(
    sampling: str, batch: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Training flow times ``[B]`` (t = 1 is noise): ``"uniform"``, ``"lognormal"`` (sigmoid of a standard
    normal) or ``"fat_lognormal"`` (lognormal with 10% of the samples uniform instead)."""
    if sampling == "uniform":
        return uniform((batch,), generator, device)
    times = torch.sigmoid(randn_tensor((batch,), generator=generator, device=device, dtype=torch.float32))
    if sampling == "fat_lognormal":
        times = torch.where(uniform((batch,), generator, device) <= 0.9, times, uniform((batch,), generator, device))
    return times


def sample_posttrain_timesteps(
    batch: int, num_steps: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Random per-sample sampler grids ``[B, num_steps + 1]`` of post-training, from 1 down to 0.

    The original draws ``num_steps + 1`` uniform numbers per sample and uses their normalised cumulative
    sums (minus the first) as a monotone grid, so the step sizes are random and differ between samples.
    """
    if num_steps <= 0:
        raise ValueError(f"post-training needs at least one sampler step, got num_steps={num_steps}")
    grid = uniform((batch, num_steps + 1), generator, device).cumsum(dim=1)
    grid = grid - grid[:, :1]
    return (grid / grid[:, -1:]).flip(dims=(1,))


def flowmo_training_losses(
    model: nn.Module,
    pixel_values: torch.Tensor,
    encoded,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    condition_dropout: bool | None = None,
    generator: torch.Generator | None = None,
    posttrain_steps: int | None = None,
    posttrain_timesteps: torch.Tensor | None = None,
    posttrain_noise: torch.Tensor | None = None,
    checkpoint_posttrain_steps: bool = False,
) -> dict:
    r"""The losses of a ``FlowMoModel`` on float32 ``pixel_values`` ``[B, 3, H, W]`` given their ``encode``
    output (``return_loss=True``); ``timesteps`` ``[B]`` are checked flow times or ``None`` (drawn).

    Returns the ``FlowMoOutput`` fields of training mode: ``loss``, ``losses`` (every term), ``sample``
    (the one-step prediction ``x_t - t v``), ``velocity``, ``timesteps``, ``noise`` and ``posttrain_sample``
    (``None`` unless ``posttrain_steps`` or ``posttrain_timesteps`` is given). The post-training chain is
    conditioned on the code before dropout, unguided and unclipped, and keeps the graph through every step.
    """
    config = model.config
    batch, device = pixel_values.shape[0], pixel_values.device
    if timesteps is None:
        timesteps = sample_training_timesteps(config.timestep_sampling, batch, generator, device)
    if noise is None:
        noise = randn_tensor(pixel_values.shape, generator=generator, device=device, dtype=pixel_values.dtype)
    elif noise.shape != pixel_values.shape:
        raise ValueError(
            f"noise must have the shape of pixel_values {tuple(pixel_values.shape)}, got {tuple(noise.shape)}"
        )
    times = timesteps.view(batch, 1, 1, 1)
    noisy = (1 - times) * pixel_values + times * noise
    conditioning = model.conditioning(encoded.latents)
    condition_dropout = model.training if condition_dropout is None else condition_dropout
    if condition_dropout and config.cfg_dropout_prob > 0:
        keep = uniform((batch,), generator, device) > config.cfg_dropout_prob
        conditioning = conditioning * keep[:, None, None].to(conditioning.dtype)
    velocity = model.velocity(noisy, timesteps, conditioning=conditioning).sample.float()
    diffusion_loss = ((noise - velocity - pixel_values) ** 2).mean(dim=(1, 2, 3)).mean()
    posttrain_sample = None
    if posttrain_steps is not None or posttrain_timesteps is not None:
        if posttrain_timesteps is None:
            posttrain_timesteps = sample_posttrain_timesteps(batch, posttrain_steps, generator, device)
        posttrain_sample = model.decode(
            encoded.latents,
            timesteps=posttrain_timesteps,
            noise=posttrain_noise,
            generator=generator,
            height=pixel_values.shape[-2],
            width=pixel_values.shape[-1],
            guidance_scale=1.0,
            clip_sample=False,
            checkpoint_steps=checkpoint_posttrain_steps,
        ).sample
    losses = {
        "diffusion_loss": diffusion_loss,
        "quantizer_loss": encoded.quantizer_loss,
        **(encoded.quantizer_losses or {}),
    }
    return {
        "loss": diffusion_loss + encoded.quantizer_loss,
        "losses": losses,
        "sample": noisy - times * velocity,
        "velocity": velocity,
        "timesteps": timesteps,
        "noise": noise,
        "posttrain_sample": posttrain_sample,
    }
