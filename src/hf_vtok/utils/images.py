"""Loading images from files and bringing any PIL mode to RGB, with errors that name the problem."""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_DIRECT_MODES = {"RGB", "L", "1", "CMYK", "YCbCr", "RGBX"}


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file fully (so truncated files fail here), apply its EXIF orientation, return RGB."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"image file {str(path)!r} is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as error:
        raise ValueError(f"{str(path)!r} is not an image file PIL can read") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image file {str(path)!r} could not be decoded (truncated or corrupt?): {error}") from error
    return to_rgb(image, name=str(path))


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """RGB version of a PIL image.

    Transparent modes are composited over white; 16-bit grayscale is scaled to 8 bits (not
    clipped, as ``Image.convert`` would); float images and modes without a defined RGB mapping
    are rejected.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        return to_rgb(image, name)
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _DIRECT_MODES:
        return image.convert("RGB")
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{name}: 32-bit integer image (mode {mode!r}) has values outside 0..65535; "
                "convert it to 8-bit RGB first"
            )
        eight_bit = np.round(values / 257.0).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    raise ValueError(
        f"{name}: unsupported PIL image mode {mode!r} (floating-point or multi-band without an RGB mapping); "
        "convert it to RGB first"
    )


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM (guided-diffusion) center crop: BOX-halve while possible, BICUBIC to ``size`` short side, crop."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_longest_side(image: Image.Image, size: int, resample=Image.Resampling.LANCZOS) -> Image.Image:
    """Downscale (never upscale) so the longest side is ``size``; sides rounded half-to-even (ViTok-v2's op)."""
    if max(image.size) <= size:
        return image
    scale = size / max(image.size)
    return image.resize((int(round(image.width * scale)), int(round(image.height * scale))), resample=resample)


def to_pixel_values(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> ``[3, H, W]`` float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()
