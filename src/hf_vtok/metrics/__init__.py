"""Image metrics: PSNR, SSIM, LPIPS, rFID / gFID (FID InceptionV3 in plain torch), FDD (DINO), Inception Score.

PSNR / SSIM and the Fréchet / Inception-Score accumulators come from torchmetrics (``pip install 'hf_vtok[eval]'``,
imported on first use);
the feature networks are hf_vtok's own and load the published weights from a path, URL or ``hf://`` file.
Each metric is also an ``evaluate`` module (``hf_vtok.metrics.evaluate_metrics``), loaded offline from the installed
package: ``evaluate.load(evaluate_module_path("psnr"))``.
"""

from pathlib import Path

from ..losses.lpips import LPIPS
from .dino import DEFAULT_FDD_MODEL, DEFAULT_FDD_RESOLUTION, DinoFeatureExtractor
from .frechet import (
    compute_inception_score,
    frechet_distance,
    frechet_distance_metric,
    inception_score_metric,
    load_reference_npz,
    save_reference_statistics,
    set_statistics,
    statistics,
    trace_sqrt_product,
)
from .generation import GenerationMetrics
from .image_quality import psnr, ssim
from .inception import (
    FID_INCEPTION_URL,
    INPUT_CONVENTIONS,
    TORCH_FIDELITY_INCEPTION_URL,
    FIDInceptionV3,
    InceptionFeatureExtractor,
    prepare_inception_input,
)
from .reconstruction import RECONSTRUCTION_METRICS, ReconstructionMetrics, parse_metric_names

EVALUATE_MODULES = ("psnr", "ssim", "lpips", "rfid", "fdd", "gfid", "inception_score")
_EVALUATE_SCRIPTS = Path(__file__).resolve().parent / "evaluate_modules"


def evaluate_module_path(name: str) -> str:
    """The folder of an ``evaluate`` module script shipped with hf_vtok, for ``evaluate.load`` (offline)."""
    if name not in EVALUATE_MODULES:
        raise ValueError(f"no hf_vtok evaluate module {name!r}; choose from {', '.join(EVALUATE_MODULES)}")
    return str(_EVALUATE_SCRIPTS / name)


__all__ = [
    "DEFAULT_FDD_MODEL",
    "EVALUATE_MODULES",
    "DEFAULT_FDD_RESOLUTION",
    "FID_INCEPTION_URL",
    "INPUT_CONVENTIONS",
    "LPIPS",
    "RECONSTRUCTION_METRICS",
    "TORCH_FIDELITY_INCEPTION_URL",
    "DinoFeatureExtractor",
    "FIDInceptionV3",
    "GenerationMetrics",
    "InceptionFeatureExtractor",
    "ReconstructionMetrics",
    "compute_inception_score",
    "evaluate_module_path",
    "frechet_distance",
    "frechet_distance_metric",
    "inception_score_metric",
    "load_reference_npz",
    "parse_metric_names",
    "prepare_inception_input",
    "psnr",
    "save_reference_statistics",
    "set_statistics",
    "ssim",
    "statistics",
    "trace_sqrt_product",
]
