"""``hf-vtok reconstruct``: encode and decode image files with any hf_vtok tokenizer.

Reconstructions are written as PNG at each input's original size, with a side-by-side PNG (input |
reconstruction). Without ``--model`` the small ViTok embedded in the package is used (see
``training_scripts/make_default_model.py``).
"""

import argparse
import inspect
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..hub.loading import load_tokenizer
from ..utils.devices import check_device
from ..utils.dtypes import DTYPES
from ..utils.images import DEFAULT_MAX_IMAGE_PIXELS, load_image, parse_pixel_limit, set_max_image_pixels
from ..utils.outputs import atomic_path, check_output_folder, create_output_folder

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "default_model"
# tokens of one image of a NaFlex model (1024x1024 at 8 px patches); larger images are encoded downscaled
DEFAULT_MAX_TOKENS = 16384


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def pixel_limit(text: str) -> int | None:
    """argparse type of ``--max-pixels``: a number of pixels, or 0 / none for no limit."""
    try:
        return parse_pixel_limit(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_image_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-pixels``: the pixel limit of every image the command reads (checked from the file header)."""
    parser.add_argument(
        "--max-pixels",
        type=pixel_limit,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="refuse images with more pixels, read from the header before decoding (default "
        f"{DEFAULT_MAX_IMAGE_PIXELS}; 0: no limit)",
    )


def apply_image_limit(args: argparse.Namespace) -> None:
    set_max_image_pixels(getattr(args, "max_pixels", DEFAULT_MAX_IMAGE_PIXELS))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument(
        "--model", default=None, help="hf_vtok folder or Hub id (default: the small ViTok embedded in the package)"
    )
    parser.add_argument("--out", default="reconstructions", help="output folder (default: reconstructions/)")
    parser.add_argument("--no-side-by-side", action="store_true", help="do not write the input | reconstruction PNGs")
    parser.add_argument(
        "--batch-size", type=positive_int, default=1, help="images per batch (NaFlex models pad within a batch)"
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS,
        help="NaFlex models (ViTok) take each image at its own size up to this many tokens; larger images are "
        f"encoded downscaled to it and the reconstruction scaled back (default {DEFAULT_MAX_TOKENS}; time grows "
        "with its square)",
    )
    add_image_limit_arguments(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic decoders")


def processor_for_any_size(processor):
    """NaFlex processors take each image at its own size: lift the token budget, pad only within a batch."""
    if hasattr(processor, "max_num_patches") and not processor.do_resize:
        processor.max_num_patches = None
        processor.padding = "longest"
    return processor


def token_budget_target(size: tuple[int, int], processor, max_tokens: int | None) -> tuple[int, int] | None:
    """The ``(width, height)`` an image of ``size`` is downscaled to so that a NaFlex processor without a budget
    makes at most ``max_tokens`` patches of it; None when it fits, or the processor sizes images itself."""
    patch_size = getattr(processor, "patch_size", None)
    if max_tokens is None or getattr(processor, "max_num_patches", 0) is not None or not patch_size:
        return None
    width, height = size
    if math.ceil(height / patch_size) * math.ceil(width / patch_size) <= max_tokens:
        return None
    from ..models.vitok.image_processing_vitok import token_budget_size

    height, width = token_budget_size(height, width, patch_size, max_tokens)
    return width, height


def fit_token_budget(image: Image.Image, processor, max_tokens: int | None) -> Image.Image:
    """``image`` downscaled (PIL, antialiased) to ``token_budget_target`` where it is over the budget."""
    target = token_budget_target(image.size, processor, max_tokens)
    return image if target is None else image.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)


def decode_kwargs(model, generator=None) -> dict:
    """Extra arguments of ``model.decode``: the generator of stochastic decoders, when it takes one."""
    accepts = "generator" in inspect.signature(model.decode).parameters
    return {"generator": generator} if accepts and generator is not None else {}


@torch.inference_mode()
def encode_decode(model, processor, images: list[Image.Image], generator=None, output_type: str = "pil"):
    """The generic tokenizer round trip: ``processor -> encode -> decode -> postprocess``.

    Returns ``(encoded, reconstructions)``; reconstructions are what ``processor.postprocess`` gives for
    ``output_type`` ("pil", or "pt" for ``[3, H, W]`` tensors in [0, 1]), at the processor's output size.
    """
    inputs = processor(images, return_tensors="pt").to(model.device)
    encoded = model.encode(**inputs)
    decoded = model.decode(encoded, **decode_kwargs(model, generator))
    return encoded, processor.postprocess(decoded, output_type=output_type)


def reconstruct_images(
    model, processor, images: list[Image.Image], generator=None, max_tokens: int | None = None
) -> list[Image.Image]:
    """Reconstructions at each image's own size (NaFlex inputs over ``max_tokens`` are encoded downscaled)."""
    _, results = encode_decode(
        model, processor, [fit_token_budget(i, processor, max_tokens) for i in images], generator
    )
    # back to the file's own size where the processor (or the token budget) resized or cropped
    return [
        result if result.size == image.size else result.resize(image.size, Image.Resampling.BICUBIC)
        for result, image in zip(results, images)
    ]


def side_by_side(first: Image.Image, second: Image.Image, gap: int = 8) -> Image.Image:
    """``first | second`` on a white canvas."""
    canvas = Image.new("RGB", (first.width + gap + second.width, max(first.height, second.height)), "white")
    canvas.paste(first, (0, 0))
    canvas.paste(second, (first.width + gap, 0))
    return canvas


def psnr_db(reconstruction: Image.Image, original: Image.Image, rows_per_chunk: int = 256) -> float:
    """PSNR of two 8-bit RGB images of one size, summed over row bands (bounded memory for large images)."""
    first, second = np.asarray(reconstruction), np.asarray(original)
    squared = 0.0
    for top in range(0, first.shape[0], rows_per_chunk):
        difference = first[top : top + rows_per_chunk].astype(np.int32) - second[top : top + rows_per_chunk]
        squared += float(np.square(difference, dtype=np.int64).sum())
    error = squared / max(first.size, 1)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def default_model_path() -> str:
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"the embedded default model is missing from {DEFAULT_MODEL}; pass --model")
    return str(DEFAULT_MODEL)


