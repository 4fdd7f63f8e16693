"""``hf-vtok cache-latents``: encode an image data set into resumable Arrow shards (``hf_vtok.data.latent_cache``)."""

import argparse
import os
from pathlib import Path

import torch

from ..data.latent_cache import cache_latents
from ..data.sources import open_image_source
from ..hub.loading import load_autoencoder
from ..utils.devices import check_device
from ..utils.outputs import check_output_folder
from .reconstruct import add_image_limit_arguments, apply_image_limit, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="hf_vtok tokenizer or diffusers autoencoder (folder or Hub id)")
    parser.add_argument("--subfolder", help="subfolder of --model holding the autoencoder (e.g. 'vae')")
    parser.add_argument("--images", required=True, help="image folder, webdataset shards, or a datasets id / folder")
    parser.add_argument("--split", help="dataset split")
    parser.add_argument("--image-column")
    parser.add_argument("--label-column")
    parser.add_argument("--output", required=True, help="cache folder (created; run the same command again to resume)")
    parser.add_argument(
        "--resolution",
        type=positive_int,
        help="ADM center crop to this square size (needed unless all images share one size)",
    )
    parser.add_argument("--flip", action="store_true", help="also store the latents of the flipped images")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument(
        "--shard-size", type=positive_int, default=1000, help="images per Arrow shard (the resume unit)"
    )
    add_image_limit_arguments(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="autoencoder dtype (latents are stored as float32)",
    )


def run(args: argparse.Namespace) -> Path:
    apply_image_limit(args)
    check_output_folder(args.output, "--output")
    state = None
    try:  # under accelerate launch / torchrun: split the shards between the processes
        from accelerate import PartialState

        state = PartialState() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    except ImportError:
        pass
    device = state.device if state is not None else check_device(args.device)
    source = open_image_source(args.images, args.split, args.image_column, args.label_column)
    skipped = getattr(source, "skipped_images", 0)
    if skipped:
        print(f"{args.images}: {skipped} further image member(s) of webdataset samples skipped (the first is used)")
    model = load_autoencoder(args.model, device, getattr(torch, args.dtype), args.subfolder)
    output = cache_latents(
        model,
        source,
        args.output,
        args.resolution,
        args.batch_size,
        args.shard_size,
        args.flip,
        model_name=args.model,
        num_processes=state.num_processes if state else 1,
        process_index=state.process_index if state else 0,
    )
    print(f"cached the latents of {args.images} in {output}")
    return output
