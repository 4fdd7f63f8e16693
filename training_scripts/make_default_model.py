"""Train hf_vtok's embedded default model: a small ViTok on random crops of the photographs that ship inside
the scikit-image and scikit-learn wheels, then score it on held-out photographs and install it in the package.

    pip install -e ".[train]" scikit-learn
    python training_scripts/make_default_model.py                # trains, evaluates, writes src/hf_vtok/default_model/
    python training_scripts/make_default_model.py --resume       # continue an interrupted run

The options of ``train_vitok.py`` are in ``default_model.json`` beside this script. The held-out photos
(``HELD_OUT``) are never seen in training; their PSNR / SSIM at native size land in
``src/hf_vtok/default_model/training_report.json``, with the training time and the machine's load.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_vtok.utils.errors import ArgumentParser, run_script

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_MAX_TOKENS = 4096  # 512x512 pixels at patch 8: astronaut, the largest held-out photo
sys.path.insert(0, str(HERE))
import train_vitok  # noqa: E402

# Real photographs (grayscale ones become RGB). Left out: synthetic images (chessboard, phantom, logo, color wheel,
# horse silhouette, text), the second frame of the motorcycle stereo pair, and the held-out set.
TRAIN_PHOTOS = {
    "skimage": (
        "brick.png",
        "camera.png",
        "cell.png",
        "clock_motion.png",
        "coins.png",
        "grass.png",
        "gravel.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "moon.png",
        "motorcycle_left.png",
        "page.png",
        "retina.jpg",
        "rocket.jpg",
    ),
    "sklearn": ("china.jpg", "flower.jpg"),
}
HELD_OUT = {"skimage": ("astronaut.png", "chelsea.png", "coffee.png")}
PACKAGE_DIR = HERE.parent / "src" / "hf_vtok" / "default_model"
ASSETS_DIR = HERE.parent / "assets"


def photo_folder(package: str) -> Path:
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data"
    import sklearn

    return Path(sklearn.__file__).parent / "datasets" / "images"


def photo_paths(selection: dict) -> list[Path]:
    paths = [photo_folder(package) / name for package, names in selection.items() for name in names]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"photos not found (install scikit-image and scikit-learn): {missing}")
    return paths


@torch.no_grad()
def evaluate(model_dir: Path, paths: list[Path]) -> dict:
    """PSNR / SSIM of each photo reconstructed at its native size (one image per batch, no padding)."""
    import hf_vtok  # noqa: F401
    from hf_vtok.commands.reconstruct import encode_decode, processor_for_any_size
    from hf_vtok.hub.loading import load_tokenizer
    from hf_vtok.metrics import psnr, ssim
    from hf_vtok.utils.images import load_image

    model, processor = load_tokenizer(str(model_dir), "cpu", torch.float32)
    processor = processor_for_any_size(processor)
    scores = {}
    for path in paths:
        image = load_image(path)
        _, (reconstruction,) = encode_decode(model, processor, [image], output_type="pt")
        original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        scores[path.name] = {
            "psnr": float(psnr(reconstruction[None].clamp(0, 1), original[None])[0]),
            "ssim": float(ssim(reconstruction[None].clamp(0, 1), original[None])[0]),
            "size": list(image.size),
        }
    scores["mean"] = {key: sum(value[key] for value in scores.values()) / len(paths) for key in ("psnr", "ssim")}
    return scores


def main(argv=None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="outputs/default_model", help="training run folder")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="start the run over, deleting an earlier one")
    parser.add_argument("--max-steps", type=int, help="override the config's step count")
    parser.add_argument("--no-install", action="store_true", help="do not copy the result into the package")
    parser.add_argument(
        "--evaluate-only", action="store_true", help="score (and install) the finished run without training"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: these batches are small, and extra threads contend on a busy machine)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    images = work / "train_photos"
    images.mkdir(parents=True, exist_ok=True)
    for path in photo_paths(TRAIN_PHOTOS):
        if not (images / path.name).exists():
            shutil.copy(path, images / path.name)
    train_config = json.loads((HERE / "default_model.json").read_text())
    train_args = [
        "--config",
        str(HERE / "default_model.json"),
        "--train-data",
        str(images),
        "--output-dir",
        str(work / "run"),
    ]
    if args.resume:
        train_args.append("--resume")
    if args.overwrite:
        train_args.append("--overwrite")
    if args.max_steps:
        train_args += ["--max-steps", str(args.max_steps)]
    timing_file = work / "run" / "training_time.json"
    if not args.evaluate_only:
        load_before = os.getloadavg()
        started = time.time()
        train_vitok.main(train_args)
        timing = {
            "training_seconds": round(time.time() - started, 1),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        }
        timing_file.write_text(json.dumps(timing, indent=1))
    timing = json.loads(timing_file.read_text())
    held_out = photo_paths(HELD_OUT)
    results = {name: evaluate(work / "run" / name, held_out) for name in ("model", "model_ema")}
    best = max(results, key=lambda name: results[name]["mean"]["psnr"])
    report = {
        "held_out": results[best],
        "weights": "EMA" if best == "model_ema" else "online",
        "other_weights_held_out_mean": results["model" if best == "model_ema" else "model_ema"]["mean"],
        "train_photos": {package: list(names) for package, names in TRAIN_PHOTOS.items()},
        **timing,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "config": train_config,
        "resumed": args.resume,
    }
    print(json.dumps(report, indent=1))
    if not args.no_install:
        PACKAGE_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(work / "run" / best / name, PACKAGE_DIR / name)
        # images of any size: up to DEFAULT_MODEL_MAX_TOKENS at their own size (the largest held-out photo), larger
        # ones resized to that budget keeping their aspect ratio; batches padded to their longest image
        from hf_vtok import ViTokImageProcessor

        patch_size = json.loads((PACKAGE_DIR / "config.json").read_text())["patch_size"]
        ViTokImageProcessor(
            patch_size=patch_size, max_num_patches=DEFAULT_MODEL_MAX_TOKENS, padding="longest"
        ).save_pretrained(PACKAGE_DIR)
        ASSETS_DIR.mkdir(exist_ok=True)
        shutil.copy(work / "run" / "loss_curves.png", ASSETS_DIR / "default_model_loss_curves.png")
        (PACKAGE_DIR / "training_report.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
