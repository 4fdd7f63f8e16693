"""Fréchet distances (rFID, gFID, FDD) and the Inception Score, on torchmetrics with hf_vtok's feature networks.

torchmetrics' ``FrechetInceptionDistance`` takes any feature module (``feature=``) and accumulates the
feature mean and covariance in float64; it is used here for every Fréchet distance, only the feature
network changes. Reference statistics can be read from / written to ``.npz`` files in the format of the
ADM evaluation suite (``mu``, ``sigma``; a reference batch ``arr_0`` of uint8 NHWC images).
"""

import importlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

_INSTALL_HINT = "the evaluation metrics need torchmetrics: pip install 'hf_vtok[eval]'"


def _torchmetrics_class(module: str, name: str):
    # the submodules, not torchmetrics.image: that package exports FID / IS only when torch-fidelity is installed
    try:
        return getattr(importlib.import_module(f"torchmetrics.image.{module}"), name)
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error


def frechet_distance_metric(feature_extractor: nn.Module):
    """torchmetrics ``FrechetInceptionDistance`` over ``feature_extractor`` (a module with ``num_features``).

    Real-image statistics survive ``reset()``, so one set of originals serves several tokenizers.
    """
    if not isinstance(getattr(feature_extractor, "num_features", None), int):
        raise ValueError(f"{type(feature_extractor).__name__} needs an integer num_features to drive a Fréchet distance")
    fid_class = _torchmetrics_class("fid", "FrechetInceptionDistance")
    return fid_class(feature=feature_extractor, reset_real_features=False)


def inception_score_metric(logits_extractor: nn.Module, splits: int = 10):
    """torchmetrics ``InceptionScore`` over an extractor returning class logits (``output="logits_unbiased"``)."""
    return _torchmetrics_class("inception", "InceptionScore")(feature=logits_extractor, splits=splits)


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
        raise ValueError(f"Fréchet statistics need at least 2 {'reference' if real else 'generated'} images, got {count}")
    total = getattr(metric, f"{prefix}_features_sum").double()
    mean = total / count
    covariance = (getattr(metric, f"{prefix}_features_cov_sum").double() - count * torch.outer(mean, mean)) / (count - 1)
    return mean.cpu().numpy(), covariance.cpu().numpy(), count


def set_statistics(metric, mean, covariance, real: bool, count: int = 50_000) -> None:
    """Make a Fréchet metric hold a Gaussian of the given mean / covariance for one side (e.g. a saved reference).

    ``count`` only scales the accumulators; the statistics torchmetrics recovers are ``mean`` and ``covariance``.
    """
    mean = torch.as_tensor(np.asarray(mean), dtype=torch.float64).flatten()
    covariance = torch.as_tensor(np.asarray(covariance), dtype=torch.float64)
    dim = getattr(metric, "real_features_sum").shape[0]
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
    setattr(metric, f"{prefix}_features_cov_sum", (covariance * (count - 1) + count * torch.outer(mean, mean)).to(device))
    setattr(metric, f"{prefix}_features_num_samples", torch.tensor(count, device=device))
    # what update() would have left behind: the output dtype, a cleared result cache, a non-zero update count
    if not hasattr(metric, "orig_dtype"):
        metric.orig_dtype = torch.float64
    metric._computed = None
    metric._update_count = max(getattr(metric, "_update_count", 0), 1)


def frechet_distance(mean1, covariance1, mean2, covariance2) -> float:
    """Fréchet distance between two Gaussians, computed by the same torchmetrics code as every metric here."""
    dim = np.asarray(mean1).size

    class _Dimension(nn.Module):  # a feature module is required by torchmetrics; it is never called here
        num_features = dim

    metric = frechet_distance_metric(_Dimension())
    set_statistics(metric, mean1, covariance1, real=True)
    set_statistics(metric, mean2, covariance2, real=False)
    return float(metric.compute())


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
        raise ValueError(f"{str(path)!r} has neither mu/sigma statistics nor an arr_0 image batch; keys: {sorted(contents)}")
    return result
