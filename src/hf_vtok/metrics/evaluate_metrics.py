"""hf_vtok's image metrics as ``evaluate`` modules: PSNR, SSIM, LPIPS, rFID, FDD (reconstruction), gFID and the
Inception Score (generation). The scripts ``evaluate.load`` reads are in ``hf_vtok/metrics/evaluate_modules/``
(``hf_vtok.metrics.evaluate_module_path``); each holds one class of this module.

    import evaluate
    from hf_vtok.metrics import evaluate_module_path
    psnr = evaluate.load(evaluate_module_path("psnr"))
    scores = evaluate.combine([psnr, evaluate.load(evaluate_module_path("ssim"))])
    scores.add_batch(predictions=reconstructions, references=originals)   # [B, 3, H, W] in [0, 1], lists, PIL
    results = scores.compute()                                             # {"psnr": ..., "ssim": ...}
    evaluate.save("eval/", **results)

Images are scored (or turned into features) as each batch is added, and only those numbers are cached: one value
per image for PSNR / SSIM / LPIPS, one feature vector per image for the Fréchet distances and the Inception Score
(2048 floats for rFID instead of the image's 196 608 at 256x256). The numbers equal ``ReconstructionMetrics`` /
``GenerationMetrics`` (the same functions and torchmetrics accumulators). Feature networks are passed in
(``evaluate.load(path, inception=network)``) or loaded on first use from ``inception_weights`` /
``lpips_vgg_weights`` / ``fdd_model`` as the CLI's options do.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..losses.lpips import LPIPS
from .dino import DEFAULT_FDD_MODEL, DEFAULT_FDD_RESOLUTION, DinoFeatureExtractor
from .frechet import (
    compute_inception_score,
    frechet_distance_metric,
    inception_score_metric,
    load_reference_npz,
    set_statistics,
)
from .image_quality import psnr, ssim
from .inception import FIDInceptionV3, InceptionFeatureExtractor

_CITATION = "@misc{hf_vtok, title={hf_vtok: visual tokenizers for the Hugging Face stack}}"
_SCORE_FEATURES = datasets.Features(
    {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
)  # a score per image, and the image's pixel count
# a feature vector per image, as the bytes of its float32 values (a list column would come back as Python floats)
_PAIR_FEATURES = datasets.Features({"predictions": datasets.Value("binary"), "references": datasets.Value("binary")})
_GENERATED_FEATURES = datasets.Features({"predictions": datasets.Value("binary")})


def _rows_to_bytes(rows: np.ndarray) -> list[bytes]:
    return [np.ascontiguousarray(row, dtype=np.float32).tobytes() for row in rows]


def _bytes_to_rows(column) -> np.ndarray:
    """The cached column of feature bytes -> ``[N, D]`` float32."""
    column = list(column)
    if not column:
        return np.zeros((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(column), dtype=np.float32).reshape(len(column), -1)


_IMAGES = """
    predictions: images in [0, 1]: a [B, 3, H, W] float tensor / array, a list of [3, H, W] tensors (any sizes),
        PIL images or uint8 [H, W, 3] arrays.
    references: the originals, in the same forms and sizes."""


def as_images(images, name: str = "images") -> list[torch.Tensor]:
    """Any batch of images -> a list of float32 ``[3, H, W]`` tensors in [0, 1]."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and np.ndim(images) == 4:
        images = list(torch.as_tensor(images))
    if not isinstance(images, (list, tuple)):
        raise ValueError(f"{name} must be a batch: a [B, 3, H, W] tensor or a list of images, got {type(images)}")
    converted = []
    for index, image in enumerate(images):
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image))  # a writable copy
        if tensor.dim() == 3 and tensor.shape[-1] == 3 and tensor.shape[0] != 3:  # HWC
            tensor = tensor.permute(2, 0, 1)
        if tensor.dim() != 3 or tensor.shape[0] != 3:
            raise ValueError(
                f"{name}[{index}] must be an RGB image [3, H, W] (or HWC / PIL), got {tuple(tensor.shape)}"
            )
        tensor = tensor.float() / 255 if tensor.dtype == torch.uint8 else tensor.float()
        converted.append(tensor)
    return converted


