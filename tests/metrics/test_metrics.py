"""hf_vtok.metrics and the LPIPS network: layouts of the published weights, hand-computed values, FID(set, set) = 0.

Feature networks are randomly initialised; nothing downloads. The only published weights read are the LPIPS
v0.1 heads that ship inside the torchmetrics wheel.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.losses.lpips import LPIPS, LPIPS_CHANNELS, VGG16Features, _bundled_heads_path
from hf_vtok.metrics import (
    FID_INCEPTION_URL,
    DinoFeatureExtractor,
    FIDInceptionV3,
    GenerationMetrics,
    InceptionFeatureExtractor,
    ReconstructionMetrics,
    compute_inception_score,
    frechet_distance,
    frechet_distance_metric,
    inception_score_metric,
    load_reference_npz,
    parse_metric_names,
    prepare_inception_input,
    psnr,
    save_reference_statistics,
    set_statistics,
    ssim,
    statistics,
    trace_sqrt_product,
)

LAYOUT_FILE = Path(__file__).resolve().parents[1] / "data" / "fid_inception_2015_12_05_layout.json"


class GivenFeatures(torch.nn.Module):
    """A feature "network" whose inputs already are the features (statistics checks without images)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features):
        return features


@pytest.fixture(scope="module")
def inception():
    return FIDInceptionV3()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A real photograph (scikit-image's astronaut), 96 x 96, as [1, 3, H, W] in [0, 1]."""
    skimage_data = pytest.importorskip("skimage.data")
    array = skimage_data.astronaut()[:192:2, 96:288:2]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255


# ---------------------------------------------------------------------------------------------- Inception
def test_inception_has_the_published_fid_weight_layout(inception):
    expected = json.loads(LAYOUT_FILE.read_text())
    actual = {key: list(value.shape) for key, value in inception.state_dict().items()}
    assert len(expected) == 566 and list(actual) == list(expected)
    assert actual == expected
    assert actual["fc.weight"] == [1008, 2048] and actual["Conv2d_1a_3x3.conv.weight"] == [32, 3, 3, 3]
    assert sum(parameter.numel() for parameter in inception.parameters()) == 23_850_960


def test_inception_loads_files_with_and_without_batch_norm_counters(inception, tmp_path):
    state = {
        key: value + 0.01 if value.is_floating_point() else value for key, value in inception.state_dict().items()
    }
    without_counters = {key: value for key, value in state.items() if not key.endswith("num_batches_tracked")}
    torch.save(without_counters, tmp_path / "pt_inception.pth")  # pytorch-fid's file format
    save_file(state, tmp_path / "inception.safetensors")
    for name in ("pt_inception.pth", "inception.safetensors"):
        loaded = FIDInceptionV3.from_pretrained(tmp_path / name)
        assert torch.equal(loaded.fc.weight, state["fc.weight"])
        assert not loaded.training and not loaded.fc.weight.requires_grad
    broken = dict(state)
    broken.pop("Mixed_6b.branch7x7_2.conv.weight")
    broken["Mixed_7c.extra.weight"] = torch.zeros(1)
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"Mixed_6b\.branch7x7_2\.conv\.weight.*\n.*Mixed_7c\.extra"):
        FIDInceptionV3.from_pretrained(tmp_path / "broken.safetensors")


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pytorch-fid/releases"):
        FIDInceptionV3.from_pretrained(tmp_path / "absent.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1.*" + FID_INCEPTION_URL.split("/")[-1]):
        FIDInceptionV3.from_pretrained(FID_INCEPTION_URL)  # offline in tests: only the (empty) cache is used
    with pytest.raises(FileNotFoundError, match="vgg16-397923af"):
        LPIPS.from_pretrained(tmp_path / "absent_vgg.pth")
    with pytest.raises(FileNotFoundError, match="hf://owner/repo/weights.pth"):
        FIDInceptionV3.from_pretrained("hf://owner/repo/weights.pth")  # Hub files: offline and not cached
    with pytest.raises(ValueError, match="hf://owner/repo/path/to/file"):
        FIDInceptionV3.from_pretrained("hf://owner/weights.pth")


