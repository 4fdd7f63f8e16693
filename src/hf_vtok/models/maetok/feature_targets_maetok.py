"""Per-patch feature targets of MAETok's auxiliary decoders: HOG (plain torch), DINOv2 and SigLIP.

MAETok (Chen et al., 2025) trains its encoder with masked modelling: shallow auxiliary decoders
predict, from the latent tokens, features of the image at the masked patches. The reference
snapshot has none of this code, so these choices follow the paper and are documented here:

- HOG follows MaskFeat: Sobel gradients per RGB channel (reflect padding), unsigned orientation in
  ``num_bins`` bins over 180 degrees, magnitudes weighted by a Gaussian window (std = window / 2)
  tiled over the image, histograms summed over ``cell_size`` cells and L2-normalised per cell and
  channel; a patch's target is its cells' histograms, ordered (channel, bin, cell row, cell column).
  It is computed on the [-1, 1] input (per-cell normalisation makes the scale irrelevant).
- DINOv2 / SigLIP teachers are transformers ``Dinov2Model`` / ``SiglipVisionModel`` (any size; tests
  build tiny ones from configs). Each gets its own input normalisation (DINOv2: ImageNet mean / std;
  SigLIP: mean 0.5 / std 0.5, i.e. the [-1, 1] input), and its patch tokens after the final norm
  (class / register tokens removed) are the targets. Their patch grid must equal the decoder's:
  build them with the tokenizer's patch size (the released recipe uses patch 16 for both).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _gaussian_window(size: int, std: float, device=None) -> torch.Tensor:
    positions = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    line = torch.exp(-0.5 * (positions / std) ** 2)
    window = torch.outer(line, line)
    return window / window.sum()


class HOGFeatures(nn.Module):
    """Images ``[B, C, H, W]`` -> per-patch HOG ``[B, (H/p)*(W/p), C * num_bins * (p / cell_size)**2]``."""

    def __init__(self, patch_size: int = 16, num_bins: int = 9, cell_size: int = 8, gaussian_window: int = 16):
        super().__init__()
        if patch_size % cell_size:
            raise ValueError(f"patch_size {patch_size} must be a multiple of cell_size {cell_size}")
        self.patch_size, self.num_bins, self.cell_size, self.gaussian_window = (
            patch_size,
            num_bins,
            cell_size,
            gaussian_window,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        if (
            height % self.patch_size
            or width % self.patch_size
            or height % self.gaussian_window
            or width % self.gaussian_window
        ):
            raise ValueError(
                f"HOG needs an image size ({height}x{width}) divisible by the patch size {self.patch_size} and the "
                f"Gaussian window {self.gaussian_window}"
            )
        images = images.float()
        sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=images.device)
        kernels = torch.stack((sobel, sobel.t())).unsqueeze(1).repeat(channels, 1, 1, 1)  # [2C, 1, 3, 3]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect").repeat_interleave(2, dim=1)
        gradients = F.conv2d(padded, kernels, groups=2 * channels).unflatten(1, (channels, 2))
        grad_x, grad_y = gradients.unbind(2)
        magnitude = torch.hypot(grad_x, grad_y)
        orientation = torch.atan2(grad_x, grad_y)  # unsigned after the modulo below
        bins = torch.floor(orientation / math.pi * self.num_bins).long() % self.num_bins
        window = _gaussian_window(self.gaussian_window, self.gaussian_window / 2, images.device)
        magnitude = magnitude * window.repeat(height // self.gaussian_window, width // self.gaussian_window)
        histogram = magnitude.new_zeros(batch, channels, self.num_bins, height, width)
        histogram.scatter_add_(2, bins.unsqueeze(2), magnitude.unsqueeze(2))
        cell = self.cell_size
        histogram = histogram.unflatten(4, (width // cell, cell)).unflatten(3, (height // cell, cell)).sum(dim=(4, 6))
        histogram = F.normalize(histogram, dim=2)  # [B, C, bins, H/cell, W/cell]
        per_patch = self.patch_size // cell
        rows, cols = height // self.patch_size, width // self.patch_size
        histogram = histogram.reshape(batch, channels, self.num_bins, rows, per_patch, cols, per_patch)
        histogram = histogram.permute(0, 3, 5, 1, 2, 4, 6)
        return histogram.reshape(batch, rows * cols, -1)


class MAETokFeatureTargets(nn.Module):
    """Frozen feature targets for MAETok's auxiliary decoders: ``targets(pixel_values) -> {name: [B, N, D]}``.

    ``hog``: a ``HOGFeatures``; ``dinov2``: a transformers ``Dinov2Model`` (or ``Dinov2WithRegistersModel``);
    ``siglip``: a ``SiglipVisionModel``. Give any subset; the teachers are frozen and put in eval mode.
    They are not part of the tokenizer (not saved with it): the training loop owns this module.
    """

    def __init__(
        self,
        hog: HOGFeatures | None = None,
        dinov2: nn.Module | None = None,
        siglip: nn.Module | None = None,
        grid_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.hog, self.dinov2, self.siglip = hog, dinov2, siglip
        # with a grid size, each teacher sees the image resized to grid * its own patch size (bicubic), so that
        # e.g. a patch-14 DINOv2 gives the 16x16 grid of a 256-pixel image that the original's patch-16 one does
        self.grid_size = tuple(grid_size) if grid_size is not None else None
        for teacher in (dinov2, siglip):
            if teacher is not None:
                teacher.requires_grad_(False).eval()

    @classmethod
    def for_config(
        cls, config, dinov2: nn.Module | None = None, siglip: nn.Module | None = None, resize_to_grid: bool = False
    ) -> "MAETokFeatureTargets":
        """Targets for ``config.auxiliary_targets``: HOG built from the config, teachers as given."""
        targets = set(config.auxiliary_targets)
        missing = [
            name for name, model in (("dinov2", dinov2), ("siglip", siglip)) if name in targets and model is None
        ]
        if missing:
            raise ValueError(f"config.auxiliary_targets asks for {missing} but no such teacher model was given")
        hog = (
            HOGFeatures(
                config.decoder_patch_size, config.hog_num_bins, config.hog_cell_size, config.hog_gaussian_window
            )
            if "hog" in targets
            else None
        )
        grid = config.decoder_grid_size if resize_to_grid else None
        return cls(hog, dinov2 if "dinov2" in targets else None, siglip if "siglip" in targets else None, grid)

    def _teacher_input(self, pixel_values: torch.Tensor, teacher: nn.Module) -> torch.Tensor:
        if self.grid_size is None:
            return pixel_values
        patch = teacher.config.patch_size
        size = (self.grid_size[0] * patch, self.grid_size[1] * patch)
        if tuple(pixel_values.shape[-2:]) == size:
            return pixel_values
        return F.interpolate(pixel_values.float(), size=size, mode="bicubic", align_corners=False, antialias=True)

    def train(self, mode: bool = True):
        super().train(mode)
        for teacher in (self.dinov2, self.siglip):  # teachers always run in eval mode
            if teacher is not None:
                teacher.eval()
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name in ("hog", "dinov2", "siglip") if getattr(self, name) is not None)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixel_values [B, 3, H, W]`` in [-1, 1] -> per-patch targets (float32 HOG, teacher dtype otherwise)."""
        targets = {}
        if self.hog is not None:
            targets["hog"] = self.hog(pixel_values)
        if self.dinov2 is not None:
            mean = torch.tensor(_IMAGENET_MEAN, device=pixel_values.device).view(1, -1, 1, 1)
            std = torch.tensor(_IMAGENET_STD, device=pixel_values.device).view(1, -1, 1, 1)
            normalized = ((self._teacher_input(pixel_values, self.dinov2).float() + 1) / 2 - mean) / std
            states = self.dinov2(pixel_values=normalized.to(self.dinov2.dtype)).last_hidden_state
            num_prefix = 1 + getattr(self.dinov2.config, "num_register_tokens", 0)
            targets["dinov2"] = states[:, num_prefix:]
        if self.siglip is not None:
            siglip_input = self._teacher_input(pixel_values, self.siglip)
            resized = siglip_input.shape[-1] != self.siglip.config.image_size
            states = self.siglip(
                pixel_values=siglip_input.to(self.siglip.dtype), interpolate_pos_encoding=resized
            ).last_hidden_state
            targets["siglip"] = states
        return targets
