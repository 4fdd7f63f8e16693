"""Fréchet distances (rFID, gFID, FDD) and the Inception Score, on torchmetrics with hf_vtok's feature networks.

torchmetrics' ``FrechetInceptionDistance`` takes any feature module (``feature=``) and accumulates the
feature mean and covariance in float64; a subclass of it that computes the distance with symmetric
eigensolves serves every Fréchet distance (``frechet_distance_metric``), only the feature network changes.
Reference statistics are read from / written to ``.npz`` files in the format of the ADM evaluation suite
(``mu``, ``sigma``; a reference batch ``arr_0`` of uint8 NHWC images).
"""

import functools
import importlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _torchmetrics_image_class(module: str, name: str):
    """Imported on use, so the CLI and the networks work without the eval extra. The submodules, not
    torchmetrics.image: that package exports FID / IS only when torch-fidelity is installed."""
    try:
        return getattr(importlib.import_module(f"torchmetrics.image.{module}"), name)
    except ImportError as error:
        raise ImportError(
            "Fréchet distances and the Inception Score need torchmetrics: pip install 'hf_vtok[eval]'"
        ) from error


_OVERSAMPLING = 16


def trace_sqrt_product(
    covariance1: torch.Tensor, covariance2: torch.Tensor, max_rank: int | None = None
) -> torch.Tensor:
    """``tr sqrt(S1 S2)`` of two PSD matrices, through symmetric eigenproblems (real by construction).

    With ``max_rank`` (e.g. ``(n1 - 1) + (n2 - 1)`` for covariances of n1 and n2 samples) well below the
    dimension, both matrices are first compressed, exactly, onto an orthonormal basis of the sum of their
    ranges: a 2048-d FID of a few hundred images then costs milliseconds instead of a 2048^3 eigensolve.
    """
    dim = covariance1.shape[0]
    if max_rank is not None and max_rank + _OVERSAMPLING < dim // 2:
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(dim, max_rank + _OVERSAMPLING, generator=generator, dtype=covariance1.dtype)
        basis, _ = torch.linalg.qr((covariance1 + covariance2) @ probe.to(covariance1.device))
        covariance1 = basis.T @ covariance1 @ basis
        covariance2 = basis.T @ covariance2 @ basis
    # eigenvalues of S1 S2 are those of the symmetric R S2 R with R = S1^(1/2)
    values, vectors = torch.linalg.eigh(covariance1)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    return torch.linalg.eigvalsh(root @ covariance2 @ root).clamp(min=0).sqrt().sum()


def _frechet_from_statistics(mean1, covariance1, mean2, covariance2, max_rank=None) -> torch.Tensor:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)``."""
    return (
        (mean1 - mean2).square().sum()
        + covariance1.trace()
        + covariance2.trace()
        - 2 * trace_sqrt_product(covariance1, covariance2, max_rank)
    )


@functools.cache
def _frechet_distance_class():
    class FrechetDistance(_torchmetrics_image_class("fid", "FrechetInceptionDistance")):
        """torchmetrics' FID (float64 feature accumulation, distributed sync, ``reset_real_features``) over any
        feature module, with the distance from ``trace_sqrt_product``: symmetric eigenproblems, and exact
        low-rank compression when there are fewer images than feature dimensions."""

        def compute(self) -> torch.Tensor:
            counts = (int(self.real_features_num_samples), int(self.fake_features_num_samples))
            if min(counts) < 2:
                raise RuntimeError(
                    f"a Fréchet distance needs at least 2 images on each side, got {counts[0]} and {counts[1]}"
                )
            moments = []
            for prefix, count in zip(("real", "fake"), counts):
                mean = getattr(self, f"{prefix}_features_sum") / count
                covariance = (getattr(self, f"{prefix}_features_cov_sum") - count * torch.outer(mean, mean)) / (
                    count - 1
                )
                moments += [mean, covariance]
            return _frechet_from_statistics(*moments, max_rank=counts[0] + counts[1] - 2).float()

    return FrechetDistance


def frechet_distance_metric(feature_extractor: nn.Module):
    """A Fréchet distance over ``feature_extractor`` (a module with ``num_features``): update(images, real=...).

    Real-image statistics survive ``reset()``, so one set of originals serves several tokenizers.
    """
    if not isinstance(getattr(feature_extractor, "num_features", None), int):
        raise ValueError(
            f"{type(feature_extractor).__name__} needs an integer num_features to drive a Fréchet distance"
        )
    return _frechet_distance_class()(feature=feature_extractor, reset_real_features=False)


def inception_score_metric(logits_extractor: nn.Module, splits: int = 10):
    """torchmetrics ``InceptionScore`` over an extractor returning class logits (``output="logits_unbiased"``)."""
    return _torchmetrics_image_class("inception", "InceptionScore")(feature=logits_extractor, splits=splits)


def compute_inception_score(metric, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over splits; torchmetrics shuffles before splitting, seeded here so results repeat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def statistics(metric, real: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, covariance, count) accumulated by a Fréchet metric for the real or the generated side."""
    prefix = "real" if real else "fake"
    count = int(getattr(metric, f"{prefix}_features_num_samples"))
    if count < 2:
        raise ValueError(
            f"Fréchet statistics need at least 2 {'reference' if real else 'generated'} images, got {count}"
        )
    total = getattr(metric, f"{prefix}_features_sum").double()
    mean = total / count
    covariance = (getattr(metric, f"{prefix}_features_cov_sum").double() - count * torch.outer(mean, mean)) / (
        count - 1
    )
    return mean.cpu().numpy(), covariance.cpu().numpy(), count