def test_inception_input_conventions():
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    fidelity = prepare_inception_input(images, "torch-fidelity")
    assert torch.equal(fidelity, (images.float() - 128) / 128)
    as_float = images.float() / 255
    assert torch.allclose(prepare_inception_input(images, "pytorch-fid"), 2 * as_float - 1, atol=1e-6)
    assert torch.allclose(prepare_inception_input(as_float, "pytorch-fid"), 2 * as_float - 1, atol=1e-6)
    assert torch.allclose(prepare_inception_input(as_float, "vitok"), as_float)  # the [0, 1] quirk
    # TF1 bilinear, no half-pixel centres: output pixel i samples the input at i * in / out
    ramp = torch.tensor([0, 100], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 2, 2)
    resized = prepare_inception_input(ramp, "torch-fidelity") * 128 + 128
    columns = torch.arange(299, dtype=torch.float32) * (2 / 299)
    expected = torch.where(columns < 1, columns * 100, torch.full_like(columns, 100.0))
    assert torch.allclose(resized[0, 0, 0], expected, atol=1e-3)
    with pytest.raises(ValueError, match="convention"):
        prepare_inception_input(as_float, "clean-fid")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        prepare_inception_input(as_float[:, :1], "pytorch-fid")


# ---------------------------------------------------------------------------------------------- Fréchet
def test_frechet_distance_of_gaussians_with_known_statistics():
    mean1, mean2 = np.zeros(4), np.array([1.0, 2.0, 0.0, -2.0])
    variances1, variances2 = np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 2.0, 1.0, 9.0])
    # a common rotation keeps the covariances commuting: d = |dmu|^2 + sum (a + b - 2 sqrt(ab))
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    covariance1 = rotation @ np.diag(variances1) @ rotation.T
    covariance2 = rotation @ np.diag(variances2) @ rotation.T
    expected = 9.0 + np.sum(
        variances1 + variances2 - 2 * np.sqrt(variances1 * variances2)
    )  # = 9 + (1 + 0 + 0.536 + 1)
    assert frechet_distance(mean1, covariance1, mean2, covariance2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mean1, covariance1, mean1, covariance1) == pytest.approx(0.0, abs=1e-9)
    # one-dimensional case: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(4.0 + 1.0)


def test_small_sets_are_compressed_exactly():
    # with fewer images than dimensions, tr sqrt(S1 S2) is the nuclear norm of Xc Yc^T / sqrt((n1 - 1)(n2 - 1))
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(9, 256, dtype=torch.float64, generator=generator) @ torch.randn(
        256, 256, dtype=torch.float64, generator=generator
    )
    second = torch.randn(7, 256, dtype=torch.float64, generator=generator) * 3 + 1
    centred1, centred2 = first - first.mean(0), second - second.mean(0)
    exact = torch.linalg.svdvals(centred1 @ centred2.T).sum() / (8 * 6) ** 0.5
    compressed = trace_sqrt_product(torch.cov(first.T), torch.cov(second.T), max_rank=8 + 6)
    assert compressed.item() == pytest.approx(exact.item(), rel=1e-8)
    full = trace_sqrt_product(torch.cov(first.T), torch.cov(second.T))
    assert full.item() == pytest.approx(exact.item(), rel=1e-5)