def output_stems(paths: list[Path]) -> list[str]:
    """One output name per input: the file's stem, or where inputs share a stem (``a/x.png b/x.png``, ``x.png
    x.jpg``) the stem numbered in input order (``x-1``, ``x-2``)."""
    stems = [path.stem for path in paths]
    seen: dict[str, int] = {}
    unique = []
    for stem in stems:
        if stems.count(stem) > 1:
            seen[stem] = seen.get(stem, 0) + 1
            unique.append(f"{stem}-{seen[stem]}")
        else:
            unique.append(stem)
    taken = set(stems)  # a numbered name must not be another input's own stem
    for index, name in enumerate(unique):
        while name != stems[index] and name in taken:
            name += "_"
        taken.add(name)
        unique[index] = name
    return unique


def run(args: argparse.Namespace) -> list[Path]:
    apply_image_limit(args)
    check_device(args.device)
    out_dir = check_output_folder(args.out, "--out")
    paths = [Path(path) for path in args.images]
    images = [load_image(path) for path in paths]  # fail on a bad file before any model work
    model_id = args.model or default_model_path()
    model, processor = load_tokenizer(model_id, args.device, DTYPES[args.dtype])
    processor = processor_for_any_size(processor)
    stems = output_stems(paths)
    for path, stem in zip(paths, stems):
        if stem != path.stem:
            print(f"{path}: another input has the name {path.stem!r}; written as {stem}_recon.png")
    create_output_folder(out_dir, "--out")
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    written = []
    batches = range(0, len(images), args.batch_size)
    for start in tqdm(batches, desc="reconstruct", unit="batch", disable=True if len(batches) < 2 else None):
        chunk = images[start : start + args.batch_size]
        for path, image in zip(paths[start : start + args.batch_size], chunk):
            target = token_budget_target(image.size, processor, args.max_tokens)
            if target is not None:
                print(
                    f"{path}: {image.width}x{image.height} is over --max-tokens {args.max_tokens}: encoded at "
                    f"{target[0]}x{target[1]}, the reconstruction scaled back (raise --max-tokens for the native "
                    "size; time grows with its square)"
                )
        results = reconstruct_images(model, processor, chunk, generator, args.max_tokens)
        names = stems[start : start + args.batch_size]
        for path, name, image, result in zip(paths[start : start + args.batch_size], names, chunk, results):
            target = out_dir / f"{name}_recon.png"
            with atomic_path(target) as partial:
                result.save(partial, format="PNG")
            written.append(target)
            if not args.no_side_by_side:
                with atomic_path(out_dir / f"{name}_side_by_side.png") as partial:
                    side_by_side(image, result).save(partial, format="PNG")
            print(f"{path}: {image.width}x{image.height}, PSNR {psnr_db(result, image):.2f} dB -> {target}")
    print(
        f"wrote {len(written)} reconstruction(s) to {out_dir}"
        + ("" if args.no_side_by_side else " (and side-by-side PNGs)")
    )
    return written
