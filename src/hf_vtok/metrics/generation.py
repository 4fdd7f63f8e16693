"""Generation metrics of a sampler: gFID against reference statistics, and the Inception Score."""

import numpy as np
import torch

from .frechet import (
    compute_inception_score,
    frechet_distance_metric,
    inception_score_metric,
    set_statistics,
    statistics,
)
from .inception import FIDInceptionV3, InceptionFeatureExtractor


class GenerationMetrics:
    """gFID and IS of generated images (``[B, 3, H, W]``, uint8 or float in [0, 1]) on one shared Inception.

    The reference side comes from images (``add_reference``) or saved statistics (``set_reference``, e.g.
    ``mu`` / ``sigma`` of an ADM reference ``.npz``); it survives ``reset()``.
    """

    def __init__(
        self,
        inception: FIDInceptionV3,
        input_convention: str = "pytorch-fid",
        inception_score_splits: int = 10,
        device: str | torch.device = "cpu",
    ):
        shared_run: dict = {}  # FID and IS read one Inception run per batch
        pool = InceptionFeatureExtractor(inception, "pool_features", input_convention, shared_run)
        logits = InceptionFeatureExtractor(inception, "logits_unbiased", input_convention, shared_run)
        self.fid = frechet_distance_metric(pool).to(device)
        self.inception_score = inception_score_metric(logits, splits=inception_score_splits).to(device)
        self.num_samples = 0
        self._shared_run = shared_run

    def add_reference(self, images: torch.Tensor) -> None:
        self.fid.update(images, real=True)
        self._shared_run.clear()

    def set_reference(self, mean: np.ndarray, covariance: np.ndarray) -> None:
        set_statistics(self.fid, mean, covariance, real=True)

    def reference_statistics(self) -> tuple[np.ndarray, np.ndarray, int]:
        return statistics(self.fid, real=True)

    @torch.no_grad()
    def update(self, samples: torch.Tensor) -> None:
        self.fid.update(samples, real=False)
        self.inception_score.update(samples)
        self._shared_run.clear()
        self.num_samples += samples.shape[0]

    def reset(self) -> None:
        self.fid.reset()
        self.inception_score.reset()
        self.num_samples = 0

    def compute(self, seed: int = 0) -> dict[str, float]:
        if self.num_samples < 2:
            raise ValueError(f"gFID / IS need at least 2 generated images, got {self.num_samples}")
        if int(self.fid.real_features_num_samples) < 2:
            raise ValueError("gFID needs reference statistics: add at least 2 reference images or set mu / sigma")
        inception_score, inception_score_std = compute_inception_score(self.inception_score, seed=seed)
        return {"gfid": float(self.fid.compute()), "is": inception_score, "is_std": inception_score_std}