def test_statistics_round_trip_through_an_adm_npz(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 6))

    metric = frechet_distance_metric(GivenFeatures(6))
    metric.update(torch.from_numpy(features), real=True)
    mean, covariance, count = statistics(metric, real=True)
    assert count == 50
    np.testing.assert_allclose(mean, features.mean(0), atol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(features, rowvar=False), atol=1e-12)
    path = save_reference_statistics(tmp_path / "ref.npz", mean, covariance)
    loaded = load_reference_npz(path)
    other = frechet_distance_metric(GivenFeatures(6))
    set_statistics(other, loaded["mu"], loaded["sigma"], real=True)
    np.testing.assert_allclose(statistics(other, real=True)[1], covariance, atol=1e-10)
    with pytest.raises(ValueError, match="do not fit features of dimension 6"):
        set_statistics(other, np.zeros(5), np.eye(5), real=True)
    np.savez(tmp_path / "nothing.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="neither mu/sigma"):
        load_reference_npz(tmp_path / "nothing.npz")


# ---------------------------------------------------------------------------------------------- IS
def test_inception_score_of_known_class_probabilities():
    # confident, evenly spread predictions over 5 classes: IS = exp(KL(onehot || uniform)) = 5
    logits = 50.0 * torch.eye(5).repeat(4, 1)
    metric = inception_score_metric(GivenFeatures(5), splits=1)
    metric.update(logits)
    mean, _ = compute_inception_score(metric)
    assert mean == pytest.approx(5.0, rel=1e-4)
    # identical predictions for every image: IS = 1
    metric = inception_score_metric(GivenFeatures(5), splits=2)
    metric.update(torch.randn(1, 5).repeat(8, 1))
    assert compute_inception_score(metric)[0] == pytest.approx(1.0, abs=1e-5)


def test_fid_of_a_set_against_itself_is_zero(inception, photo):
    """gFID of a set against itself is 0; FID and IS of one batch share one Inception run."""
    calls = []
    handle = inception.register_forward_hook(lambda *args: calls.append(1))
    crops = torch.cat([photo[..., :48, :48], photo[..., 48:, 48:], photo[..., :48, 48:]])
    try:
        scorer = GenerationMetrics(inception, inception_score_splits=1)
        scorer.add_reference(crops)
        scorer.update(crops)
        assert len(calls) == 2  # one for the reference, one shared by FID and IS
        results = scorer.compute()
    finally:
        handle.remove()
    assert abs(results["gfid"]) < 1e-6 and results["is"] >= 1.0 - 1e-6
    # the features do tell these images apart (so 0 above is not a degenerate network)
    features = InceptionFeatureExtractor(inception)(crops)
    assert features.shape == (3, 2048) and torch.cdist(features, features)[0, 1:].min() > 1e-3
    with pytest.raises(ValueError, match="reference"):
        empty = GenerationMetrics(inception)
        empty.update(crops[:2])
        empty.compute()


# ---------------------------------------------------------------------------------------------- PSNR / SSIM
def test_psnr_on_known_images(photo):
    original = photo * 0.8 + 0.1  # stays inside [0, 1] after the offset
    shifted = original + 0.05  # MSE = 0.0025 exactly
    assert psnr(shifted, original).item() == pytest.approx(10 * math.log10(1 / 0.0025), abs=1e-4)
    skimage_metrics = pytest.importorskip("skimage.metrics")
    noisy = (original + 0.03 * torch.randn_like(original)).clamp(0, 1)
    expected = skimage_metrics.peak_signal_noise_ratio(
        original.double().numpy(), noisy.double().numpy(), data_range=1.0
    )
    assert psnr(noisy, original).item() == pytest.approx(expected, abs=1e-4)
    assert math.isinf(psnr(original, original).item())
    values = psnr(torch.cat([shifted, original]), torch.cat([original, original]))
    assert values.shape == (2,)


def test_ssim_on_known_images(photo):
    assert ssim(photo, photo).item() == pytest.approx(1.0, abs=1e-6)
    # flat images: contrast and structure terms are C2 / C2 = 1, luminance (2ab + C1) / (a^2 + b^2 + C1)
    c1 = (0.01 * 1.0) ** 2
    for a, b in ((0.2, 0.6), (0.5, 0.5), (0.9, 0.1)):
        first, second = torch.full((1, 3, 24, 24), a), torch.full((1, 3, 24, 24), b)
        assert ssim(first, second).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-5)
    noisy = (photo + 0.1 * torch.randn_like(photo)).clamp(0, 1)
    assert 0.0 < ssim(noisy, photo).item() < ssim((photo + 0.02 * torch.randn_like(photo)).clamp(0, 1), photo).item()
    with pytest.raises(ValueError, match="equal shape"):
        ssim(photo, photo[..., :32])


