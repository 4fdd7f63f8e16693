"""``hf-vtok eval``: reconstruction metrics of several tokenizers on the same images, with a table, a plot and a grid.

    hf-vtok eval --model vitok-350M-f16x64 --model vitok-5B-f32x128 --data imagenet_val/ \\
        --resolution 256 --num-samples 5000 --metrics psnr,ssim,lpips,rfid,fdd --out eval/

Every tokenizer goes through the generic contract ``processor(images) -> model.encode(**inputs) ->
model.decode(encoded) -> processor.postprocess(...)``; the originals are framed once (``--crop``), and
their rFID / FDD statistics are computed once and shared by all tokenizers. The metrics are computed through
hf_vtok's ``evaluate`` modules (``hf_vtok.metrics.evaluate_metrics.ReconstructionEvaluation``).
"""

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import CROP_MODES, count_images, frame_image, iter_images
from ..hub.loading import load_tokenizer
from ..metrics.dino import DEFAULT_FDD_MODEL, DEFAULT_FDD_RESOLUTION
from ..metrics.inception import FID_INCEPTION_URL, INPUT_CONVENTIONS
from ..metrics.reconstruction import RECONSTRUCTION_METRICS, parse_metric_names
from ..utils.devices import check_device
from ..utils.dtypes import DTYPES
from ..utils.outputs import check_output_folder, create_output_folder, write_text_atomically
from ..utils.tables import format_cell, image_grid, markdown_table, plot_metrics, write_json
from .reconstruct import (
    DEFAULT_MAX_TOKENS,
    add_device_argument,
    add_image_limit_arguments,
    apply_image_limit,
    encode_decode,
    positive_int,
    token_budget_target,
)

DEFAULT_METRICS = "psnr,ssim,lpips,rfid"
logger = logging.getLogger(__name__)


