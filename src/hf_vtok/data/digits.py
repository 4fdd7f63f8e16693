"""The handwritten digits inside the scikit-learn wheel (``sklearn.datasets.load_digits``: 1797 images, 8 x 8,
17 grey levels, classes 0-9) as small RGB images, with the fixed train / held-out split of the embedded default
generator (``training_scripts/make_default_generator.py``).

Digits are white ink on black, upsampled bicubically to ``size`` pixels; ``to_digit_pixels`` turns such images
back into the 64 values (0..1) of the 8 x 8 grid by averaging each ``size / 8`` square block.
"""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

NUM_DIGITS = 1797
DIGIT_SIDE = 8
DIGIT_LEVELS = 16  # load_digits' pixel values are 0..16
SPLIT_SEED = 0
NUM_HELD_OUT = 297


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(images [1797, 8, 8] float64 in [0, 1], labels [1797] int64)`` of scikit-learn's digits."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise ImportError("the digits data set ships with scikit-learn: pip install scikit-learn") from error
    digits = sklearn_digits()
    return digits.images / DIGIT_LEVELS, digits.target.astype(np.int64)


def digits_split(seed: int = SPLIT_SEED, num_held_out: int = NUM_HELD_OUT) -> dict[str, np.ndarray]:
    """``{"train", "held_out"}`` -> indices into ``load_digits()``: a ``RandomState(seed)`` permutation (stable
    across numpy versions), its last ``num_held_out`` entries held out, both sorted."""
    if not 0 < num_held_out < NUM_DIGITS:
        raise ValueError(f"num_held_out must be in 1..{NUM_DIGITS - 1}, got {num_held_out}")
    order = np.random.RandomState(seed).permutation(NUM_DIGITS)
    return {"train": np.sort(order[:-num_held_out]), "held_out": np.sort(order[-num_held_out:])}


def digit_image(pixels: np.ndarray, size: int = 32) -> Image.Image:
    """``[8, 8]`` values in [0, 1] -> an RGB PIL image of ``size`` x ``size`` (bicubic upsampling)."""
    if pixels.shape != (DIGIT_SIDE, DIGIT_SIDE):
        raise ValueError(f"a digit is {DIGIT_SIDE} x {DIGIT_SIDE} pixels, got shape {pixels.shape}")
    if size % DIGIT_SIDE:
        raise ValueError(f"size must be a multiple of {DIGIT_SIDE}, got {size}")
    grey = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    return grey.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def write_digit_folder(folder: str | os.PathLike, indices, size: int = 32) -> Path:
    """Write the digits ``indices`` as ``folder/<class>/<index>.png`` (an image folder whose sub-folders are the
    classes, as ``hf_vtok.data.FolderImages`` and the training scripts read it); returns ``folder``."""
    images, labels = load_digits()
    folder = Path(folder)
    for index in indices:
        target = folder / str(labels[index])
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{int(index):04d}.png"
        if not path.exists():
            digit_image(images[index], size).save(path)
    return folder


def to_digit_pixels(images: torch.Tensor) -> np.ndarray:
    """Images ``[B, 3, H, W]`` in [0, 1] (``H = W``, a multiple of 8) -> ``[B, 64]`` float64 in [0, 1]: the grey
    level averaged over each of the 8 x 8 blocks, the layout of ``load_digits().data``."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or images.shape[2] % 8:
        raise ValueError(f"expected RGB images [B, 3, S, S] with S a multiple of 8, got {tuple(images.shape)}")
    grey = images.detach().double().mean(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(grey, DIGIT_SIDE).flatten(1).cpu().numpy()


__all__ = [
    "NUM_HELD_OUT",
    "SPLIT_SEED",
    "digit_image",
    "digits_split",
    "load_digits",
    "to_digit_pixels",
    "write_digit_folder",
]
