"""The pixel limit (checked from the file header, before decoding) at every entry point, and the token budget that
bounds what an allowed large image costs a NaFlex model."""

import importlib.util
import io
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_vtok import FlowMoImageProcessor, LatentTokenImageProcessor, V2FlowImageProcessor, ViTokImageProcessor
from hf_vtok.commands.reconstruct import token_budget_target
from hf_vtok.data.images import decode_image_bytes, iter_images
from hf_vtok.data.sources import open_image_source
from hf_vtok.utils.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    check_image_size,
    image_pixel_limit,
    load_image,
    max_image_pixels,
    parse_pixel_limit,
)
from tests.reliability.conftest import assert_one_line_error, png_declaring, write_photo

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSORS = {
    "vitok": lambda: ViTokImageProcessor(patch_size=8, max_num_patches=None, padding="longest"),
    "flowmo": lambda: FlowMoImageProcessor(image_size=32),
    "latent_token": lambda: LatentTokenImageProcessor(image_size=32),
    "v2flow": lambda: V2FlowImageProcessor(crop_size={"height": 32, "width": 32}),
}


def test_a_header_declaring_12000_squared_is_refused_before_decoding(tmp_path):
    bomb = png_declaring(tmp_path / "tiny.png", 12000, 12000)
    assert bomb.stat().st_size < 1000
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError) as error:
        load_image(bomb)
    assert time.monotonic() - started < 1  # before: hf-vtok reconstruct ran for over 10 minutes at >= 6.8 GB
    message = str(error.value)
    assert str(bomb) in message and "12000x12000" in message and str(DEFAULT_MAX_IMAGE_PIXELS) in message
    assert "--max-pixels" in message


def test_a_header_over_pils_own_limit_gets_the_same_error(tmp_path):
    bomb = png_declaring(tmp_path / "huge.png", 100_000, 100_000)
    with pytest.raises(ImageTooLargeError, match="100000x100000"):  # before: a raw PIL DecompressionBombError
        load_image(bomb)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        decode_image_bytes(bomb.read_bytes(), "huge.png")


def test_the_limit_can_be_changed(tmp_path, monkeypatch):
    photo = write_photo(tmp_path / "photo.png", size=(40, 30))
    with image_pixel_limit(1000):
        assert max_image_pixels() == 1000
        with pytest.raises(ImageTooLargeError, match="40x30"):
            load_image(photo)
        assert load_image(photo, max_pixels=None).size == (40, 30)
        with pytest.raises(ImageTooLargeError):
            check_image_size(40, 30, "frame")
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS
    with image_pixel_limit(None):
        # PIL's own decompression-bomb check does not apply either: the header is read, the (truncated) data fails
        with pytest.raises(ValueError, match="could not be decoded"):
            load_image(png_declaring(tmp_path / "big.png", 12000, 12000))
    assert parse_pixel_limit("none") is None and parse_pixel_limit("0") is None and parse_pixel_limit(5) == 5
    with pytest.raises(ValueError, match="whole number"):
        parse_pixel_limit("lots")


@pytest.mark.parametrize("family", sorted(PROCESSORS))
def test_processors_apply_the_limit_to_paths_and_pil_images(family, tmp_path):
    processor = PROCESSORS[family]()
    photo = write_photo(tmp_path / "photo.png", size=(40, 30))
    with image_pixel_limit(1000):
        with pytest.raises(ImageTooLargeError, match="photo.png"):
            processor(str(photo))
        with Image.open(photo) as lazy:  # not decoded yet: refused before it is
            with pytest.raises(ImageTooLargeError, match="40x30"):
                processor(lazy)
    assert processor(str(photo), return_tensors="pt")["pixel_values"].shape[0] == 1


def test_sources_apply_the_limit(tmp_path):
    folder = tmp_path / "images"
    write_photo(folder / "big.png", size=(40, 30))
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as archive:
        archive.add(folder / "big.png", arcname="s0.png")
    with image_pixel_limit(1000):
        for source in (folder, str(shard)):
            with pytest.raises(ImageTooLargeError, match="big.png|s0.png"):
                list(iter_images(source))
            with pytest.raises(ImageTooLargeError, match="big.png|s0.png"):
                open_image_source(source)[0]


