r"""Cache the latents of an image folder (and of its horizontal flips) in Arrow shards.

    hf-vtok cache-latents --vae mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers --images data/train \
        --output cache/train-512 --resolution 512 --batch-size 32

Every image gets the ADM center crop to ``--resolution`` and [-1, 1] pixels; the autoencoder encodes
it and its horizontally flipped copy. Latents are stored as the encoder returns them (float32, *not*
multiplied by the scaling factor, which ``cache_info.json`` records), like V²Flow's ``main_cache.py``.
Rows: ``path`` (relative to the image folder), ``label`` (its first folder, "" for flat folders),
``latents`` and ``latents_flip`` ``[C, h, w]``. Shards of ``--shard-size`` images are written one by
one (``shard-00000.arrow``, ...); running the same command again skips the finished shards, so an
interrupted run resumes. ``load_latent_cache(folder)`` returns a ``datasets.Dataset``.
"""

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..utils.images import load_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
INFO_FILE = "cache_info.json"
SHARD_PATTERN = "shard-{:05d}.arrow"


def _datasets():
    try:
        import datasets
    except ImportError as error:
        raise RuntimeError("the latent cache needs the `datasets` package: pip install 'hf_vtok[train]'") from error
    return datasets


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted POSIX paths relative to it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(f"{str(folder)!r} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def encode_latents(vae, pixel_values: torch.Tensor) -> torch.Tensor:
    """Deterministic latents of a diffusers autoencoder: ``.latent`` (DC-AE) or the posterior mode (KL)."""
    encoded = vae.encode(pixel_values)
    for name in ("latent", "latents"):
        if getattr(encoded, name, None) is not None:
            return getattr(encoded, name)
    if getattr(encoded, "latent_dist", None) is not None:
        return encoded.latent_dist.mode()
    raise ValueError(f"{type(vae).__name__}.encode returned {type(encoded).__name__} without latents")


def _settings(vae_name: str, resolution: int, shard_size: int, files: list[str]) -> dict:
    digest = hashlib.sha256("\n".join(files).encode()).hexdigest()[:16]
    return {"vae": vae_name, "resolution": resolution, "shard_size": shard_size, "num_images": len(files), "files_sha": digest}


@torch.no_grad()
def cache_latents(
    vae,
    image_folder: str | os.PathLike,
    output: str | os.PathLike,
    resolution: int,
    batch_size: int = 32,
    shard_size: int = 1000,
    vae_name: str | None = None,
    progress: bool = True,
) -> Path:
    """Encode every image of ``image_folder`` (and its flip) with ``vae`` into Arrow shards under ``output``.

    Finished shards of an earlier run with the same settings are kept; other settings are an error.
    """
    datasets = _datasets()
    from datasets.arrow_writer import ArrowWriter

    if resolution <= 0 or batch_size <= 0 or shard_size <= 0:
        raise ValueError("resolution, batch_size and shard_size must be positive")
    image_folder, output = Path(image_folder), Path(output)
    files = list_images(image_folder)
    settings = _settings(vae_name or type(vae).__name__, resolution, shard_size, files)
    output.mkdir(parents=True, exist_ok=True)
    info_path = output / INFO_FILE
    info = {**settings, "completed_shards": []}
    if info_path.is_file():
        previous = json.loads(info_path.read_text())
        changed = {key: (previous.get(key), value) for key, value in settings.items() if previous.get(key) != value}
        if changed:
            raise ValueError(
                f"{str(output)!r} holds a cache made with other settings {changed} (before, now); "
                "use another output folder or delete it"
            )
        info = previous
    from ..models.v2flow import V2FlowImageProcessor  # the ADM square crop to [-1, 1], as main_cache.py

    processor = V2FlowImageProcessor(crop_size={"height": resolution, "width": resolution})
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    num_shards = -(-len(files) // shard_size)
    todo = [index for index in range(num_shards) if index not in info["completed_shards"]]
    bar = tqdm(total=len(files), desc="cache latents", unit="img", disable=not progress)
    bar.update(len(files) - sum(len(files[i * shard_size : (i + 1) * shard_size]) for i in todo))
    features = None
    for shard in todo:
        shard_files = files[shard * shard_size : (shard + 1) * shard_size]
        target = output / SHARD_PATTERN.format(shard)
        partial = target.with_suffix(".arrow.partial")
        writer = None
        for start in range(0, len(shard_files), batch_size):
            names = shard_files[start : start + batch_size]
            images = [load_image(image_folder / name) for name in names]
            pixels = processor(images, return_tensors="pt").pixel_values.to(device, dtype)
            latents = encode_latents(vae, pixels).float().cpu()
            flipped = encode_latents(vae, pixels.flip(dims=[3])).float().cpu()
            if writer is None:
                shape = tuple(latents.shape[1:])
                features = datasets.Features({
                    "path": datasets.Value("string"),
                    "label": datasets.Value("string"),
                    "latents": datasets.Array3D(shape=shape, dtype="float32"),
                    "latents_flip": datasets.Array3D(shape=shape, dtype="float32"),
                })
                writer = ArrowWriter(features=features, path=str(partial))
            writer.write_batch({
                "path": names,
                "label": [name.split("/")[0] if "/" in name else "" for name in names],
                "latents": latents.numpy(),
                "latents_flip": flipped.numpy(),
            })
            bar.update(len(names))
        writer.finalize()
        writer.close()
        os.replace(partial, target)  # a shard exists only once complete
        info["completed_shards"] = sorted(info["completed_shards"] + [shard])
        info["latent_shape"] = list(features["latents"].shape)
        if hasattr(getattr(vae, "config", None), "scaling_factor"):
            info["scaling_factor"] = float(vae.config.scaling_factor)
        info_path.write_text(json.dumps(info, indent=1))
    bar.close()
    return output


def load_latent_cache(folder: str | os.PathLike, require_complete: bool = True):
    """The cached rows as one ``datasets.Dataset`` (torch format), in image-file order."""
    datasets = _datasets()
    folder = Path(folder)
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise ValueError(f"{str(folder)!r} is not a latent cache (no {INFO_FILE})")
    info = json.loads(info_path.read_text())
    expected = -(-info["num_images"] // info["shard_size"])
    if require_complete and len(info["completed_shards"]) != expected:
        raise ValueError(
            f"{str(folder)!r} holds {len(info['completed_shards'])} of {expected} shards: run the same "
            "cache-latents command again to finish it (or pass require_complete=False)"
        )
    shards = [datasets.Dataset.from_file(str(folder / SHARD_PATTERN.format(index))) for index in info["completed_shards"]]
    return datasets.concatenate_datasets(shards).with_format("torch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", required=True, help="diffusers autoencoder folder or Hub id (AutoencoderDC for V2Flow)")
    parser.add_argument("--vae-subfolder", help="subfolder of --vae holding the autoencoder (e.g. 'vae')")
    parser.add_argument("--images", required=True, help="image folder (class sub-folders optional)")
    parser.add_argument("--output", required=True, help="cache folder (created; reused to resume)")
    parser.add_argument("--resolution", type=int, required=True, help="square image size, e.g. 512 or 1024")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1000, help="images per Arrow shard (the resume unit)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="autoencoder dtype (latents are stored as float32)")


def run(args: argparse.Namespace) -> Path:
    from diffusers import AutoencoderDC, AutoencoderKL

    dtype = getattr(torch, args.dtype)
    config = AutoencoderDC.load_config(args.vae, subfolder=args.vae_subfolder)
    cls = AutoencoderDC if config.get("_class_name") == "AutoencoderDC" else AutoencoderKL
    vae = cls.from_pretrained(args.vae, subfolder=args.vae_subfolder, torch_dtype=dtype).to(args.device).eval()
    output = cache_latents(
        vae, args.images, args.output, args.resolution, args.batch_size, args.shard_size, vae_name=args.vae
    )
    print(f"cached latents of {args.images} in {output}")
    return output
