"""hf_vtok's metrics as ``evaluate`` modules: loaded offline from the package's scripts, composed with
``evaluate.combine``, saved with ``evaluate.save``, and equal to ``ReconstructionMetrics`` / ``GenerationMetrics``.

Feature networks are randomly initialised tiny or full networks; nothing downloads.
"""

import json

import numpy as np
import pytest
import torch

from hf_vtok.losses.lpips import LPIPS
from hf_vtok.metrics import (
    EVALUATE_MODULES,
    DinoFeatureExtractor,
    GenerationMetrics,
    ReconstructionMetrics,
    evaluate_module_path,
)
from hf_vtok.metrics.inception import NUM_LOGITS, POOL_FEATURES, InceptionOutput

evaluate = pytest.importorskip("evaluate")
pytest.importorskip("torchmetrics")


class SmallInception(torch.nn.Module):
    """FIDInceptionV3's interface (299 x 299 input, 2048 pool features, 1008 logits, ``fc``) at a fraction of its
    cost: both sides of each comparison run the same network, so a small one tests the bookkeeping as well."""

    def __init__(self, pool_features: int = POOL_FEATURES):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, pool_features // 16, kernel_size=7, stride=7)
        self.fc = torch.nn.Linear(pool_features, NUM_LOGITS)

    def forward(self, pixel_values):
        pool = torch.nn.functional.adaptive_avg_pool2d(self.conv(pixel_values).relu(), 4).flatten(1)
        unbiased = pool @ self.fc.weight.t()
        return InceptionOutput(pool, unbiased, unbiased + self.fc.bias)


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return SmallInception().eval()


@pytest.fixture(scope="module")
def tiny_dino():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14
    )
    return DinoFeatureExtractor(Dinov2Model(config), resolution=28)


@pytest.fixture(scope="module")
def lpips():
    torch.manual_seed(0)
    return LPIPS()


@pytest.fixture(scope="module")
def pairs():
    """Originals (real photographs, crops of several sizes) and imperfect reconstructions of them, in [0, 1]."""
    skimage_data = pytest.importorskip("skimage.data")
    photos = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee()]
    originals = []
    for index, photo in enumerate(photos * 2):
        size = 48 if index < 3 else 40
        crop = photo[index * 7 : index * 7 + size, index * 11 : index * 11 + size + 8]
        originals.append(torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255)
    generator = torch.Generator().manual_seed(0)
    reconstructions = [
        (image + 0.05 * torch.randn(image.shape, generator=generator)).clamp(0, 1) for image in originals
    ]
    return originals, reconstructions


def load(name, tmp_path, **kwargs):
    return evaluate.load(evaluate_module_path(name), cache_dir=str(tmp_path / "cache"), **kwargs)


def test_every_module_loads_offline_from_the_installed_package(tmp_path):
    for name in EVALUATE_MODULES:
        module = load(name, tmp_path)
        assert isinstance(module, evaluate.EvaluationModule) and module.name == name, name
        assert module.description and "hf_vtok" in evaluate_module_path(name)
    with pytest.raises(ValueError, match="no hf_vtok evaluate module 'fid'"):
        evaluate_module_path("fid")


def test_combined_reconstruction_modules_equal_reconstruction_metrics(pairs, inception, tiny_dino, lpips, tmp_path):
    originals, reconstructions = pairs
    expected = ReconstructionMetrics("psnr,ssim,lpips,rfid,fdd", lpips=lpips, inception=inception, dino=tiny_dino)
    for start in (0, 3):
        expected.update(originals[start : start + 3], reconstructions[start : start + 3])
    expected = expected.compute()

    networks = {"lpips": {"lpips": lpips}, "rfid": {"inception": inception}, "fdd": {"dino": tiny_dino}}
    modules = [load(name, tmp_path, **networks.get(name, {})) for name in ("psnr", "ssim", "lpips", "rfid", "fdd")]
    combined = evaluate.combine(modules)
    for start in (0, 3):  # added per batch: only scores and features are cached
        combined.add_batch(predictions=reconstructions[start : start + 3], references=originals[start : start + 3])
    results = combined.compute()
    assert results.keys() == expected.keys()
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert results["rfid"] > 0 and results["fdd"] > 0
    path = evaluate.save(str(tmp_path / "results.json"), **results, model="tiny")
    saved = json.loads(path.read_text())
    assert saved["psnr"] == results["psnr"] and saved["model"] == "tiny" and "_evaluate_version" in saved


def test_modules_take_tensors_pil_and_single_examples(pairs, tmp_path):
    from PIL import Image

    originals, reconstructions = pairs
    psnr = load("psnr", tmp_path)
    batch = torch.stack(originals[:3]), torch.stack(reconstructions[:3])
    as_tensor = psnr.compute(predictions=batch[1], references=batch[0])["psnr"]
    to_pil = lambda image: Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))  # noqa: E731
    psnr.add(prediction=to_pil(reconstructions[0]), reference=to_pil(originals[0]))
    as_pil = psnr.compute()["psnr"]
    assert as_tensor > 20 and abs(as_pil - load("psnr", tmp_path).compute(
        predictions=reconstructions[:1], references=originals[:1])["psnr"]) < 0.5  # fmt: skip
    with pytest.raises(ValueError, match="must have the same size"):
        psnr.add_batch(predictions=[torch.rand(3, 8, 8)], references=[torch.rand(3, 8, 9)])
    with pytest.raises(ValueError, match="RGB image"):
        load("ssim", tmp_path).add_batch(predictions=[torch.rand(8, 8)], references=[torch.rand(8, 8)])


