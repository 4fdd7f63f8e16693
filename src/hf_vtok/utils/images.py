"""Loading images from files and bringing any PIL mode to RGB, with errors that name the problem.

Every image read from a file or bytes passes ``check_image_size`` on the size its header declares, before
anything is decoded: an image over the pixel limit (``DEFAULT_MAX_IMAGE_PIXELS``; the environment variable
``HF_VTOK_MAX_IMAGE_PIXELS``, ``set_max_image_pixels`` / ``image_pixel_limit`` or the commands' ``--max-pixels``
change it, ``0`` / ``none`` lifts it) is an ``ImageTooLargeError`` naming the file, its size and the limit.
"""

import contextlib
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_DIRECT_MODES = {"RGB", "L", "1", "CMYK", "YCbCr", "RGBX"}

# 2**27 (about 134 megapixels, e.g. 16384x8192 or a 108 MP phone photo): an RGB decode of at most 400 MB
DEFAULT_MAX_IMAGE_PIXELS = 2**27
MAX_PIXELS_VARIABLE = "HF_VTOK_MAX_IMAGE_PIXELS"
_CURRENT = object()  # "the process-wide limit" as a default argument
_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """An image declares more pixels than the limit (checked from its header, before decoding)."""


def parse_pixel_limit(value: str | int | None) -> int | None:
    """``"134217728"`` / ``134217728`` -> that limit; ``"0"``, ``"none"``, ``0`` or None -> no limit."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "0", "none", "off")):
        return None
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"a pixel limit is a whole number of pixels (0 or 'none': no limit), got {value!r}") from None
    if limit < 0:
        raise ValueError(f"a pixel limit must not be negative, got {limit}")
    return limit or None


def _limit_from_environment() -> int | None:
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return parse_pixel_limit(value)
    except ValueError as error:
        raise ValueError(f"${MAX_PIXELS_VARIABLE}: {error}") from None


_max_pixels = _limit_from_environment()


def max_image_pixels() -> int | None:
    """The process-wide pixel limit of decoded images (None: no limit)."""
    return _max_pixels


def set_max_image_pixels(limit: int | None) -> int | None:
    """Set the process-wide pixel limit (None or 0: no limit); returns the previous one."""
    global _max_pixels
    previous, _max_pixels = _max_pixels, parse_pixel_limit(limit)
    return previous


@contextlib.contextmanager
def image_pixel_limit(limit: int | None):
    """``with image_pixel_limit(10**9): ...``: another pixel limit inside the block."""
    previous = set_max_image_pixels(limit)
    try:
        yield
    finally:
        set_max_image_pixels(previous)


def check_image_size(width: int, height: int, name: str = "image", max_pixels=_CURRENT) -> None:
    """An ``ImageTooLargeError`` naming ``name`` when ``width x height`` is over the limit.

    ``max_pixels``: the limit (None: none); by default the process-wide one (``max_image_pixels``).
    """
    limit = max_image_pixels() if max_pixels is _CURRENT else parse_pixel_limit(max_pixels)
    if limit is not None and width * height > limit:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.1f} MP) is over the limit of {limit} pixels "
            f"({limit / 1e6:.1f} MP); if you trust it, raise the limit (--max-pixels, ${MAX_PIXELS_VARIABLE} or "
            "hf_vtok.utils.images.set_max_image_pixels)"
        )


def open_image(file, name: str, max_pixels=_CURRENT) -> Image.Image:
    """``Image.open`` that reads the header only and checks its size against the pixel limit (``check_image_size``)
    instead of PIL's decompression-bomb check. ``file``: a path or a binary file object; nothing is decoded."""
    limit = max_image_pixels() if max_pixels is _CURRENT else parse_pixel_limit(max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(file)
        except Image.DecompressionBombError:
            # over PIL's own limit: read the header again without it, then apply ours (which names the file)
            if hasattr(file, "seek"):
                file.seek(0)
            with _PIL_LIMIT_LOCK:
                pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    image = Image.open(file)
                finally:
                    Image.MAX_IMAGE_PIXELS = pil_limit
    try:
        check_image_size(image.width, image.height, name, limit)
    except ImageTooLargeError:
        image.close()
        raise
    return image


def decode_image(file, name: str, max_pixels=_CURRENT) -> Image.Image:
    """A path or binary file object -> RGB image: header size checked (``open_image``), decoded fully (so
    truncated files fail here), EXIF orientation applied. Errors are ``ValueError`` naming ``name``."""
    try:
        with open_image(file, name, max_pixels) as image:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                image = ImageOps.exif_transpose(image)
    except ImageTooLargeError:
        raise
    except UnidentifiedImageError as error:
        raise ValueError(f"{name} is not an image file PIL can read") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ValueError(f"{name} could not be decoded (truncated or corrupt?): {error}") from error
    return to_rgb(image, name=name)


def load_image(path: str | os.PathLike, max_pixels=_CURRENT) -> Image.Image:
    """Open an image file fully (so truncated files fail here), apply its EXIF orientation, return RGB.

    Its size is checked from the header, before decoding, against the pixel limit (``check_image_size``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"image file {str(path)!r} is empty (0 bytes)")
    return decode_image(path, repr(str(path)), max_pixels)


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
