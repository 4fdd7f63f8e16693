"""Optimizers and learning-rate schedules of the original recipes."""

import math

import torch
from torch import nn

_NO_DECAY_NAMES = ("bias", "norm", "embed", "token", "position", "layer_scale", "gamma", "codebook", "frequencies")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: parameters with ``ndim > 1`` whose name has no bias / norm / embedding /
    learned token / position / LayerScale part (ViTok's rule); everything else without decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        lowered = name.lower()
        if parameter.ndim > 1 and not any(part in lowered for part in _NO_DECAY_NAMES):
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(
    model: nn.Module, name: str, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0, eps: float = 1e-8
) -> torch.optim.Optimizer:
    """``adamw`` (decoupled decay on ``parameter_groups``) or ``adam`` (the SoftVQ recipe: no decay)."""
    if name == "adamw":
        return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)
    if name == "adam":
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        return torch.optim.Adam(parameters, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected 'adamw' or 'adam'")


def warmup_cosine_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    min_factor: float = 0.0,
    warmup_start_factor: float = 0.0,
    schedule: str = "cosine",
) -> float:
    """Learning-rate multiplier at ``step``: linear warmup from ``warmup_start_factor`` to 1 over
    ``warmup_steps``, then cosine decay to ``min_factor`` at ``total_steps`` (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; expected 'cosine' or 'constant'")
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr: float = 0.0,
    warmup_start_lr: float = 0.0,
    schedule: str = "cosine",
) -> torch.optim.lr_scheduler.LambdaLR:
    base = optimizer.param_groups[0]["lr"]
    min_factor, start_factor = (min_lr / base, warmup_start_lr / base) if base > 0 else (0.0, 0.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(step, total_steps, warmup_steps, min_factor, start_factor, schedule),
    )


__all__ = ["build_optimizer", "build_scheduler", "parameter_groups", "warmup_cosine_factor"]