def test_frechet_references_can_be_kept_features(pairs, inception, tmp_path):
    """One pass over the originals serves several tokenizers: their features are passed as references."""
    originals, reconstructions = pairs
    rfid = load("rfid", tmp_path, inception=inception)
    from_images = rfid.compute(predictions=reconstructions, references=originals)["rfid"]
    features = rfid.reference_features(originals)
    assert features.shape == (len(originals), 2048) and features.dtype == np.float32
    assert rfid.compute(predictions=reconstructions, references=features)["rfid"] == pytest.approx(from_images)
    assert abs(rfid.compute(predictions=originals, references=features)["rfid"]) < 1e-2


def test_generation_modules_equal_generation_metrics(inception, tmp_path):
    generator = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    reference = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=generator)
    expected_metrics = GenerationMetrics(inception, inception_score_splits=2)
    expected_metrics.add_reference(reference)
    expected_metrics.update(samples[:3])
    expected_metrics.update(samples[3:])
    expected = expected_metrics.compute(seed=0)
    gfid, inception_score = (
        load("gfid", tmp_path, inception=inception),
        load("inception_score", tmp_path, inception=inception),
    )
    combined = evaluate.combine([gfid, inception_score])
    combined.add_batch(predictions=samples[:3])
    combined.add_batch(predictions=samples[3:])
    results = combined.compute(reference=reference, splits=2, seed=0)
    assert results["gfid"] == pytest.approx(expected["gfid"], rel=1e-5)
    assert results["is"] == pytest.approx(expected["is"], rel=1e-6)
    assert results["is_std"] == pytest.approx(expected["is_std"], rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="needs compute\\(reference=...\\)"):
        gfid.compute(predictions=samples)


def test_gfid_against_reference_statistics(tmp_path):
    """An ADM .npz's mu / sigma (or a dict of them) instead of reference images: the same distance. (64-d features:
    a full-rank 2048-d reference covariance costs two 2048^3 eigensolves.)"""
    from hf_vtok.metrics import save_reference_statistics

    torch.manual_seed(0)
    network = SmallInception(pool_features=64).eval()
    generator = torch.Generator().manual_seed(1)
    samples = torch.rand(6, 3, 32, 32, generator=generator)
    reference = torch.rand(80, 3, 32, 32, generator=generator)
    gfid = load("gfid", tmp_path, inception=network)
    from_images = gfid.compute(predictions=samples, reference=reference)["gfid"]
    features = load("rfid", tmp_path, inception=network).reference_features(reference).astype(np.float64)
    mu, sigma = features.mean(0), np.cov(features, rowvar=False)
    npz = save_reference_statistics(tmp_path / "reference.npz", mu, sigma)
    assert gfid.compute(predictions=samples, reference={"mu": mu, "sigma": sigma})["gfid"] == pytest.approx(
        from_images, rel=1e-4
    )
    assert gfid.compute(predictions=samples, reference=str(npz))["gfid"] == pytest.approx(from_images, rel=1e-4)


def test_hf_vtok_eval_computes_through_the_modules_with_the_same_numbers(
    pairs, inception, tiny_dino, lpips, tmp_path, monkeypatch
):
    """``hf-vtok eval``'s scores (two tokenizers: the originals' features are kept for the second) equal those of
    ``ReconstructionMetrics``, the scorer it used before, on the same run."""
    from PIL import Image

    import hf_vtok
    from hf_vtok.commands import evaluate as eval_command
    from hf_vtok.metrics import evaluate_metrics

    photos = tmp_path / "photos"
    photos.mkdir()
    originals, _ = pairs
    for index, image in enumerate(originals):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(photos / f"{index}.png")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = hf_vtok.ViTokModel(hf_vtok.ViTokConfig.from_variant("w32_d1_h2-w32_d1_h2/1x8x4"))
        model.save_pretrained(tmp_path / f"vitok{seed}")
        hf_vtok.ViTokImageProcessor(patch_size=8).save_pretrained(tmp_path / f"vitok{seed}")
        models.append(str(tmp_path / f"vitok{seed}"))
    networks = {"lpips": lpips, "inception": inception, "dino": tiny_dino}
    added = []
    monkeypatch.setattr(evaluate_metrics.Rfid, "reduce_batch", _spy(evaluate_metrics.Rfid.reduce_batch, added))

    def run(out):
        return eval_command.evaluate_reconstruction(
            models, str(photos), "psnr,ssim,lpips,rfid,fdd", networks=networks, out=tmp_path / out,
            resolution=32, batch_size=4,
        )  # fmt: skip

    through_evaluate = run("new")["models"]
    assert len(added) == 4  # 2 tokenizers x 2 batches went through the rFID module
    monkeypatch.setattr(evaluate_metrics, "ReconstructionEvaluation", _old_scorer)
    before = run("old")["models"]
    for new, old in zip(through_evaluate, before):
        for name in ("psnr", "ssim", "lpips", "rfid", "fdd"):
            assert new[name] == pytest.approx(old[name], rel=1e-5, abs=1e-6), (new["name"], name)


def _spy(function, calls):
    def spied(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return function(self, *args, **kwargs)

    return spied


def _old_scorer(metrics, keep_reference_features=True, **networks):
    return ReconstructionMetrics(metrics, **networks)
