"""Classifier-free guidance: one formula for every sampler, pipeline and logits processor."""

import torch


def classifier_free_guidance(
    conditional: torch.Tensor, unconditional: torch.Tensor, guidance_scale: float | torch.Tensor
) -> torch.Tensor:
    """``u + s (c - u)``: the guided prediction (velocity, noise, scores) of a conditional and an unconditional
    one; ``guidance_scale == 1`` gives the conditional prediction (up to rounding)."""
    return unconditional + guidance_scale * (conditional - unconditional)