# ---------------------------------------------------------------------------------------------- LPIPS
def test_lpips_layout_matches_torchvision_vgg16_and_the_published_heads():
    trunk = VGG16Features()
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected, previous = {}, 3
    for index, width in zip(convs, widths):
        expected[f"features.{index}.weight"] = (width, previous, 3, 3)
        expected[f"features.{index}.bias"] = (width,)
        previous = width
    assert {key: tuple(value.shape) for key, value in trunk.state_dict().items()} == expected
    heads_file = _bundled_heads_path()
    if heads_file is None:
        pytest.skip("torchmetrics (which ships the LPIPS v0.1 heads) is not installed")
    published = torch.load(heads_file, map_location="cpu", weights_only=True)
    assert {key: tuple(value.shape) for key, value in published.items()} == {
        f"lin{index}.model.1.weight": (1, channels, 1, 1) for index, channels in enumerate(LPIPS_CHANNELS)
    }


def test_lpips_loads_published_heads_and_is_a_distance(tmp_path, photo):
    vgg = {f"features.{key}": value for key, value in VGG16Features().features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file also carries the classifier
    torch.save(vgg, tmp_path / "vgg16.pth")
    model = LPIPS.from_pretrained(tmp_path / "vgg16.pth")
    if _bundled_heads_path() is not None:
        published = torch.load(_bundled_heads_path(), map_location="cpu", weights_only=True)
        assert torch.equal(model.heads[2].weight, published["lin2.model.1.weight"])
    image = photo * 2 - 1
    other = torch.flip(image, dims=[-1])
    assert model(image, image).item() == pytest.approx(0.0, abs=1e-7)
    forward, backward = model(image, other), model(other, image)
    assert forward.item() > 0 and torch.allclose(forward, backward)
    model.train()
    assert not model.training  # a fixed metric network stays in eval mode inside a training model
    requiring = image.clone().requires_grad_(True)
    model(requiring, other).sum().backward()  # the training loss: gradients reach the input only
    assert requiring.grad is not None and requiring.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in model.parameters())
    with pytest.raises(ValueError, match="at least 16x16"):
        model(image[..., :8, :8], image[..., :8, :8])
    with pytest.raises(ValueError, match="same shape"):
        model(image, image[..., :32, :32])


# ---------------------------------------------------------------------------------------------- FDD / aggregation
@pytest.fixture(scope="module")
def tiny_dino():
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14
    )
    return DinoFeatureExtractor(Dinov2Model(config), resolution=28)


def test_fdd_features_and_reconstruction_metrics(tiny_dino, photo, tmp_path):
    assert tiny_dino(photo).shape == (1, 32)
    scorer = ReconstructionMetrics("psnr,ssim,fdd", dino=tiny_dino)
    originals = [photo[0], photo[0, :, :64, :80], photo[0].flip(-1)]  # sizes differ within a batch
    reconstructions = [image.clamp(0.05, 0.95) for image in originals]
    scorer.update(originals, reconstructions)
    results = scorer.compute()
    assert list(results) == ["psnr", "ssim", "fdd"]
    expected_psnr = np.mean([psnr(r[None], o[None]).item() for o, r in zip(originals, reconstructions)])
    assert results["psnr"] == pytest.approx(expected_psnr, rel=1e-6)
    scorer.reset()
    scorer.update(originals, originals, update_real=False)  # the originals' statistics survived reset
    assert abs(scorer.compute()["fdd"]) < 1e-3
    tiny_dino.model.save_pretrained(tmp_path / "dino")
    assert DinoFeatureExtractor.from_pretrained(tmp_path / "dino", resolution=28).num_features == 32
    with pytest.raises(FileNotFoundError, match="DINOv2"):
        DinoFeatureExtractor.from_pretrained(tmp_path / "no_such_model")


def test_metric_names_and_missing_networks_are_clear_errors():
    assert parse_metric_names(" PSNR, ssim,psnr ", ("psnr", "ssim")) == ("psnr", "ssim")
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        parse_metric_names("psnr,fid", ("psnr", "ssim", "rfid"))
    with pytest.raises(ValueError, match=r"\['lpips', 'rfid'\] need their feature network"):
        ReconstructionMetrics("psnr,lpips,rfid")
    with pytest.raises(ValueError, match="same size"):
        ReconstructionMetrics("psnr").update([torch.rand(3, 8, 8)], [torch.rand(3, 8, 9)])