def test_reconstruct_refuses_over_max_pixels(cli, vitok_folder, tmp_path):
    bomb = png_declaring(tmp_path / "tiny.png", 12000, 12000)
    result = cli("reconstruct", bomb, "--model", vitok_folder, "--out", tmp_path / "out")
    assert_one_line_error(result, str(bomb), "12000x12000", "--max-pixels", command="reconstruct")
    assert result.seconds < 30 and not (tmp_path / "out").exists()
    photo = write_photo(tmp_path / "photo.png", size=(40, 30))
    result = cli("reconstruct", photo, "--model", vitok_folder, "--max-pixels", "1000", "--out", tmp_path / "out")
    assert_one_line_error(result, str(photo), "40x30")
    assert_one_line_error(cli("reconstruct", photo, "--max-pixels", "-3"), "--max-pixels")


def test_large_allowed_images_are_bounded_by_the_token_budget(cli, vitok_folder, tmp_path):
    processor = ViTokImageProcessor(patch_size=8, max_num_patches=None, padding="longest")
    assert token_budget_target((64, 64), processor, 64) is None  # 8 x 8 patches fit
    assert token_budget_target((640, 480), processor, 64) == (72, 48)  # 9 x 6 patches: ViTok-v2's budget rule
    assert token_budget_target((640, 480), FlowMoImageProcessor(image_size=32), 64) is None  # sizes itself
    photo = write_photo(tmp_path / "wide.png", size=(640, 480))
    result = cli("reconstruct", photo, "--model", vitok_folder, "--max-tokens", "64", "--out", tmp_path / "out")
    assert result.status == 0, result.stderr
    assert "640x480 is over --max-tokens 64: encoded at 72x48" in result.stdout
    assert Image.open(tmp_path / "out" / "wide_recon.png").size == (640, 480)


def test_eval_without_framing_refuses_images_over_the_token_budget(cli, vitok_folder, tmp_path):
    folder = tmp_path / "data"
    write_photo(folder / "wide.png", size=(640, 480))
    result = cli("eval", "--model", vitok_folder, "--data", folder, "--crop", "none", "--max-tokens", "64",
                 "--metrics", "psnr", "--out", tmp_path / "eval")  # fmt: skip
    assert_one_line_error(result, "'wide.png'", "--max-tokens 64", command="eval")
    assert not (tmp_path / "eval").exists()


def test_cache_latents_applies_the_pixel_limit(cli, vitok_folder, tmp_path):
    folder = tmp_path / "data"
    write_photo(folder / "big.png", size=(40, 30))
    result = cli("cache-latents", "--model", vitok_folder, "--images", folder, "--output", tmp_path / "cache",
                 "--resolution", "16", "--max-pixels", "1000", "--device", "cpu")  # fmt: skip
    assert_one_line_error(result, "big.png", "40x30", command="cache-latents")
    assert not (tmp_path / "cache").exists()


def test_demo_applies_the_pixel_limit(monkeypatch):
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("gradio is not installed (pip install -e '.[demo]')")
    spec = importlib.util.spec_from_file_location("hf_vtok_spaces_app_limits", REPO_ROOT / "spaces" / "app.py")
    app = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, app)
    spec.loader.exec_module(app)
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    with image_pixel_limit(1000):
        with pytest.raises(app.gr.Error, match="40x30"):
            app.prepare(image)
    assert app.prepare(image)[0].size == (40, 30)


def test_encoded_bytes_name_their_source():
    with pytest.raises(ValueError, match="shard.tar:s1.png is empty"):
        decode_image_bytes(b"", "shard.tar:s1.png")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="s2.png (could not be decoded|is not an image file)"):
        decode_image_bytes(buffer.getvalue()[:40], "s2.png")
