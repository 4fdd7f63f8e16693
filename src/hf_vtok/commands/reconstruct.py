"""``hf-vtok reconstruct``: encode and decode image files with any hf_vtok tokenizer.

Reconstructions are written as PNG at each input's original size, with a side-by-side PNG (input |
reconstruction). Without ``--model`` the small ViTok embedded in the package is used (see
``training_scripts/make_default_model.py``).
"""

import argparse
import inspect
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..hub.loading import load_tokenizer
from ..utils.dtypes import DTYPES
from ..utils.images import load_image

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "default_model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument(
        "--model", default=None, help="hf_vtok folder or Hub id (default: the small ViTok embedded in the package)"
    )
    parser.add_argument("--out", default="reconstructions", help="output folder (default: reconstructions/)")
    parser.add_argument("--no-side-by-side", action="store_true", help="do not write the input | reconstruction PNGs")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images per batch (NaFlex models pad within a batch)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic decoders")


def processor_for_any_size(processor):
    """NaFlex processors take each image at its own size: lift the token budget, pad only within a batch."""
    if hasattr(processor, "max_num_patches") and not processor.do_resize:
        processor.max_num_patches = None
        processor.padding = "longest"
    return processor


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


def reconstruct_images(model, processor, images: list[Image.Image], generator=None) -> list[Image.Image]:
    _, results = encode_decode(model, processor, images, generator)
    # back to the file's own size where the processor resized or cropped
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


def psnr_db(reconstruction: Image.Image, original: Image.Image) -> float:
    error = np.mean((np.asarray(reconstruction, dtype=np.float64) - np.asarray(original, dtype=np.float64)) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0**2 / error))


def default_model_path() -> str:
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise FileNotFoundError(f"the embedded default model is missing from {DEFAULT_MODEL}; pass --model")
    return str(DEFAULT_MODEL)


def run(args: argparse.Namespace) -> list[Path]:
    paths = [Path(path) for path in args.images]
    images = [load_image(path) for path in paths]  # fail on a bad file before any model work
    model_id = args.model or default_model_path()
    model, processor = load_tokenizer(model_id, args.device, DTYPES[args.dtype])
    processor = processor_for_any_size(processor)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    written = []
    batches = range(0, len(images), args.batch_size)
    for start in tqdm(batches, desc="reconstruct", unit="batch", disable=len(batches) < 2):
        chunk = images[start : start + args.batch_size]
        results = reconstruct_images(model, processor, chunk, generator)
        for path, image, result in zip(paths[start : start + args.batch_size], chunk, results):
            target = out_dir / f"{path.stem}_recon.png"
            result.save(target)
            written.append(target)
            if not args.no_side_by_side:
                side_by_side(image, result).save(out_dir / f"{path.stem}_side_by_side.png")
            print(f"{path.name}: {image.width}x{image.height}, PSNR {psnr_db(result, image):.2f} dB -> {target}")
    print(
        f"wrote {len(written)} reconstruction(s) to {out_dir}"
        + ("" if args.no_side_by_side else " (and side-by-side PNGs)")
    )
    return written
