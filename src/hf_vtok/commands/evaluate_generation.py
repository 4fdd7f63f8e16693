"""``hf-vtok eval-generation``: class-conditional samples of a pipeline, scored by gFID and Inception Score.

    hf-vtok eval-generation --pipeline sit-xl-maetok --num-samples 50000 --guidance-scale 1.0 1.5 \\
        --reference VIRTUAL_imagenet256_labeled.npz --out gen_eval/

Labels cycle through the classes (``i % num_classes``), so every class gets the same number of samples.
The reference is an ADM-format ``.npz`` (``mu`` / ``sigma``, or an ``arr_0`` image batch) or any image
source of ``hf-vtok eval --data`` (center-cropped to ``--resolution``). ``--save-reference`` writes the
reference statistics as an ADM ``.npz``; ``--save-samples`` writes each run's samples as an ADM sample
batch (``arr_0`` uint8 NHWC, ``arr_1`` labels), which the ADM TensorFlow evaluator also reads.
"""

import argparse
import inspect
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.images import frame_image, iter_images
from ..hub.loading import load_pipeline
from ..metrics.frechet import load_reference_npz, save_reference_statistics
from ..metrics.generation import GenerationMetrics
from ..metrics.inception import FIDInceptionV3
from ..utils.devices import check_device
from ..utils.dtypes import DTYPES
from ..utils.outputs import atomic_path, check_output_folder, create_output_folder, write_text_atomically
from ..utils.tables import image_grid, markdown_table, plot_metrics, write_json
from .evaluate import add_feature_network_arguments
from .reconstruct import add_image_limit_arguments, apply_image_limit, positive_int