def add_feature_network_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the fixed feature networks come from (shared by eval and eval-generation)."""
    group = parser.add_argument_group("feature networks (paths, URLs or hf://owner/repo/file)")
    group.add_argument(
        "--inception-weights", default=None, help=f"FID InceptionV3 weights (default: {FID_INCEPTION_URL})"
    )
    group.add_argument(
        "--fid-input",
        choices=INPUT_CONVENTIONS,
        default="pytorch-fid",
        help="how images reach the Inception: pytorch-fid (bilinear, [-1, 1]), torch-fidelity (TF1 bilinear on "
        "8-bit), vitok (bicubic AA, fed in [0, 1] as ViTok-v2's eval does)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", action="append", required=True, help="hf_vtok folder or Hub id (repeat for several)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="image folder, image file, .tar shards (brace ranges and globs), "
        "or a dataset for `datasets` (Hub id or local folder)",
    )
    parser.add_argument("--split", default=None, help="dataset split (default: validation, else test, else train)")
    parser.add_argument("--image-column", default=None, help="dataset column holding the images (default: guessed)")
    parser.add_argument("--no-streaming", action="store_true", help="download the dataset instead of streaming it")
    parser.add_argument("--resolution", type=int, default=256, help="pixels of the evaluation framing (default 256)")
    parser.add_argument(
        "--crop",
        choices=CROP_MODES,
        default="center",
        help="center: ADM center crop to resolution (FlowMo, MAETok, V2Flow, ViTok adm_center); longest-side: "
        "ViTok-v2's native-aspect resize of the longest side; none: images as they are",
    )
    parser.add_argument("--num-samples", type=positive_int, default=None, help="images to evaluate (default: all)")
    parser.add_argument(
        "--metrics", default=DEFAULT_METRICS, help=f"comma-separated, of {','.join(RECONSTRUCTION_METRICS)}"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="images per tokenizer call (and per metric update)"
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=DEFAULT_MAX_TOKENS,
        help="with --crop none, NaFlex tokenizers take images of at most this many tokens (default "
        f"{DEFAULT_MAX_TOKENS})",
    )
    add_image_limit_arguments(parser)
    add_device_argument(parser)
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="tokenizer dtype (metrics run in fp32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of stochastic decoders")
    parser.add_argument("--out", default="eval_results", help="output folder (results.json, results.md, PNGs)")
    parser.add_argument("--grid-images", type=int, default=6, help="images shown in the reconstruction grid")
    parser.add_argument("--grid-crop", type=int, default=128, help="pixels of the center crop shown per image")
    add_feature_network_arguments(parser)
    group = parser.add_argument_group("LPIPS and FDD networks")
    group.add_argument(
        "--lpips-vgg-weights", default=None, help="torchvision VGG16 weights (default: torchvision's URL)"
    )
    group.add_argument(
        "--lpips-head-weights", default=None, help="LPIPS v0.1 vgg.pth (default: the copy in torchmetrics)"
    )
    group.add_argument("--fdd-model", default=DEFAULT_FDD_MODEL, help="DINOv2 / DINOv3 model id or folder for FDD")
    group.add_argument("--fdd-resolution", type=int, default=DEFAULT_FDD_RESOLUTION, help="DINO input size for FDD")
    parser.add_argument(
        "--push-metrics",
        metavar="NAMESPACE",
        default=None,
        help="after the run, push the evaluate modules of --metrics as metric Spaces NAMESPACE/<metric> "
        "(hf_vtok.hub.push_metric_spaces; needs a Hub token)",
    )


def tokens_per_image(encoded) -> list[int]:
    """Latent tokens of each image of an ``encode`` output (valid tokens only for NaFlex padding)."""
    patch_mask = getattr(encoded, "patch_mask", None)
    if patch_mask is not None:
        return [int(count) for count in patch_mask.sum(dim=-1)]
    tokens = getattr(encoded, "image_tokens", None)
    if tokens is None:
        tokens = encoded.latents
    if tokens.dim() == 4:  # [B, C, h, w] grid latents
        count = tokens.shape[-2] * tokens.shape[-1]
    elif tokens.dim() in (2, 3):  # [B, N] ids or [B, N, C] tokens
        count = tokens.shape[1]
    else:
        raise ValueError(f"cannot count tokens of latents of shape {tuple(tokens.shape)}")
    return [count] * tokens.shape[0]


def token_count(counts: list[int]) -> int | float:
    """Tokens per image of a run: the count when every image had it, else their mean (NaFlex at native size)."""
    if not counts:
        raise ValueError("no token counts: no image was encoded")
    return counts[0] if min(counts) == max(counts) else float(np.mean(counts))


MEAN_TOKENS_NOTE = (
    "\n(mean): the tokens per image vary (a NaFlex tokenizer encodes each image at its own size); "
    "results.json has their min and max.\n"
)


def token_table(rows: list[dict], metrics) -> str:
    """The results table; a tokenizer whose images had different token counts shows their mean, marked, and a note."""
    varying = [row for row in rows if "tokens_range" in row]
    shown = [
        {**row, "tokens_per_image": f"{format_cell(row['tokens_per_image'])} (mean)"} if row in varying else row
        for row in rows
    ]
    table = markdown_table(shown, [("name", "tokenizer"), ("tokens_per_image", "tokens / image")], metrics)
    return table + (MEAN_TOKENS_NOTE if varying else "")


def token_channels(encoded) -> int | None:
    latents = getattr(encoded, "latents", None)
    if latents is None:
        return None
    return int(latents.shape[1] if latents.dim() == 4 else latents.shape[-1])


def configure_processor(processor, crop: str, resolution: int):
    """NaFlex processors get the token budget of the framed size, padded to it as ViTok-v2's evaluation
    (``patchify(p, (S // p) ** 2)``); the framing is already done, so their own resize / crop is off.
    Fixed-size processors are left as they are (their output is resized back to the framed size)."""
    if hasattr(processor, "max_num_patches"):
        processor.do_resize = False
        processor.do_center_crop = False
        if crop == "none":
            processor.max_num_patches, processor.padding = None, "longest"
        else:
            processor.max_num_patches = math.ceil(resolution / processor.patch_size) ** 2
            processor.padding = "max_length"
    return processor


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def _match_size(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    reconstruction = reconstruction.float().cpu()
    if reconstruction.shape[-2:] == original.shape[-2:]:
        return reconstruction
    resized = F.interpolate(reconstruction[None], size=original.shape[-2:], mode="bicubic", antialias=True)
    return resized[0].clamp(0, 1)


def _batches(iterable, size: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def display_names(model_ids: list[str]) -> list[str]:
    """Short unique labels: the folder / repo name, numbered where two coincide."""
    names = [Path(model_id.rstrip("/")).name or model_id for model_id in model_ids]
    return [f"{name} ({index + 1})" if names.count(name) > 1 else name for index, name in enumerate(names)]


def load_feature_networks(args, metrics: tuple[str, ...], device: str) -> dict:
    """Every requested feature network, loaded before any tokenizer work so a missing file fails fast."""
    networks = {}
    if "lpips" in metrics:
        from ..losses.lpips import LPIPS

        networks["lpips"] = LPIPS.from_pretrained(args.lpips_vgg_weights, args.lpips_head_weights)
    if "rfid" in metrics:
        from ..metrics.inception import FIDInceptionV3

        networks["inception"] = FIDInceptionV3.from_pretrained(args.inception_weights)
    if "fdd" in metrics:
        from ..metrics.dino import DinoFeatureExtractor

        networks["dino"] = DinoFeatureExtractor.from_pretrained(args.fdd_model, args.fdd_resolution)
    return {name: network.to(device) for name, network in networks.items()}


def evaluate_reconstruction(
    models: list[str],
    data: str,
    metrics=DEFAULT_METRICS,
    *,
    networks: dict,
    out: str | Path = "eval_results",
    split: str | None = None,
    image_column: str | None = None,
    streaming: bool = True,
    resolution: int = 256,
    crop: str = "center",
    num_samples: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    fid_input: str = "pytorch-fid",
    grid_images: int = 6,
    grid_crop: int = 128,
    settings: dict | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
) -> dict:
    """Score every tokenizer of ``models`` on ``data``; write results.json, results.md, metrics.png and
    reconstructions.png to ``out``; return the results dict (with the written paths under ``"files"``).

    ``out`` is created only when the results are written (a bad ``data`` or model leaves nothing behind). With
    ``crop="none"`` an image over ``max_tokens`` tokens of a NaFlex tokenizer is an error naming it."""
    metrics = parse_metric_names(metrics, RECONSTRUCTION_METRICS)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if crop != "none" and resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    out = check_output_folder(out, "--out")
    # the first image before any model work: a data set that cannot be read fails at once
    next(iter(iter_images(data, split=split, num_samples=1, streaming=streaming, image_column=image_column)), None)
    # the metrics are hf_vtok's evaluate modules (evaluate.load + evaluate.combine); the originals' rFID / FDD
    # features of the first tokenizer are kept for the others
    from ..metrics.evaluate_metrics import ReconstructionEvaluation

    scorer = ReconstructionEvaluation(
        metrics,
        lpips=networks.get("lpips"),
        inception=networks.get("inception"),
        fid_input_convention=fid_input,
        dino=networks.get("dino"),
        device=device,
        keep_reference_features=len(models) > 1,
    )
    names = display_names(models)
    total = count_images(data, num_samples)  # None (a bar without an end) where only reading tells
    rows, grid_rows = [], []
    num_images = None
    for model_index, (model_id, name) in enumerate(zip(models, names)):
        model, processor = load_tokenizer(model_id, device, dtype)
        configure_processor(processor, crop, resolution)
        generator = torch.Generator(device=device).manual_seed(seed)
        scorer.reset()
        token_counts, shown, channels, resized_warning = [], [], None, False
        tokenizer_seconds = 0.0
        images = iter_images(
            data, split=split, num_samples=num_samples, streaming=streaming, image_column=image_column
        )
        progress = tqdm(total=total, desc=f"eval {name}", unit="img", disable=None)
        for batch in _batches(images, batch_size):
            framed = [frame_image(image, crop, resolution) for _, image in batch]
            for (key, _), image in zip(batch, framed):
                if token_budget_target(image.size, processor, max_tokens) is not None:
                    raise ValueError(
                        f"{key!r} of {str(data)!r} ({image.width}x{image.height}) needs more than --max-tokens "
                        f"{max_tokens} tokens of {processor.patch_size} px at its own size (--crop none): frame it "
                        "with --crop center / longest-side, or raise --max-tokens"
                    )
            originals = [_to_tensor(image) for image in framed]
            started = time.perf_counter()
            encoded, decoded = encode_decode(model, processor, framed, generator, output_type="pt")
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            tokenizer_seconds += time.perf_counter() - started
            if not resized_warning and any(r.shape[-2:] != o.shape[-2:] for r, o in zip(decoded, originals)):
                resized_warning = True
                logger.warning(
                    f"{name} reconstructs at {tuple(decoded[0].shape[-2:])}, not at the {crop} framing "
                    f"{tuple(originals[0].shape[-2:])}: its reconstructions are resized back (bicubic) for scoring"
                )
            reconstructions = [_match_size(image, original) for image, original in zip(decoded, originals)]
            token_counts += tokens_per_image(encoded)
            channels = token_channels(encoded)
            scorer.update(originals, reconstructions, update_real=model_index == 0)
            shown += list(zip(originals, reconstructions))[: max(grid_images - len(shown), 0)]
            progress.update(len(batch))
        progress.close()
        if scorer.num_images == 0:
            raise ValueError(f"no images found in {data!r}")
        if num_images is not None and scorer.num_images != num_images:
            raise ValueError(f"{data!r} gave {scorer.num_images} images for {name} but {num_images} before")
        num_images = scorer.num_images
        row = {
            "name": name,
            "model": model_id,
            "tokens_per_image": token_count(token_counts),
            "token_channels": channels,
            "num_images": num_images,
            # time of the tokenizer round trip alone (processor, encode, decode, postprocess), not of the metrics
            "tokenizer_seconds": round(tokenizer_seconds, 3),
            "images_per_second": round(num_images / tokenizer_seconds, 3) if tokenizer_seconds > 0 else None,
        }
        if min(token_counts) != max(token_counts):
            row["tokens_range"] = [min(token_counts), max(token_counts)]
        row.update(scorer.compute())
        rows.append(row)
        if model_index == 0:
            grid_rows.append(("original", [original for original, _ in shown]))
        grid_rows.append((name, [reconstruction for _, reconstruction in shown]))
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    results = {
        "data": str(data),
        "split": split,
        "crop": crop,
        "resolution": resolution if crop != "none" else None,
        "num_images": num_images,
        "metrics": list(metrics),
        "settings": {
            "fid_input": fid_input,
            "dtype": str(dtype).replace("torch.", ""),
            "seed": seed,
            **(settings or {}),
        },
        "models": rows,
    }
    framing = "native size" if crop == "none" else f"{crop} {resolution}px"
    header = (
        f"Reconstruction of {num_images} images of `{data}`" + (f" ({split})" if split else "") + f", {framing}.\n\n"
    )
    table = token_table(rows, metrics)
    create_output_folder(out, "--out")
    files = {
        "json": write_json(results, out / "results.json"),
        "markdown": out / "results.md",
        "plot": plot_metrics(
            rows,
            metrics,
            out / "metrics.png",
            x_key="tokens_per_image",
            x_label="tokens per image",
            label_key="name",
            title=f"{Path(str(data).rstrip('/')).name}: {num_images} images, {framing}",
        ),
        "grid": image_grid(grid_rows, out / "reconstructions.png", crop=grid_crop),
    }
    write_text_atomically(files["markdown"], header + table)
    results["files"] = {key: str(path) for key, path in files.items()}
    results["table"] = table
    return results


def run(args: argparse.Namespace) -> dict:
    apply_image_limit(args)
    check_device(args.device)
    check_output_folder(args.out, "--out")
    metrics = parse_metric_names(args.metrics, RECONSTRUCTION_METRICS)
    networks = load_feature_networks(args, metrics, args.device)
    results = evaluate_reconstruction(
        args.model,
        args.data,
        metrics,
        networks=networks,
        out=args.out,
        split=args.split,
        image_column=args.image_column,
        streaming=not args.no_streaming,
        resolution=args.resolution,
        crop=args.crop,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        device=args.device,
        dtype=DTYPES[args.dtype],
        seed=args.seed,
        fid_input=args.fid_input,
        grid_images=args.grid_images,
        grid_crop=args.grid_crop,
        settings={"fdd_model": args.fdd_model, "fdd_resolution": args.fdd_resolution} if "fdd" in metrics else None,
        max_tokens=args.max_tokens,
    )
    print(results["table"], end="")
    print(f"wrote {', '.join(results['files'].values())}")
    if args.push_metrics:
        from ..hub.metric_spaces import push_metric_spaces

        pushed = push_metric_spaces(metrics, args.push_metrics)
        results["metric_spaces"] = {name: f"{args.push_metrics}/{name}" for name in pushed}
        print(f"pushed the metric Spaces {', '.join(results['metric_spaces'].values())}")
    return results
