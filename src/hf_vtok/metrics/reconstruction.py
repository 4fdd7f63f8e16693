"""Reconstruction metrics of a tokenizer over a data set: PSNR, SSIM, LPIPS, rFID, FDD."""

from collections.abc import Sequence

import torch

from ..losses.lpips import LPIPS
from .dino import DinoFeatureExtractor
from .frechet import frechet_distance_metric
from .image_quality import psnr, ssim
from .inception import FIDInceptionV3, InceptionFeatureExtractor

RECONSTRUCTION_METRICS = ("psnr", "ssim", "lpips", "rfid", "fdd")


def parse_metric_names(names: str | Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """``"psnr,ssim"`` or a list -> validated, de-duplicated names in the given order."""
    if isinstance(names, str):
        names = names.split(",")
    cleaned = []
    for name in names:
        name = name.strip().lower()
        if not name:
            continue
        if name not in allowed:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(allowed)}")
        if name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise ValueError(f"no metric given; choose from {', '.join(allowed)}")
    return tuple(cleaned)


def _as_image_list(images) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images must be [B, 3, H, W] or a list of [3, H, W], got shape {tuple(images.shape)}")
        return list(images)
    return list(images)


class ReconstructionMetrics:
    """Accumulates reconstruction metrics between originals and reconstructions (``[3, H, W]`` in [0, 1]).

    ``update(originals, reconstructions)`` takes batches (a tensor or a list of images of any sizes; an
    original and its reconstruction share a size); ``compute()`` returns ``{"psnr": ..., ...}`` (means over
    images for PSNR / SSIM / LPIPS); ``reset()`` clears everything but the originals' rFID / FDD statistics,
    so several tokenizers are scored against one pass over the originals (``update(..., update_real=False)``).
    """

    def __init__(
        self,
        metrics: str | Sequence[str] = ("psnr", "ssim"),
        *,
        lpips: LPIPS | None = None,
        inception: FIDInceptionV3 | None = None,
        fid_input_convention: str = "pytorch-fid",
        dino: DinoFeatureExtractor | None = None,
        device: str | torch.device = "cpu",
    ):
        self.metrics = parse_metric_names(metrics, RECONSTRUCTION_METRICS)
        self.device = torch.device(device)
        needs = {"lpips": lpips, "rfid": inception, "fdd": dino}
        missing = [name for name, module in needs.items() if name in self.metrics and module is None]
        if missing:
            raise ValueError(f"metrics {missing} need their feature network (lpips=, inception=, dino=)")
        self.lpips = lpips.to(self.device) if "lpips" in self.metrics else None
        self.fid = None
        if "rfid" in self.metrics:
            extractor = InceptionFeatureExtractor(inception, "pool_features", fid_input_convention)
            self.fid = frechet_distance_metric(extractor).to(self.device)
        self.fdd = frechet_distance_metric(dino).to(self.device) if "fdd" in self.metrics else None
        self.reset()

    def reset(self) -> None:
        self._sums = {name: 0.0 for name in ("psnr", "ssim", "lpips") if name in self.metrics}
        self.num_images = 0
        for metric in (self.fid, self.fdd):
            if metric is not None:
                metric.reset()

    @torch.no_grad()
    def update(self, originals, reconstructions, update_real: bool = True) -> None:
        originals, reconstructions = _as_image_list(originals), _as_image_list(reconstructions)
        if len(originals) != len(reconstructions):
            raise ValueError(f"{len(originals)} originals but {len(reconstructions)} reconstructions")
        groups: dict[tuple, list[int]] = {}
        for index, (original, reconstruction) in enumerate(zip(originals, reconstructions)):
            if original.shape != reconstruction.shape or original.dim() != 3 or original.shape[0] != 3:
                raise ValueError(
                    f"image {index}: original {tuple(original.shape)} and reconstruction "
                    f"{tuple(reconstruction.shape)} must both be [3, H, W] of the same size"
                )
            groups.setdefault(tuple(original.shape), []).append(index)
        for indices in groups.values():  # images of one size are batched together
            original = torch.stack([originals[i] for i in indices]).to(self.device, torch.float32).clamp(0, 1)
            reconstruction = (
                torch.stack([reconstructions[i] for i in indices]).to(self.device, torch.float32).clamp(0, 1)
            )
            if "psnr" in self._sums:
                self._sums["psnr"] += psnr(reconstruction, original).sum().item()
            if "ssim" in self._sums:
                self._sums["ssim"] += ssim(reconstruction, original).sum().item()
            if "lpips" in self._sums:
                self._sums["lpips"] += self.lpips(2 * reconstruction - 1, 2 * original - 1).sum().item()
            for metric in (self.fid, self.fdd):
                if metric is not None:
                    if update_real:
                        metric.update(original, real=True)
                    metric.update(reconstruction, real=False)
        self.num_images += len(originals)

    def compute(self) -> dict[str, float]:
        if self.num_images == 0:
            raise ValueError("no images were scored")
        results = {name: total / self.num_images for name, total in self._sums.items()}
        for name, metric in (("rfid", self.fid), ("fdd", self.fdd)):
            if metric is not None:
                if self.num_images < 2:
                    raise ValueError(f"{name} needs at least 2 images, got {self.num_images}")
                results[name] = float(metric.compute())
        return {name: results[name] for name in self.metrics}
