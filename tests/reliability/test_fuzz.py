"""Fuzz-style: a generated set of malformed images, weight files and configs fed to every ``hf-vtok`` command
(in this process) and to the processors' path inputs.

Every run ends in bounded time with exit status 0, or with a non-zero status and one error line that names the
input (processors: a ``ValueError`` naming it); nothing is left half-written (a failed command creates no output
folder, a successful one only complete files)."""

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hf_vtok.training import add_training_arguments
from hf_vtok.training.trainer import parse_with_config
from tests.reliability.conftest import assert_one_line_error, files_under, png_declaring
from tests.reliability.test_image_limits import PROCESSORS

SECONDS_PER_RUN = 30  # generous: a shared, busy CPU; each run takes well under a second here
PARTIAL_MARKERS = (".partial", ".tmp")


def _valid_png(size=(24, 16), seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _valid_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _float_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


def _corrupt_idat() -> bytes:
    data = bytearray(_valid_png())
    start = data.index(b"IDAT") + 8
    data[start : start + 16] = b"\xff" * 16
    return bytes(data)


# name -> writer(path): inputs that must be refused
MALFORMED_IMAGES = {
    "empty.png": lambda path: path.write_bytes(b""),
    "text.png": lambda path: path.write_text("not an image"),
    "truncated.png": lambda path: path.write_bytes(_valid_png()[:60]),
    "corrupt-data.png": lambda path: path.write_bytes(_corrupt_idat()),
    "truncated.jpg": lambda path: path.write_bytes(_valid_jpeg()[:200]),
    "header-12000.png": lambda path: png_declaring(path, 12000, 12000),
    "header-100000.png": lambda path: png_declaring(path, 100_000, 100_000),
    "float.tiff": lambda path: path.write_bytes(_float_tiff()),
    "garbage.gif": lambda path: path.write_bytes(b"GIF89a" + bytes(range(256)) * 4),
    "folder.png": lambda path: path.mkdir(),
}


def _mutations(count: int = 6, seed: int = 19) -> dict:
    """Random truncations and byte flips of a valid PNG: each may still decode (then the command succeeds)."""
    rng = np.random.default_rng(seed)
    original = _valid_png(seed=1)
    cases = {}
    for index in range(count):
        data = bytearray(original)
        if index % 2:
            data = data[: int(rng.integers(8, len(data) - 1))]
        else:
            for position in rng.integers(8, len(data), size=3):
                data[position] ^= 1 << int(rng.integers(0, 8))
        cases[f"mutation-{index}.png"] = bytes(data)
    return cases


MUTATIONS = _mutations()


def _write_image(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name in MALFORMED_IMAGES:
        MALFORMED_IMAGES[name](path)
    else:
        path.write_bytes(MUTATIONS[name])
    return path


def _no_half_written(folder: Path, failed: bool) -> None:
    if failed:
        assert not folder.exists(), files_under(folder)
    else:
        assert not [name for name in files_under(folder) if any(marker in name for marker in PARTIAL_MARKERS)]


def _check(result, *names) -> bool:
    """The fuzz property of one run; returns whether it failed."""
    assert result.seconds < SECONDS_PER_RUN, result
    if result.status == 0:
        return False
    assert_one_line_error(result, *names)
    return True


# ------------------------------------------------------------------------------------------------------
# images
@pytest.mark.parametrize("name", [*MALFORMED_IMAGES, *MUTATIONS])
def test_reconstruct(cli, vitok_folder, tmp_path, name):
    image = _write_image(tmp_path / "in", name)
    out = tmp_path / "out"
    failed = _check(cli("reconstruct", image, "--model", vitok_folder, "--out", out), image)
    assert failed or name in MUTATIONS
    _no_half_written(out, failed)
    if not failed:
        assert Image.open(out / f"{image.stem}_recon.png").size == Image.open(image).size


@pytest.mark.parametrize("name", [name for name in [*MALFORMED_IMAGES, *MUTATIONS] if name != "folder.png"])
def test_eval(cli, vitok_folder, tmp_path, name):
    image = _write_image(tmp_path / "data", name)
    out = tmp_path / "eval"
    result = cli("eval", "--model", vitok_folder, "--data", tmp_path / "data", "--metrics", "psnr,ssim",
                 "--resolution", "16", "--out", out)  # fmt: skip
    failed = _check(result, image.name)
    assert failed or name in MUTATIONS
    _no_half_written(out, failed)


@pytest.mark.parametrize("name", [name for name in [*MALFORMED_IMAGES, *MUTATIONS] if name != "folder.png"])
def test_cache_latents(cli, vitok_folder, tmp_path, name):
    image = _write_image(tmp_path / "data", name)
    out = tmp_path / "cache"
    result = cli("cache-latents", "--model", vitok_folder, "--images", tmp_path / "data", "--output", out,
                 "--resolution", "16", "--device", "cpu")  # fmt: skip
    failed = _check(result, image.name)
    assert failed or name in MUTATIONS
    _no_half_written(out, failed)


@pytest.mark.parametrize("family", sorted(PROCESSORS))
def test_processor_paths(family, tmp_path):
    processor = PROCESSORS[family]()
    for name in [*MALFORMED_IMAGES, *MUTATIONS]:
        image = _write_image(tmp_path, name)
        started = time.monotonic()
        try:
            processor(str(image), return_tensors="pt")
        except ValueError as error:
            assert str(image) in str(error), (name, str(error))
        else:
            assert name in MUTATIONS, name
        assert time.monotonic() - started < SECONDS_PER_RUN


# ------------------------------------------------------------------------------------------------------
# model folders and configs
def _damage_model(folder: Path, case: str) -> Path:
    config = json.loads((folder / "config.json").read_text())
    damages = {
        "config-not-json": lambda: (folder / "config.json").write_text("{"),
        "config-not-an-object": lambda: (folder / "config.json").write_text("[1, 2]"),
        "config-without-model-type": lambda: (folder / "config.json").write_text('{"hidden_size": 3}'),
        "config-unknown-model-type": lambda: (folder / "config.json").write_text('{"model_type": "no-such-family"}'),
        "config-negative-width": lambda: (folder / "config.json").write_text(
            json.dumps({**config, "encoder_hidden_size": -32})
        ),
        "config-wrong-type": lambda: (folder / "config.json").write_text(json.dumps({**config, "patch_size": "big"})),
        "processor-not-json": lambda: (folder / "preprocessor_config.json").write_text("{"),
        "weights-missing": lambda: (folder / "model.safetensors").unlink(),
        "weights-empty": lambda: (folder / "model.safetensors").write_bytes(b""),
        "weights-truncated": lambda: (folder / "model.safetensors").write_bytes(
            (folder / "model.safetensors").read_bytes()[:300]
        ),
        "weights-garbage": lambda: (folder / "model.safetensors").write_bytes(b"\xff" * 64),
        "weights-other-shapes": lambda: save_file(
            {"encoder.patch_embed.weight": torch.zeros(3, 3)}, folder / "model.safetensors"
        ),
    }
    damages[case]()
    return folder


MODEL_DAMAGES = [
    "config-not-json", "config-not-an-object", "config-without-model-type", "config-unknown-model-type",
    "config-negative-width", "config-wrong-type", "processor-not-json", "weights-missing", "weights-empty",
    "weights-truncated", "weights-garbage", "weights-other-shapes",
]  # fmt: skip


@pytest.mark.parametrize("damage", MODEL_DAMAGES)
@pytest.mark.parametrize("command", ["reconstruct", "eval", "cache-latents"])
def test_damaged_model_folders(cli, vitok_folder, tmp_path, command, damage):
    model = _damage_model(shutil.copytree(vitok_folder, tmp_path / "model"), damage)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "photo.png").write_bytes(_valid_png())
    out = tmp_path / "out"
    argv = {
        "reconstruct": ("reconstruct", photos / "photo.png", "--model", model, "--out", out),
        "eval": ("eval", "--model", model, "--data", photos, "--metrics", "psnr", "--resolution", "16", "--out", out),
        "cache-latents": ("cache-latents", "--model", model, "--images", photos, "--output", out, "--resolution",
                          "16", "--device", "cpu"),
    }[command]  # fmt: skip
    assert _check(cli(*argv), str(model)), damage
    _no_half_written(out, failed=True)


# name -> bytes of weight files that no converter / loader may accept
MALFORMED_WEIGHTS = {
    "empty.safetensors": b"",
    "garbage.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{not json",
    "huge-header.safetensors": (2**40).to_bytes(8, "little") + b"{}",
    "text.pth": b"hello",
    "zeros.pth": b"\x00" * 128,
}


@pytest.mark.parametrize("name", sorted(MALFORMED_WEIGHTS))
def test_weight_file_commands(cli, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(MALFORMED_WEIGHTS[name])
    out = tmp_path / "out"
    runs = [
        ("convert", "vitok", "--checkpoint", path, "--output", out),
        ("convert", "flowmo", "--checkpoint", path, "--output", out),
        ("convert", "v2flow", "--checkpoint", path, "--output", out),
        ("cache-llm-vocabulary", "--llm", path, "--output", out / "vocabulary.safetensors"),
        ("eval-generation", "--pipeline", tmp_path, "--num-samples", "2", "--reference", tmp_path / "r.npz",
         "--inception-weights", path, "--out", out),
    ]  # fmt: skip
    for argv in runs:
        assert _check(cli(*argv), name), argv
        _no_half_written(out, failed=True)


MALFORMED_CONFIGS = {
    "flowmo.yaml": "model: [unclosed",
    "list.yaml": "- 1\n- 2\n",
    "no-model.yaml": "data:\n  image_size: 64\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_CONFIGS))
def test_original_config_files(cli, tmp_path, name):
    config = tmp_path / name
    config.write_text(MALFORMED_CONFIGS[name])
    result = cli("convert", "flowmo", "--checkpoint", tmp_path / "unused.pth", "--config", config, "--output",
                 tmp_path / "out")  # fmt: skip
    assert _check(result, name)
    _no_half_written(tmp_path / "out", failed=True)


@pytest.mark.parametrize("content", ["{", "[1]", '{"no_such_option": 1}', '{"max_steps": "many"}', ""])
def test_training_config_files(tmp_path, content):
    config = tmp_path / "recipe.json"
    config.write_text(content)
    parser = add_training_arguments(__import__("argparse").ArgumentParser())
    try:
        parse_with_config(parser, ["--config", str(config), "--output-dir", str(tmp_path / "run")])
    except ValueError as error:
        assert "recipe.json" in str(error)
    except SystemExit as exit_:  # argparse rejects a default of the wrong type when it parses it
        assert exit_.code == 2
    else:
        pytest.fail(f"accepted {content!r}")
    assert not (tmp_path / "run").exists()
