"""Pixel reconstruction losses: Charbonnier on (masked) patch sequences and SSIM."""

import torch
import torch.nn.functional as F


def charbonnier_loss(
    prediction: torch.Tensor, target: torch.Tensor, patch_mask: torch.Tensor | None = None, eps: float = 1e-3
) -> torch.Tensor:
    """``sqrt(diff^2 + eps^2)`` in float32, as ViTok-v2 trains.

    On patch sequences ``[B, N, D]`` with ``patch_mask [B, N]``: mean over each token's values, summed over
    valid tokens and divided by their count per image, then averaged over the batch. Other shapes: the mean.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"Charbonnier loss needs equal shapes, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    per_value = torch.sqrt((prediction.float() - target.float()).square() + eps * eps)
    if patch_mask is None:
        return per_value.mean()
    if prediction.dim() != 3 or tuple(patch_mask.shape) != tuple(prediction.shape[:2]):
        raise ValueError(
            f"patch_mask {tuple(patch_mask.shape)} does not match patch sequences {tuple(prediction.shape)}"
        )
    mask = patch_mask.float()
    per_image = (per_value.mean(dim=-1) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return per_image.mean()


def _gaussian_band(size: int, kernel_size: int, sigma: float, device, dtype) -> torch.Tensor:
    """``[size, size - kernel_size + 1]`` matrix whose columns are the normalised Gaussian at each valid offset:
    ``x @ band`` blurs the last axis without padding (a separable, matmul-based "valid" convolution)."""
    offsets = torch.arange(kernel_size, device=device, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    outputs = size - kernel_size + 1
    band = torch.zeros(size, outputs, device=device, dtype=torch.float64)
    for column in range(outputs):
        band[column : column + kernel_size, column] = kernel
    return band.to(dtype)


def ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 2.0, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of ``[B, C, H, W]`` batches, differentiable: torchmetrics' ``structural_similarity_index_measure``
    (Gaussian window of ``2 * int(3.5 * sigma + 0.5) + 1`` taps, reflect padding, variances clamped at 0,
    the map averaged over the whole image) computed with separable matrix products, much faster on CPU."""
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(
            f"SSIM needs two [B, C, H, W] batches, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    kernel_size = int(3.5 * sigma + 0.5) * 2 + 1
    pad = (kernel_size - 1) // 2
    if min(prediction.shape[-2:]) <= pad:
        raise ValueError(
            f"SSIM with sigma {sigma} needs images larger than {pad} pixels, got {tuple(prediction.shape[-2:])}"
        )
    x = F.pad(prediction.float(), (pad, pad, pad, pad), mode="reflect")
    y = F.pad(target.float(), (pad, pad, pad, pad), mode="reflect")
    rows = _gaussian_band(x.shape[-2], kernel_size, sigma, x.device, x.dtype)
    cols = _gaussian_band(x.shape[-1], kernel_size, sigma, x.device, x.dtype)

    # one batched product for the five blurred maps: x, y, x^2, y^2, xy
    stacked = torch.stack((x, y, x * x, y * y, x * y)).flatten(0, 2)
    mean_x, mean_y, square_x, square_y, product = (
        (rows.transpose(0, 1) @ stacked @ cols).unflatten(0, (5, -1)).unbind(0)
    )
    mean_x, mean_y, square_x, square_y, product = (
        value.view(prediction.shape) for value in (mean_x, mean_y, square_x, square_y, product)
    )
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    variance_x = (square_x - mean_x.square()).clamp_min(0.0)
    variance_y = (square_y - mean_y.square()).clamp_min(0.0)
    covariance = product - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
    denominator = (mean_x.square() + mean_y.square() + c1) * (variance_x + variance_y + c2)
    return (numerator / denominator).mean()


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """``1 - SSIM`` (Gaussian window, sigma 1.5; [-1, 1] images: range 2), ViTok-v2's SSIM loss."""
    return 1.0 - ssim(prediction, target, data_range)


__all__ = ["charbonnier_loss", "ssim", "ssim_loss"]
