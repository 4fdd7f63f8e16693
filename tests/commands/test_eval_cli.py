"""``hf-vtok eval`` and ``hf-vtok eval-generation`` end to end, on tiny random networks and real photographs.

Feature networks are random (their weight files are written here); nothing downloads.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hf_vtok import LatentTokenImageProcessor, SoftVQConfig, SoftVQModel, ViTokConfig, ViTokImageProcessor, ViTokModel
from hf_vtok.cli import main
from hf_vtok.losses.lpips import VGG16Features
from hf_vtok.metrics import FIDInceptionV3, psnr
from hf_vtok.utils.images import adm_center_crop
from hf_vtok.utils.tables import format_cell

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
RESOLUTION = 64


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    skimage = pytest.importorskip("skimage")
    root = tmp_path_factory.mktemp("eval")
    photos = root / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(Path(skimage.__file__).parent / "data" / name, photos / name)
    torch.manual_seed(0)
    for patch_size in (8, 16):
        config = ViTokConfig(
            encoder_hidden_size=32, encoder_num_layers=1, encoder_num_heads=2, decoder_hidden_size=32,
            decoder_num_layers=1, decoder_num_heads=2, patch_size=patch_size, latent_channels=8,
        )  # fmt: skip
        ViTokModel(config).save_pretrained(root / f"vitok_p{patch_size}")
        ViTokImageProcessor(patch_size=patch_size).save_pretrained(root / f"vitok_p{patch_size}")
    softvq = SoftVQConfig(
        image_size=RESOLUTION, encoder_patch_size=8, decoder_patch_size=8, num_latent_tokens=8, latent_channels=8,
        encoder_hidden_size=32, encoder_num_layers=1, encoder_num_heads=4, decoder_hidden_size=32,
        decoder_num_layers=1, decoder_num_heads=4, codebook_size=16, num_codebooks=2,
    )  # fmt: skip
    SoftVQModel(softvq).save_pretrained(root / "softvq")  # a fixed-size tokenizer of 1D latent tokens
    LatentTokenImageProcessor.for_model(softvq).save_pretrained(root / "softvq")
    save_file(FIDInceptionV3().state_dict(), root / "inception.safetensors")
    vgg = VGG16Features().features.state_dict()
    save_file({f"features.{key}": value for key, value in vgg.items()}, root / "vgg16.safetensors")
    from transformers import Dinov2Config, Dinov2Model

    dino = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14
    )
    Dinov2Model(dino).save_pretrained(root / "dino")
    return root


def _feature_arguments(root: Path) -> list[str]:
    return [
        "--inception-weights", str(root / "inception.safetensors"),
        "--lpips-vgg-weights", str(root / "vgg16.safetensors"),
        "--fdd-model", str(root / "dino"), "--fdd-resolution", "28",
    ]  # fmt: skip


def _direct_psnr(model_dir: Path, photos: Path) -> float:
    """PSNR of the plain-tensor path (model.encode(x) / decode(z) on [-1, 1] images), independent of the CLI."""
    model = ViTokModel.from_pretrained(model_dir).eval()
    values = []
    for name in sorted(PHOTOS):
        image = adm_center_crop(Image.open(photos / name).convert("RGB"), RESOLUTION)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            reconstruction = model.decode(model.encode(pixels * 2 - 1).latents).sample
        values.append(psnr((reconstruction + 1) / 2, pixels).item())
    return float(np.mean(values))


def test_eval_scores_several_tokenizers_and_writes_every_report(workspace):
    out = workspace / "out"
    main([
        "eval", "--model", str(workspace / "vitok_p8"), "--model", str(workspace / "vitok_p16"),
        "--model", str(workspace / "softvq"), "--data", str(workspace / "photos"),
        "--resolution", str(RESOLUTION), "--batch-size", "3",
        "--metrics", "psnr,ssim,lpips,rfid,fdd", "--out", str(out), "--grid-images", "3", "--grid-crop", "48",
        *_feature_arguments(workspace),
    ])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["num_images"] == len(PHOTOS) and results["crop"] == "center" and results["resolution"] == RESOLUTION
    rows = {row["name"]: row for row in results["models"]}
    assert list(rows) == ["vitok_p8", "vitok_p16", "softvq"]
    assert rows["vitok_p8"]["tokens_per_image"] == (RESOLUTION // 8) ** 2  # NaFlex patch sequences
    assert rows["vitok_p16"]["tokens_per_image"] == (RESOLUTION // 16) ** 2
    assert rows["softvq"]["tokens_per_image"] == 8  # [B, L, C] latent tokens of a fixed-size tokenizer
    for row in rows.values():
        assert row["token_channels"] == 8 and row["num_images"] == len(PHOTOS)
        assert all(math.isfinite(row[name]) for name in ("psnr", "ssim", "lpips", "rfid", "fdd"))
        assert row["lpips"] > 0 and row["rfid"] > 0 and row["fdd"] > 0
    assert rows["vitok_p8"]["psnr"] == pytest.approx(
        _direct_psnr(workspace / "vitok_p8", workspace / "photos"), abs=1e-4
    )
    table = (out / "results.md").read_text()
    assert "| tokenizer | tokens / image | PSNR ↑ | SSIM ↑ | LPIPS ↓ | rFID ↓ | FDD ↓ |" in table
    # one count per image: a whole number in the JSON and the table, without a note
    assert isinstance(rows["vitok_p16"]["tokens_per_image"], int) and "tokens_range" not in rows["vitok_p16"]
    assert f"| vitok_p16 | 16 | {rows['vitok_p16']['psnr']:.2f} |" in table and "(mean)" not in table
    plot = Image.open(out / "metrics.png")
    assert plot.format == "PNG" and plot.width > 600
    grid = Image.open(out / "reconstructions.png")
    assert grid.format == "PNG" and grid.height == 4 * (128 + 2)  # original + one row per tokenizer
    # the top row shows the originals' center crops (48 px of the 64 px framing, shown in 128 px cells)
    original = np.asarray(
        adm_center_crop(Image.open(workspace / "photos" / "astronaut.png").convert("RGB"), RESOLUTION)
    )
    tile = np.asarray(grid.convert("RGB"))[:128, 110 : 110 + 128].astype(float)
    assert np.abs(tile.mean(axis=(0, 1)) - original[8:56, 8:56].mean(axis=(0, 1))).max() < 2


def test_eval_native_aspect_over_tar_shards(workspace, tmp_path):
    import tarfile

    with tarfile.open(tmp_path / "shard-000.tar", "w") as archive:
        for index, name in enumerate(PHOTOS[:3]):
            archive.add(workspace / "photos" / name, arcname=f"{index:04d}{Path(name).suffix}")
    out = tmp_path / "out"
    results = main([
        "eval", "--model", str(workspace / "vitok_p16"), "--data", str(tmp_path / "shard-{000..000}.tar"),
        "--crop", "longest-side", "--resolution", "96", "--metrics", "psnr,ssim", "--batch-size", "3",
        "--out", str(out),
    ])  # fmt: skip
    assert results == 0
    row = json.loads((out / "results.json").read_text())["models"][0]
    # images of different aspect ratios share a NaFlex batch: tokens are counted per image, padding excluded
    shapes = [Image.open(workspace / "photos" / name).size for name in PHOTOS[:3]]
    expected_tokens = []
    for width, height in shapes:
        scale = min(1.0, 96 / max(width, height))
        expected_tokens.append(math.ceil(round(height * scale) / 16) * math.ceil(round(width * scale) / 16))
    assert row["tokens_per_image"] == pytest.approx(np.mean(expected_tokens))
    assert len(set(expected_tokens)) > 1 and row["tokens_range"] == [min(expected_tokens), max(expected_tokens)]
    table = (out / "results.md").read_text()
    assert f"| vitok_p16 | {format_cell(float(np.mean(expected_tokens)))} (mean) |" in table
    assert "(mean): the tokens per image vary" in table
    assert row["num_images"] == 3 and 0 < row["ssim"] < 1


@pytest.mark.parametrize("num_samples, total", [(None, len(PHOTOS)), (2, 2), (99, len(PHOTOS))])
def test_progress_bar_has_a_total(workspace, tmp_path, monkeypatch, num_samples, total):
    import hf_vtok.commands.evaluate as evaluate

    totals = []

    class RecordingBar(evaluate.tqdm):
        def __init__(self, *args, **kwargs):
            totals.append(kwargs.get("total"))
            super().__init__(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(evaluate, "tqdm", RecordingBar)
    extra = ["--num-samples", str(num_samples)] if num_samples else []
    main([
        "eval", "--model", str(workspace / "vitok_p16"), "--data", str(workspace / "photos"), "--metrics", "psnr",
        "--resolution", str(RESOLUTION), "--out", str(tmp_path / "out"), *extra,
    ])  # fmt: skip
    assert totals == [total]


def test_fixed_size_tokenizer_at_another_framing_is_resized_back_with_a_warning(workspace, tmp_path, caplog):
    out = tmp_path / "out"
    main([
        "eval", "--model", str(workspace / "softvq"), "--data", str(workspace / "photos"), "--num-samples", "2",
        "--resolution", str(2 * RESOLUTION), "--metrics", "psnr", "--out", str(out),
    ])  # fmt: skip
    assert "reconstructs at (64, 64), not at the center framing (128, 128)" in caplog.text
    assert json.loads((out / "results.json").read_text())["models"][0]["num_images"] == 2


def test_eval_errors_are_clear(workspace, tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        main(
            [
                "eval",
                "--model",
                str(workspace / "vitok_p8"),
                "--data",
                str(workspace / "photos"),
                "--metrics",
                "psnr,fid",
            ]
        )
    with pytest.raises(FileNotFoundError, match="FID InceptionV3 weights.*pytorch-fid"):
        main([
            "eval", "--model", str(workspace / "vitok_p8"), "--data", str(workspace / "photos"), "--metrics", "rfid",
            "--inception-weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "out"),
        ])  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is not an image folder"):
        main(
            [
                "eval",
                "--model",
                str(workspace / "vitok_p8"),
                "--data",
                str(empty),
                "--metrics",
                "psnr",
                "--out",
                str(tmp_path / "o"),
            ]
        )


@pytest.fixture(scope="module")
def tiny_dit_pipeline(workspace) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1, sample_size=4,
        patch_size=2, num_embeds_ada_norm=1000, norm_num_groups=1,
    )  # fmt: skip
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=8,
    )  # fmt: skip
    folder = workspace / "tiny_dit"
    DiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler()).save_pretrained(folder)
    return folder


def test_eval_generation_gfid_and_inception_score(workspace, tiny_dit_pipeline, tmp_path):
    out = tmp_path / "gen"
    common = [
        "eval-generation", "--pipeline", str(tiny_dit_pipeline), "--num-samples", "3", "--batch-size", "3",
        "--num-inference-steps", "2", "--inception-weights", str(workspace / "inception.safetensors"),
    ]  # fmt: skip
    main([
        *common, "--guidance-scale", "1.0", "1.5", "--reference", str(workspace / "photos"),
        "--reference-num-samples", "3",
        "--resolution", str(RESOLUTION), "--save-reference", str(tmp_path / "reference.npz"), "--save-samples",
        "--out", str(out),
    ])  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["num_classes"] == 1000 and results["reference_images"] == 3
    assert [run["guidance_scale"] for run in results["runs"]] == [1.0, 1.5]
    for run in results["runs"]:
        assert run["gfid"] > 0 and run["is"] >= 1.0 - 1e-6 and run["num_samples"] == 3
    assert "| guidance scale | samples | gFID ↓ | IS ↑ |" in (out / "results.md").read_text()
    assert Image.open(out / "metrics.png").format == "PNG" and Image.open(out / "samples.png").format == "PNG"
    reference = np.load(tmp_path / "reference.npz")
    assert reference["mu"].shape == (2048,) and reference["sigma"].shape == (2048, 2048)
    samples = np.load(out / "samples_1.5.npz")
    assert samples["arr_0"].shape == (3, 8, 8, 3) and samples["arr_0"].dtype == np.uint8
    assert samples["arr_1"].tolist() == [0, 1, 2]
    # the saved samples as an ADM reference batch: the same seed regenerates them, so gFID is 0
    again = tmp_path / "again"
    main([*common, "--guidance-scale", "1.5", "--reference", str(out / "samples_1.5.npz"), "--out", str(again)])
    rerun = json.loads((again / "results.json").read_text())
    assert rerun["reference_kind"] == "image batch" and abs(rerun["runs"][0]["gfid"]) < 1e-3


def test_eval_generation_rejects_a_folder_without_a_pipeline(workspace, tmp_path):
    with pytest.raises(ValueError, match="holds a tokenizer .*, not a pipeline"):
        main([
            "eval-generation", "--pipeline", str(workspace / "vitok_p8"), "--num-samples", "2",
            "--reference", str(workspace / "photos"), "--reference-num-samples", "2", "--resolution", "32",
            "--inception-weights", str(workspace / "inception.safetensors"), "--out", str(tmp_path / "o"),
        ])  # fmt: skip