def size_groups(predictions: list[torch.Tensor], references: list[torch.Tensor]) -> list[list[int]]:
    """Indices of the pairs, grouped by image size (each group is scored as one batch); shapes are checked."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    groups: dict[tuple, list[int]] = {}
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        if prediction.shape != reference.shape:
            raise ValueError(
                f"image {index}: prediction {tuple(prediction.shape)} and reference {tuple(reference.shape)} must "
                "have the same size"
            )
        groups.setdefault(tuple(reference.shape), []).append(index)
    return list(groups.values())


class _ImageMetric(evaluate.Metric):
    """Base of the modules: images are reduced as they are added (``reduce_batch``), only the result is cached."""

    def __init__(self, *args, device: str | torch.device = "cpu", **kwargs):
        self.device = torch.device(device)
        super().__init__(*args, **kwargs)

    def _module_info(self, description: str, features, inputs: str = _IMAGES) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=description,
            citation=_CITATION,
            inputs_description=inputs,
            features=features,  # python format: numpy's fixed-width bytes would drop trailing zero bytes
            homepage="https://github.com/hf-vtok/hf_vtok",
        )

    def reduce_batch(self, predictions, references) -> dict:
        """The columns cached for one batch."""
        raise NotImplementedError

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Score a batch now and cache only the result (evaluate appends the inputs' description here)."""
        return super().add_batch(**self.reduce_batch(predictions, references), **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """``add_batch`` of one example."""
        return self.add_batch(
            predictions=[prediction], references=None if reference is None else [reference], **kwargs
        )


class _PerImageScore(_ImageMetric):
    """A score of each (reconstruction, original) pair, averaged over images."""

    key = ""
    description = ""

    def _info(self):
        return self._module_info(self.description, _SCORE_FEATURES)

    def score(self, predictions: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """``[B]`` scores of ``[B, 3, H, W]`` batches of one size in [0, 1]."""
        raise NotImplementedError

    @torch.no_grad()
    def reduce_batch(self, predictions, references) -> dict:
        predictions, references = as_images(predictions, "predictions"), as_images(references, "references")
        scores, pixels = [0.0] * len(predictions), [0] * len(predictions)
        for indices in size_groups(predictions, references):
            batch = [
                torch.stack([side[i] for i in indices]).to(self.device).clamp(0, 1)
                for side in (predictions, references)
            ]
            for index, value in zip(indices, self.score(*batch).double().cpu().tolist()):
                scores[index], pixels[index] = value, references[index].shape[-2] * references[index].shape[-1]
        return {"predictions": scores, "references": pixels}

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError(f"{self.key}: no images were added")
        return {self.key: float(np.mean(np.asarray(predictions, dtype=np.float64)))}


class Psnr(_PerImageScore):
    key = "psnr"
    description = "PSNR in dB of each reconstruction against its original (images in [0, 1]), averaged over images."

    def score(self, predictions, references):
        return psnr(predictions, references)


class Ssim(_PerImageScore):
    key = "ssim"
    description = "SSIM (Gaussian window of min(H, W, 11) pixels, sigma 1.5) of each pair, averaged over images."

    def score(self, predictions, references):
        return ssim(predictions, references)


class Lpips(_PerImageScore):
    key = "lpips"
    description = "LPIPS (VGG16, v0.1 heads) of each reconstruction against its original, averaged over images."

    def __init__(self, *args, lpips: LPIPS | None = None, lpips_vgg_weights=None, lpips_head_weights=None, **kwargs):
        self.network, self._weights = lpips, (lpips_vgg_weights, lpips_head_weights)
        super().__init__(*args, **kwargs)

    def score(self, predictions, references):
        if self.network is None:
            self.network = LPIPS.from_pretrained(*self._weights)
        self.network = self.network.to(self.device)
        return self.network(2 * predictions - 1, 2 * references - 1)


class _Features(nn.Module):
    """Features already computed: a Fréchet / IS accumulator over them (torchmetrics runs its ``feature`` module)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _inception(network, weights):
    return network if network is not None else FIDInceptionV3.from_pretrained(weights)


class _FrechetDistance(_ImageMetric):
    """A Fréchet distance between the feature Gaussians of the predictions and the references. ``references`` may be
    features already computed (``[B, D]``, from ``reference_features``) so that one set of originals serves several
    tokenizers."""

    key = ""
    description = ""

    def _info(self):
        inputs = _IMAGES + "\n    references may also be their features [B, D] (reference_features(images))."
        return self._module_info(self.description, _PAIR_FEATURES, inputs)

    def extractor(self) -> nn.Module:
        """The feature module (images ``[B, 3, H, W]`` in [0, 1] -> ``[B, D]``), built on first use."""
        raise NotImplementedError

    @torch.no_grad()
    def extract_features(self, images: list[torch.Tensor]) -> np.ndarray:
        """``[B, D]`` float32 features of images of any sizes (one batch per size)."""
        extractor = self.extractor()
        rows = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(index)
        for indices in groups.values():
            batch = torch.stack([images[i] for i in indices]).to(self.device).clamp(0, 1)
            for index, row in zip(indices, extractor(batch).float().cpu().numpy()):
                rows[index] = row
        return np.stack(rows)

    def reference_features(self, references) -> np.ndarray:
        """The features of reference images, to pass as ``references`` again later."""
        return self.extract_features(as_images(references, "references"))

    def reduce_batch(self, predictions, references) -> dict:
        predictions = as_images(predictions, "predictions")
        if isinstance(references, (np.ndarray, torch.Tensor)) and np.ndim(references) == 2:
            reference_rows = np.asarray(references, dtype=np.float32)
        else:
            images = as_images(references, "references")
            size_groups(predictions, images)
            reference_rows = self.extract_features(images)
        if len(reference_rows) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions but {len(reference_rows)} reference features")
        return {
            "predictions": _rows_to_bytes(self.extract_features(predictions)),
            "references": _rows_to_bytes(reference_rows),
        }

    def _compute(self, predictions, references):
        fake, real = _bytes_to_rows(predictions), _bytes_to_rows(references)
        if min(len(fake), len(real)) < 2:
            raise ValueError(f"{self.key} needs at least 2 images, got {len(fake)}")
        metric = frechet_distance_metric(_Features(fake.shape[1]))
        metric.update(torch.from_numpy(real.copy()), real=True)
        metric.update(torch.from_numpy(fake.copy()), real=False)
        return {self.key: float(metric.compute())}


class _InceptionModule:
    """The FID-InceptionV3 of a module: ``inception=`` (a network), else loaded from ``inception_weights`` on first
    use; ``output`` is the feature it reads (pool features, or the class logits of the Inception Score)."""

    output = "pool_features"

    def __init__(self, *args, inception=None, inception_weights=None, input_convention="pytorch-fid", **kwargs):
        self.network, self._weights, self.input_convention = inception, inception_weights, input_convention
        self._extractor = None
        super().__init__(*args, **kwargs)

    def extractor(self) -> nn.Module:
        if self._extractor is None:
            network = _inception(self.network, self._weights).to(self.device)
            self._extractor = InceptionFeatureExtractor(network, self.output, self.input_convention)
        return self._extractor


class Rfid(_InceptionModule, _FrechetDistance):
    key = "rfid"
    description = "rFID: Fréchet distance of FID-InceptionV3 pool features of reconstructions and their originals."


class Fdd(_FrechetDistance):
    key = "fdd"
    description = "FDD: Fréchet distance of DINOv2 / DINOv3 class tokens of reconstructions and their originals."

    def __init__(self, *args, dino=None, fdd_model=DEFAULT_FDD_MODEL, fdd_resolution=DEFAULT_FDD_RESOLUTION, **kwargs):
        self.network, self._source = dino, (fdd_model, fdd_resolution)
        super().__init__(*args, **kwargs)

    def extractor(self):
        if self.network is None:
            self.network = DinoFeatureExtractor.from_pretrained(*self._source)
        self.network = self.network.to(self.device)
        return self.network


_GENERATED = """
    predictions: generated images, [B, 3, H, W] (uint8, or float in [0, 1]), a list of them, or PIL images."""


class _Generated(_InceptionModule, _ImageMetric):
    """Generation metrics over Inception features of the generated images alone."""

    @torch.no_grad()
    def reduce_batch(self, predictions, references=None) -> dict:
        if isinstance(predictions, torch.Tensor) and predictions.dim() == 4 and predictions.dtype == torch.uint8:
            batch = predictions  # the ADM sample layout, as GenerationMetrics takes it
        else:
            images = as_images(predictions, "predictions")
            batch = torch.stack(images) if len({tuple(image.shape) for image in images}) == 1 else None
            if batch is None:
                raise ValueError("generated images of one batch must share one size")
        return {"predictions": _rows_to_bytes(self.extractor()(batch.to(self.device)).float().cpu().numpy())}


class Gfid(_Generated):
    description = (
        "gFID: Fréchet distance of FID-InceptionV3 pool features of generated images against reference statistics "
        "(compute(reference=...): an ADM .npz with mu / sigma or an arr_0 image batch, a {'mu', 'sigma'} dict, or "
        "reference images [N, 3, H, W])."
    )

    def _info(self):
        return self._module_info(self.description, _GENERATED_FEATURES, _GENERATED)

    def _compute(self, predictions, reference=None, splits=None, seed=None):
        # splits / seed: the Inception Score's arguments, which evaluate.combine passes to every module
        fake = _bytes_to_rows(predictions)
        if len(fake) < 2:
            raise ValueError(f"gfid needs at least 2 generated images, got {len(fake)}")
        if reference is None:
            raise ValueError("gfid needs compute(reference=...): an ADM .npz, {'mu', 'sigma'}, or reference images")
        if isinstance(reference, (str, bytes)) or hasattr(reference, "__fspath__"):
            reference = load_reference_npz(reference)
        metric = frechet_distance_metric(_Features(fake.shape[1]))
        if isinstance(reference, dict) and "mu" in reference:
            set_statistics(metric, reference["mu"], reference["sigma"], real=True)
        else:
            images = reference["images"] if isinstance(reference, dict) else reference
            images = torch.as_tensor(images)
            if images.dtype == torch.uint8 and images.shape[-1] == 3:  # ADM's NHWC
                images = images.permute(0, 3, 1, 2)
            with torch.no_grad():
                features = [self.extractor()(chunk.to(self.device)).float().cpu() for chunk in images.split(64)]
            metric.update(torch.cat(features), real=True)
        metric.update(torch.from_numpy(fake.copy()), real=False)
        return {"gfid": float(metric.compute())}


class InceptionScore(_Generated):
    output = "logits_unbiased"
    description = "Inception Score (mean and std over splits) of the FID-InceptionV3 class logits of generated images."

    def _info(self):
        return self._module_info(self.description, _GENERATED_FEATURES, _GENERATED)

    def _compute(self, predictions, splits: int = 10, seed: int = 0, reference=None):
        # reference: gFID's argument, which evaluate.combine passes to every module
        logits = torch.from_numpy(_bytes_to_rows(predictions).copy())
        if len(logits) < 2:
            raise ValueError(f"the Inception Score needs at least 2 generated images, got {len(logits)}")
        metric = inception_score_metric(_Features(logits.shape[1]), splits=splits)
        metric.update(logits)
        mean, std = compute_inception_score(metric, seed=seed)
        return {"is": mean, "is_std": std}


MODULES = {
    "psnr": Psnr,
    "ssim": Ssim,
    "lpips": Lpips,
    "rfid": Rfid,
    "fdd": Fdd,
    "gfid": Gfid,
    "inception_score": InceptionScore,
}


class ReconstructionEvaluation:
    """``ReconstructionMetrics``' interface (``update`` / ``compute`` / ``reset`` / ``num_images``), computed through
    the ``evaluate`` modules, loaded from their scripts (``evaluate.load``) and composed with ``evaluate.combine``.

    ``keep_reference_features``: the originals' rFID / FDD features of the first pass (``update_real=True``) are kept
    (float32, ``D`` per image: 2048 for rFID) and given as references to later passes (``update_real=False``), so
    several tokenizers share one run of the feature networks over the originals, as ``ReconstructionMetrics`` does.
    """

    def __init__(
        self,
        metrics=("psnr", "ssim"),
        *,
        lpips: LPIPS | None = None,
        inception: FIDInceptionV3 | None = None,
        fid_input_convention: str = "pytorch-fid",
        dino: DinoFeatureExtractor | None = None,
        device: str | torch.device = "cpu",
        keep_reference_features: bool = True,
    ):
        import tempfile

        from . import evaluate_module_path
        from .reconstruction import RECONSTRUCTION_METRICS, parse_metric_names

        self.metrics = parse_metric_names(metrics, RECONSTRUCTION_METRICS)
        needs = {"lpips": lpips, "rfid": inception, "fdd": dino}
        missing = [name for name, module in needs.items() if name in self.metrics and module is None]
        if missing:
            raise ValueError(f"metrics {missing} need their feature network (lpips=, inception=, dino=)")
        networks = {
            "lpips": {"lpips": lpips},
            "rfid": {"inception": inception, "input_convention": fid_input_convention},
            "fdd": {"dino": dino},
        }
        # a cache folder of its own: concurrent runs never share evaluate's default cache files
        self._cache = tempfile.TemporaryDirectory(prefix="hf_vtok_evaluate_")
        self.modules = {
            name: evaluate.load(
                evaluate_module_path(name), cache_dir=self._cache.name, device=device, **networks.get(name, {})
            )
            for name in self.metrics
        }
        self.combined = evaluate.combine(list(self.modules.values()))
        self.keep_reference_features = keep_reference_features
        self._reference_features: dict[str, list[np.ndarray]] = {name: [] for name in ("rfid", "fdd")}
        self.reset()

    def reset(self) -> None:
        """Start a new pass (the kept reference features stay)."""
        self.num_images = 0
        self._batches = 0

    def update(self, originals, reconstructions, update_real: bool = True) -> None:
        originals, reconstructions = as_images(originals, "originals"), as_images(reconstructions, "reconstructions")
        size_groups(reconstructions, originals)  # the errors of ReconstructionMetrics, before any work
        for name, module in self.modules.items():
            references = originals
            if isinstance(module, _FrechetDistance):
                kept = self._reference_features[name]
                if update_real:
                    references = module.reference_features(originals)
                    if self.keep_reference_features:
                        kept.append(references)
                elif self._batches < len(kept):
                    references = kept[self._batches]
                else:
                    raise ValueError(f"{name}: no reference features kept for batch {self._batches}; update_real=True")
            module.add_batch(predictions=reconstructions, references=references)
        self.num_images += len(originals)
        self._batches += 1

    def compute(self) -> dict[str, float]:
        if self.num_images == 0:
            raise ValueError("no images were scored")
        for name in ("rfid", "fdd"):
            if name in self.metrics and self.num_images < 2:
                raise ValueError(f"{name} needs at least 2 images, got {self.num_images}")
        results = self.combined.compute()
        return {name: results[name] for name in self.metrics}


__all__ = [
    "MODULES",
    "Fdd",
    "Gfid",
    "InceptionScore",
    "Lpips",
    "Psnr",
    "ReconstructionEvaluation",
    "Rfid",
    "Ssim",
    "as_images",
    "size_groups",
]