def set_statistics(metric, mean, covariance, real: bool, count: int = 50_000) -> None:
    """Make a Fréchet metric hold a Gaussian of the given mean / covariance for one side (e.g. a saved reference).

    ``count`` only scales the accumulators; the statistics torchmetrics recovers are ``mean`` and ``covariance``.
    """
    mean = torch.as_tensor(np.asarray(mean), dtype=torch.float64).flatten()
    covariance = torch.as_tensor(np.asarray(covariance), dtype=torch.float64)
    dim = metric.real_features_sum.shape[0]
    if mean.shape != (dim,) or covariance.shape != (dim, dim):
        raise ValueError(
            f"statistics of shape mu {tuple(mean.shape)}, sigma {tuple(covariance.shape)} do not fit features of "
            f"dimension {dim} (expected mu [{dim}], sigma [{dim}, {dim}])"
        )
    if count < 2:
        raise ValueError(f"count must be at least 2, got {count}")
    prefix = "real" if real else "fake"
    device = getattr(metric, f"{prefix}_features_sum").device
    setattr(metric, f"{prefix}_features_sum", (mean * count).to(device))
    setattr(
        metric, f"{prefix}_features_cov_sum", (covariance * (count - 1) + count * torch.outer(mean, mean)).to(device)
    )
    setattr(metric, f"{prefix}_features_num_samples", torch.tensor(count, device=device))
    # as after update(): no cached result, and a non-zero update count (else compute() warns)
    metric._computed = None
    metric._update_count = max(getattr(metric, "_update_count", 0), 1)


def frechet_distance(mean1, covariance1, mean2, covariance2) -> float:
    """Fréchet distance between two Gaussians (the formula every Fréchet metric here computes)."""
    as_tensor = lambda value: torch.as_tensor(np.asarray(value), dtype=torch.float64)  # noqa: E731
    mean1, mean2 = as_tensor(mean1).flatten(), as_tensor(mean2).flatten()
    covariance1, covariance2 = as_tensor(covariance1), as_tensor(covariance2)
    dim = mean1.shape[0]
    if mean2.shape != (dim,) or covariance1.shape != (dim, dim) or covariance2.shape != (dim, dim):
        raise ValueError(
            f"Gaussians of mismatched shapes: mu {tuple(mean1.shape)} / {tuple(mean2.shape)}, "
            f"sigma {tuple(covariance1.shape)} / {tuple(covariance2.shape)}"
        )
    return float(_frechet_from_statistics(mean1, covariance1, mean2, covariance2))


def save_reference_statistics(path: str | os.PathLike, mean: np.ndarray, covariance: np.ndarray) -> Path:
    """Write ``mu`` / ``sigma`` in the ADM reference-batch ``.npz`` layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=np.asarray(mean, dtype=np.float64), sigma=np.asarray(covariance, dtype=np.float64))
    return path


def load_reference_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an ADM-format ``.npz``: ``{"mu", "sigma"}`` statistics and/or ``{"images"}`` (uint8 NHWC ``arr_0``).

    Nothing is unpickled (``allow_pickle=False``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as error:
        raise ValueError(f"{str(path)!r} is not a readable .npz archive of arrays: {error}") from error
    result = {}
    if "mu" in contents and "sigma" in contents:
        result["mu"], result["sigma"] = contents["mu"], contents["sigma"]
    if "arr_0" in contents:
        images = contents["arr_0"]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{str(path)!r}: arr_0 must be a uint8 [N, H, W, 3] image batch (ADM layout), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        result["images"] = images
    if not result:
        raise ValueError(
            f"{str(path)!r} has neither mu/sigma statistics nor an arr_0 image batch; keys: {sorted(contents)}"
        )
    return result
