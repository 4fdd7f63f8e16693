"""ViTokImageProcessor: input modes, bad files, budgets, resize modes, padding, postprocess."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vtok import ViTokImageProcessor
from hf_vtok.models.vitok.image_processing_vitok import token_budget_size
from hf_vtok.utils import load_image


@pytest.fixture
def processor():
    return ViTokImageProcessor(patch_size=8, max_num_patches=16)


def _rgb(width=24, height=16, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _first_pixel(processor, image):
    return processor(image, return_tensors="pt")["pixel_values"][0, 0].view(3, 8, 8)[:, 0, 0]


def test_modes_are_converted_to_rgb(processor):
    transparent = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert torch.equal(_first_pixel(processor, transparent), torch.ones(3))  # composited over white
    opaque = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    assert torch.equal(_first_pixel(processor, opaque), torch.tensor([1.0, -1.0, -1.0]))
    gray = Image.new("L", (8, 8), 255)
    assert torch.equal(_first_pixel(processor, gray), torch.ones(3))
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    assert torch.equal(_first_pixel(processor, palette), torch.tensor([-1.0, -1.0, 1.0]))
    palette.info["transparency"] = 0
    assert torch.equal(_first_pixel(processor, palette), torch.ones(3))
    sixteen_bit = Image.new("I;16", (8, 8), 65535)
    assert torch.equal(_first_pixel(processor, sixteen_bit), torch.ones(3))  # scaled, not clipped
    mid = Image.new("I;16", (8, 8), 32896)  # 128 * 257
    torch.testing.assert_close(_first_pixel(processor, mid), torch.full((3,), 128 / 127.5 - 1), atol=1e-6, rtol=0)


def test_unsupported_modes_are_rejected(processor):
    with pytest.raises(ValueError, match="unsupported PIL image mode 'F'"):
        processor(Image.new("F", (8, 8), 0.5))
    with pytest.raises(ValueError, match="outside 0..65535"):
        processor(Image.new("I", (8, 8), 70000))


def test_bad_files_name_the_file(processor, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = tmp_path / "good.png"
    _rgb(32, 32).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    for path, message in (
        (empty, "is empty"),
        (text, "not an image file"),
        (truncated, "could not be decoded"),
        (tmp_path / "missing.png", "does not exist"),
    ):
        with pytest.raises(ValueError, match=message) as error:
            processor(str(path))
        assert str(path) in str(error.value)
    assert processor(str(good), return_tensors="pt")["pixel_values"].shape == (1, 16, 192)
    assert load_image(good).mode == "RGB"


def test_arrays_and_tensors(processor):
    image = _rgb()
    expected = processor(image, return_tensors="pt")["pixel_values"]
    array = np.array(image)
    assert torch.equal(processor(array, return_tensors="pt")["pixel_values"], expected)  # HWC uint8
    assert torch.equal(processor(np.moveaxis(array, -1, 0).copy(), return_tensors="pt")["pixel_values"], expected)
    floats = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    from_floats = processor(floats, do_rescale=False, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_floats, expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="do_rescale=True would divide it by 255 again"):
        processor(floats)
    with pytest.raises(ValueError, match="contains NaN values"):
        processor(torch.full((3, 8, 8), float("nan")), do_rescale=False)
    with pytest.raises(ValueError, match="no images were given"):
        processor([])
    with pytest.raises(ValueError, match="zero size"):
        processor(Image.new("RGB", (0, 8)))


def test_budget_without_resize_is_an_error_and_resize_modes_fit(processor):
    big = _rgb(100, 60)
    with pytest.raises(
        ValueError, match=r"image 0 \(100x60 pixels, WxH\) needs 8x13=104 patches .* max_num_patches=16"
    ):
        processor(big, over_budget="error")
    # the default: an image over the budget is resized to it, keeping its aspect ratio (ViTok-v2's inference)
    fitted = processor(big, return_tensors="pt")
    assert (fitted["orig_height"].item(), fitted["orig_width"].item()) == (24, 40)
    small = _rgb(24, 16)  # within the budget: untouched, as before
    assert torch.equal(processor(small, return_tensors="pt")["pixel_values"],
                       processor(small, over_budget="error", return_tensors="pt")["pixel_values"])  # fmt: skip
    with pytest.raises(ValueError, match="over_budget must be one of"):
        ViTokImageProcessor(over_budget="crop")
    budget = processor(big, do_resize=True, resize_mode="token_budget", return_tensors="pt")
    assert budget["patch_mask"].sum() <= 16 and (budget["orig_height"].item(), budget["orig_width"].item()) == (24, 40)
    assert token_budget_size(60, 100, 8, 16) == (24, 40)
    longest = processor(
        big, do_resize=True, resize_mode="longest_edge", size={"longest_edge": 32}, return_tensors="pt"
    )
    assert (longest["orig_height"].item(), longest["orig_width"].item()) == (19, 32)
    with pytest.raises(ValueError, match="resize_mode must be one of"):
        ViTokImageProcessor(resize_mode="bilinear")
    with pytest.raises(ValueError, match='needs size={"longest_edge"'):
        ViTokImageProcessor(do_resize=True, resize_mode="longest_edge")


def test_padding_modes_and_layout(processor):
    images = [_rgb(24, 16), _rgb(8, 8, seed=1)]
    padded = processor(images, return_tensors="pt")
    assert padded["pixel_values"].shape == (2, 16, 192)
    assert padded["patch_mask"].sum(1).tolist() == [6, 1]
    assert (
        padded["row_idx"][0, :6].tolist() == [0, 0, 0, 1, 1, 1] and padded["col_idx"][0, :6].tolist() == [0, 1, 2] * 2
    )
    assert (padded["pixel_values"][~padded["patch_mask"]] == 0).all()
    longest = processor(images, padding="longest", return_tensors="pt")
    assert longest["pixel_values"].shape == (2, 6, 192)
    unbounded = ViTokImageProcessor(patch_size=8, max_num_patches=None, padding="longest")
    assert unbounded(_rgb(100, 60), return_tensors="pt")["pixel_values"].shape == (1, 104, 192)
    assert isinstance(processor(images, return_tensors="np")["pixel_values"], np.ndarray)


def test_postprocess_round_trip(processor):
    images = [_rgb(20, 12), _rgb(8, 16, seed=1)]  # 20x12 is padded up to 24x16 on the patch grid
    inputs = processor(images, return_tensors="pt")
    pil = processor.postprocess(inputs)
    assert [image.size for image in pil] == [(20, 12), (8, 16)]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pil, images))
    arrays = processor.postprocess(inputs, output_type="np")
    assert arrays[0].shape == (12, 20, 3) and arrays[0].min() >= 0 and arrays[0].max() <= 1
    tensors = processor.postprocess(inputs, output_type="pt", do_denormalize=False)
    assert tensors[1].shape == (3, 16, 8) and tensors[1].min() >= -1
    canvas = processor.to_canvas(inputs)
    assert canvas.shape == (2, 3, 16, 24) and (canvas[1, :, :, 8:] == 0).all()
    with pytest.raises(ValueError, match="output_type must be one of"):
        processor.postprocess(inputs, output_type="latent")


def test_from_original_pp():
    processor = ViTokImageProcessor.from_original_pp(
        "center_crop(64)|resize_longest_side(32)|to_tensor|normalize(imagenet)|patchify(8, 16)"
    )
    assert processor.do_center_crop and processor.crop_size.height == 64 and processor.size.longest_edge == 32
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and processor.max_num_patches == 16
    assert processor(_rgb(200, 100), return_tensors="pt")["orig_height"].item() == 32
    for pp, message in (
        ("flip|to_tensor|patchify(16, 4)", "not deterministic"),
        ("to_tensor|normalize(minus_one_to_one)", "must end with patchify"),
        ("to_tensor|resize_longest_side(32)|patchify(16, 4)", "must come before to_tensor"),
        ("to_tensor|patchify(16)", "takes 2 positive integer"),
        ("to_tensor|normalize(sepia)|patchify(16, 4)", "unknown normalize mode"),
        ("to_tensor|resize_to_token_budget(8, 4)|patchify(16, 4)", "different patch sizes"),
    ):
        with pytest.raises(ValueError, match=message):
            ViTokImageProcessor.from_original_pp(pp)


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = ViTokImageProcessor.from_pretrained(tmp_path)
    assert loaded.patch_size == 8 and loaded.max_num_patches == 16 and loaded.padding == "max_length"
    image = _rgb()
    assert torch.equal(
        loaded(image, return_tensors="pt")["pixel_values"], processor(image, return_tensors="pt")["pixel_values"]
    )
