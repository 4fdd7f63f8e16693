"""``hf-vtok generate``: images of given classes from a class-conditional pipeline; without ``--pipeline`` the
small SiT on SoftVQ latents embedded in the package, trained on scikit-learn's handwritten digits (classes 0-9,
see ``training_scripts/make_default_generator.py``).

    hf-vtok generate --class 3 --num-images 16 --seed 0 --out samples/
    hf-vtok generate --class 0 1 2 3 4 5 6 7 8 9 --num-images 8 --out digits/

Writes ``grid.png`` (one row per class) and one PNG per image (``class<k>_<i>.png``) into ``--out``, which must
be new or empty; ``--overwrite`` replaces what an earlier run wrote there (and keeps other files). Image ``i`` of
every class starts from the noise of seed ``--seed + i`` (its own generator), so an image does not depend on the
batch size or on the other classes asked for. A pipeline folder's ``sampling.json`` gives its sampler defaults
(guidance scale, steps); the options override them.
"""

import argparse
import inspect
import json
import re
from pathlib import Path

import torch

from ..hub.loading import load_pipeline
from ..utils.dtypes import DTYPES
from ..utils.outputs import atomic_path, check_output_folder, create_output_folder
from ..utils.tables import image_grid
from .reconstruct import add_device_argument, positive_int

DEFAULT_PIPELINE = Path(__file__).resolve().parents[1] / "default_pipeline"
SAMPLING_FILE = "sampling.json"
GRID_FILE = "grid.png"
IMAGE_FILE = re.compile(r"class\d+_\d+\.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--class", dest="class_labels", type=int, nargs="+", required=True, help="class id(s) (digits: 0..9)"
    )
    parser.add_argument("--num-images", type=int, default=16, help="images per class (default 16)")
    parser.add_argument(
        "--pipeline", default=None, help="pipeline folder or Hub id (default: the digits SiT embedded in the package)"
    )
    parser.add_argument("--seed", type=int, default=0, help="image i of each class uses seed + i (default 0)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (1 = off)")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="sampler steps")
    parser.add_argument("--out", default="samples", help="output folder (default samples/)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="use a non-empty --out: the images of an earlier run there are replaced, other files kept",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per pipeline call (results do not depend on it)"
    )
    add_device_argument(parser)
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="pipeline weights and compute dtype"
    )


def default_pipeline_path() -> str:
    if not (DEFAULT_PIPELINE / "model_index.json").is_file():
        raise FileNotFoundError(f"the embedded default pipeline is missing from {DEFAULT_PIPELINE}; pass --pipeline")
    return str(DEFAULT_PIPELINE)


def sampling_defaults(pipeline_path: str) -> dict:
    """The call arguments of ``<pipeline>/sampling.json`` (``{}`` where a folder has none)."""
    path = Path(pipeline_path) / SAMPLING_FILE
    if not path.is_file():
        return {}
    values = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of pipeline call arguments, got {type(values).__name__}")
    return values


def call_arguments(pipeline, values: dict) -> dict:
    """``values`` without None, checked against the pipeline's ``__call__`` (an unknown name is an error)."""
    parameters = inspect.signature(pipeline.__call__).parameters
    if "class_labels" not in parameters:
        raise ValueError(
            f"{type(pipeline).__name__} takes no class_labels: generate needs a class-conditional pipeline"
        )
    unknown = sorted(name for name, value in values.items() if value is not None and name not in parameters)
    if unknown:
        raise ValueError(f"{type(pipeline).__name__}.__call__ takes no {unknown}")
    return {name: value for name, value in values.items() if value is not None}


@torch.no_grad()
def generate_images(
    pipeline, labels: list[int], seeds: list[int], batch_size: int = 64, **call_kwargs
) -> torch.Tensor:
    """``[N, 3, H, W]`` images in [0, 1], image ``j`` of class ``labels[j]`` from a generator seeded ``seeds[j]``."""
    if len(labels) != len(seeds):
        raise ValueError(f"{len(labels)} labels but {len(seeds)} seeds")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    chunks = []
    for start in range(0, len(labels), batch_size):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[start : start + batch_size]]
        output = pipeline(
            class_labels=labels[start : start + batch_size], generator=generators, output_type="pt", **call_kwargs
        )
        chunks.append(output.images.float().cpu())
    return torch.cat(chunks)


def earlier_outputs(out: Path) -> list[Path]:
    """What an earlier ``generate`` wrote into ``out``: ``grid.png`` and ``class<k>_<i>.png``."""
    if not out.is_dir():
        return []
    return sorted(path for path in out.iterdir() if path.name == GRID_FILE or IMAGE_FILE.fullmatch(path.name))


def check_out_folder(out: Path, overwrite: bool) -> None:
    """``out`` must be a writable folder (``check_output_folder``), new or empty (any folder with ``overwrite``)."""
    check_output_folder(out, "--out")
    existing = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if existing and not overwrite:
        shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
        raise ValueError(
            f"--out {str(out)!r} is not empty ({len(existing)} entries: {shown}); choose a new folder or pass "
            "--overwrite to replace the images of an earlier run there"
        )


def run(args: argparse.Namespace) -> list[Path]:
    if args.num_images <= 0:
        raise ValueError(f"--num-images must be positive, got {args.num_images}")
    out = Path(args.out)
    check_out_folder(out, args.overwrite)  # before any work; created once there are images
    pipeline_path = args.pipeline or default_pipeline_path()
    pipeline = load_pipeline(pipeline_path, args.device, DTYPES[args.dtype])
    options = {"guidance_scale": args.guidance_scale, "num_inference_steps": args.num_inference_steps}
    kwargs = call_arguments(
        pipeline, {**sampling_defaults(pipeline_path), **{k: v for k, v in options.items() if v is not None}}
    )
    classes = list(dict.fromkeys(args.class_labels))  # each class once, in the order given
    labels = [label for label in classes for _ in range(args.num_images)]
    seeds = [args.seed + index for _ in classes for index in range(args.num_images)]
    images = generate_images(pipeline, labels, seeds, args.batch_size, **kwargs)
    for path in earlier_outputs(out):  # --overwrite: this run's images only, never mixed with older ones
        path.unlink()
    create_output_folder(out, "--out")
    written = []
    for image, label, seed in zip(images, labels, seeds):
        path = out / f"class{label}_{seed - args.seed:03d}.png"
        with atomic_path(path) as partial:
            pipeline.numpy_to_pil(image.permute(1, 2, 0)[None].numpy())[0].save(partial, format="PNG")
        written.append(path)
    rows = [
        (f"class {label}", list(images[k * args.num_images : (k + 1) * args.num_images]))
        for k, label in enumerate(classes)
    ]
    grid = image_grid(rows, out / GRID_FILE, cell=64)
    settings = ", ".join(f"{key}={value}" for key, value in sorted(kwargs.items()))
    print(f"wrote {len(written)} images of class(es) {classes} and {grid} ({settings or 'pipeline defaults'})")
    return [grid, *written]
