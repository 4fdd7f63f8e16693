"""Per-image PSNR and SSIM (torchmetrics' functional implementations) on images in [0, 1].

Values equal ViTok-v2's evaluation (PSNR on [-1, 1] with range 2 is PSNR on [0, 1] with range 1; SSIM with
a Gaussian window of ``min(H, W, 11)`` pixels made odd, sigma 1.5).
"""

import torch


def _functional():
    try:
        from torchmetrics.functional import image
    except ImportError as error:
        raise ImportError("PSNR and SSIM need torchmetrics: pip install 'hf_vtok[eval]'") from error
    return image


def _check_pair(reconstruction: torch.Tensor, original: torch.Tensor, name: str) -> None:
    if reconstruction.shape != original.shape or reconstruction.dim() != 4:
        raise ValueError(
            f"{name} compares [B, C, H, W] batches of equal shape, got {tuple(reconstruction.shape)} and "
            f"{tuple(original.shape)}"
        )


def psnr(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, ``[B]``; inputs are clamped to [0, 1] (identical images give ``inf``)."""
    _check_pair(reconstruction, original, "PSNR")
    return _functional().peak_signal_noise_ratio(
        reconstruction.float().clamp(0, 1),
        original.float().clamp(0, 1),
        data_range=1.0,
        reduction="none",
        dim=(1, 2, 3),
    )


def ssim_kernel_size(height: int, width: int) -> int:
    size = min(height, width, 11)
    return size if size % 2 == 1 else size - 1


def ssim(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """SSIM per image, ``[B]`` (Gaussian window, sigma 1.5, data range 1)."""
    _check_pair(reconstruction, original, "SSIM")
    kernel = ssim_kernel_size(*original.shape[-2:])
    # float64: the local variances are differences of near-equal moments, float32 loses ~1e-4 of SSIM there
    return (
        _functional()
        .structural_similarity_index_measure(
            reconstruction.double().clamp(0, 1),
            original.double().clamp(0, 1),
            data_range=1.0,
            kernel_size=kernel,
            reduction="none",
        )
        .float()
    )