GENERATION_METRICS = ("gfid", "is")
_CLASS_COUNT_KEYS = ("num_classes", "num_embeds_ada_norm", "class_num")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub id (model_index.json)")
    parser.add_argument(
        "--num-samples", type=positive_int, required=True, help="images to generate per guidance scale"
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        nargs="+",
        default=None,
        help="one or more classifier-free guidance scales (default: the pipeline's)",
    )
    parser.add_argument(
        "--num-inference-steps", type=positive_int, default=None, help="sampler steps (default: the pipeline's)"
    )
    parser.add_argument(
        "--num-classes", type=positive_int, default=None, help="number of classes (default: from the pipeline)"
    )
    parser.add_argument(
        "--reference", required=True, help="ADM .npz (mu/sigma or arr_0), or an image source as in eval --data"
    )
    parser.add_argument("--reference-split", default=None)
    parser.add_argument("--reference-image-column", default=None)
    parser.add_argument(
        "--reference-num-samples", type=positive_int, default=None, help="reference images to use (default: all)"
    )
    parser.add_argument(
        "--resolution", type=positive_int, default=256, help="center crop of reference images (default 256)"
    )
    parser.add_argument("--save-reference", default=None, help="write the reference mu / sigma to this .npz")
    parser.add_argument("--save-samples", action="store_true", help="write samples_<guidance>.npz (ADM sample batch)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    add_image_limit_arguments(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="generation_eval", help="output folder (results.json, results.md, PNGs)")
    parser.add_argument("--grid-images", type=int, default=8, help="samples shown per guidance scale")
    add_feature_network_arguments(parser)


def pipeline_num_classes(pipeline) -> int | None:
    for component_name in ("transformer", "unet"):
        config = getattr(getattr(pipeline, component_name, None), "config", None)
        for key in _CLASS_COUNT_KEYS:
            value = getattr(config, key, None) if config is not None else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def _images_to_tensor(images) -> torch.Tensor:
    """Pipeline output (NHWC float [0, 1] / uint8 array, CHW tensors, or PIL list) -> NCHW float [0, 1]."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Image.Image):
        images = np.stack([np.asarray(image.convert("RGB")) for image in images])
    if isinstance(images, torch.Tensor):
        tensor = images.float() if images.dtype != torch.uint8 else images.float() / 255
        return tensor.clamp(0, 1).cpu()
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"pipeline returned images of shape {array.shape}; expected [B, H, W, 3]")
    tensor = torch.from_numpy(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0))
    return tensor.permute(0, 3, 1, 2).clamp(0, 1)


def sample_batch(pipeline, labels: list[int], guidance_scale, num_inference_steps, generator) -> torch.Tensor:
    """One call of a class-conditional pipeline; only the arguments its ``__call__`` takes are passed."""
    parameters = inspect.signature(pipeline.__call__).parameters
    if "class_labels" not in parameters:
        raise ValueError(
            f"{type(pipeline).__name__} takes no class_labels: eval-generation needs a class-conditional pipeline"
        )
    kwargs = {"class_labels": labels, "generator": generator}
    if guidance_scale is not None:
        if "guidance_scale" not in parameters:
            raise ValueError(f"{type(pipeline).__name__} takes no guidance_scale")
        kwargs["guidance_scale"] = guidance_scale
    if num_inference_steps is not None:
        kwargs["num_inference_steps"] = num_inference_steps
    if "output_type" in parameters:
        kwargs["output_type"] = "np"
    output = pipeline(**kwargs)
    return _images_to_tensor(output.images if hasattr(output, "images") else output[0])


def _reference_from_images(scorer: GenerationMetrics, source: str, args) -> int:
    count = 0
    batch = []
    images = iter_images(
        source,
        split=args.reference_split,
        num_samples=args.reference_num_samples,
        image_column=args.reference_image_column,
    )
    for _, image in tqdm(images, desc="reference", unit="img", total=args.reference_num_samples, disable=None):
        batch.append(
            torch.from_numpy(np.asarray(frame_image(image, "center", args.resolution)).copy()).permute(2, 0, 1)
        )
        if len(batch) == args.batch_size:
            scorer.add_reference(torch.stack(batch))
            count, batch = count + len(batch), []
    if batch:
        scorer.add_reference(torch.stack(batch))
        count += len(batch)
    return count


def prepare_reference(scorer: GenerationMetrics, args) -> dict:
    """Fill the reference side of ``scorer`` from ``args.reference``; returns a description for the results."""
    reference = str(args.reference)
    if reference.endswith(".npz"):
        contents = load_reference_npz(reference)
        if "mu" in contents:
            scorer.set_reference(contents["mu"], contents["sigma"])
            return {"reference": reference, "reference_kind": "statistics"}
        images = torch.from_numpy(contents["images"]).permute(0, 3, 1, 2)
        for start in range(0, images.shape[0], args.batch_size):
            scorer.add_reference(images[start : start + args.batch_size])
        return {"reference": reference, "reference_kind": "image batch", "reference_images": int(images.shape[0])}
    count = _reference_from_images(scorer, reference, args)
    if count < 2:
        raise ValueError(f"reference {reference!r} gave {count} image(s); gFID needs at least 2")
    return {"reference": reference, "reference_kind": f"images, center {args.resolution}px", "reference_images": count}


def run(args: argparse.Namespace) -> dict:
    if args.num_samples < 2:
        raise ValueError(f"--num-samples must be at least 2, got {args.num_samples}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    apply_image_limit(args)
    check_device(args.device)
    out = check_output_folder(args.out, "--out")
    inception = FIDInceptionV3.from_pretrained(args.inception_weights).to(args.device)
    pipeline = load_pipeline(args.pipeline, args.device, DTYPES[args.dtype])
    num_classes = args.num_classes or pipeline_num_classes(pipeline)
    if not num_classes:
        raise ValueError("the pipeline's number of classes is not in its config; pass --num-classes")
    scorer = GenerationMetrics(inception, args.fid_input, device=args.device)
    reference = prepare_reference(scorer, args)  # before sampling: a bad reference fails fast
    create_output_folder(out, "--out")  # the inputs are good
    if args.save_reference:
        mean, covariance, _ = scorer.reference_statistics()
        save_reference_statistics(args.save_reference, mean, covariance)
    pipeline_name = Path(args.pipeline.rstrip("/")).name
    rows, grid_rows = [], []
    for guidance_scale in args.guidance_scale or [None]:
        scorer.reset()
        label = "default" if guidance_scale is None else f"{guidance_scale:g}"
        shown, kept, kept_labels = [], [], []
        started = time.perf_counter()
        progress = tqdm(total=args.num_samples, desc=f"sample cfg={label}", unit="img", disable=None)
        for batch_index, start in enumerate(range(0, args.num_samples, args.batch_size)):
            labels = [index % num_classes for index in range(start, min(start + args.batch_size, args.num_samples))]
            generator = torch.Generator().manual_seed(args.seed + batch_index)
            samples = sample_batch(pipeline, labels, guidance_scale, args.num_inference_steps, generator)
            scorer.update(samples)
            shown += list(samples[: max(args.grid_images - len(shown), 0)])
            if args.save_samples:
                kept.append((samples * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
                kept_labels += labels
            progress.update(len(labels))
        progress.close()
        seconds = time.perf_counter() - started
        row = {
            "pipeline": pipeline_name,
            "guidance_scale": guidance_scale,
            "label": label,
            "num_samples": scorer.num_samples,
            "seconds": round(seconds, 3),
            "images_per_second": round(scorer.num_samples / seconds, 3),
        }
        row.update(scorer.compute(seed=args.seed))
        rows.append(row)
        grid_rows.append((f"cfg {label}", shown))
        if args.save_samples:
            with atomic_path(out / f"samples_{label}.npz") as partial, partial.open("wb") as handle:
                np.savez(handle, arr_0=np.concatenate(kept), arr_1=np.asarray(kept_labels))

    results = {
        "pipeline": args.pipeline,
        "num_samples": args.num_samples,
        "num_classes": num_classes,
        "num_inference_steps": args.num_inference_steps,
        **reference,
        "settings": {"fid_input": args.fid_input, "dtype": args.dtype, "seed": args.seed},
        "runs": rows,
    }
    metrics = ["gfid", "is"]
    table = markdown_table(rows, [("label", "guidance scale"), ("num_samples", "samples")], metrics)
    header = (
        f"Generation: `{args.pipeline}`, {args.num_samples} samples per guidance scale, "
        f"reference `{reference['reference']}`.\n\n"
    )
    write_text_atomically(out / "results.md", header + table)
    files = {"json": write_json(results, out / "results.json"), "markdown": out / "results.md"}
    numeric = [row for row in rows if row["guidance_scale"] is not None]
    if numeric:
        files["plot"] = plot_metrics(
            numeric,
            metrics,
            out / "metrics.png",
            x_key="guidance_scale",
            x_label="guidance scale",
            label_key="pipeline",
            log_x=False,
            title=f"{pipeline_name}: {args.num_samples} samples",
        )
    files["grid"] = image_grid(grid_rows, out / "samples.png")
    results["files"] = {key: str(path) for key, path in files.items()}
    results["table"] = table
    print(table, end="")
    print(f"wrote {', '.join(results['files'].values())}")
    return results
