"""Train hf_vtok's embedded default generation pipeline on the handwritten digits inside the scikit-learn wheel,
score it with a classifier that never saw its training digits, and install it in the package.

    pip install -e ".[train]"
    python training_scripts/make_default_generator.py            # every stage; writes src/hf_vtok/default_pipeline/
    python training_scripts/make_default_generator.py --resume   # continue an interrupted run

Stages, each with the project's own tools (their options in ``default_generator.json`` beside this script); a
stage whose result is in ``--work-dir`` is skipped (delete its folder to redo it):

1. digits (``hf_vtok.data.digits``): ``load_digits`` upsampled bicubically to ``image_size`` RGB, the fixed
   split (a ``RandomState(seed)`` permutation, ``num_held_out`` held out); the training digits as class folders;
2. ``tokenizer``: a SoftVQ-VAE trained by ``train_softvq.py`` on the training digits (L2 and the entropy
   regulariser: no LPIPS / REPA / GAN, whose teachers need downloads); the online or EMA weights with the
   better held-out PSNR; its ``shift_factor`` / ``scaling_factor`` then set to the mean / 1 / std of its
   latents on the training digits;
3. ``latents``: ``hf-vtok cache-latents`` of the training digits;
4. ``generators``: each of ``generators`` (``sit``, ``dit``) trained by ``train_generator.py`` on the cache;
5. evaluation: ``DigitClassifier`` (an RBF SVM fitted on the held-out digits only) labels ``num_images``
   samples per guidance scale (labels ``i % 10``, seeds ``seed + i``): class-conditional accuracy, per-class
   accuracy, Fréchet distance to the held-out digits in the classifier's feature space; the guidance curve
   (``guidance_curve.png``); the guidance of the shipped pipeline (the lowest distance to the held-out digits); the
   floor of the CI test (``hf-vtok generate --class 0 .. 9 --num-images k --seed 0`` with that guidance);
6. install (unless ``--no-install``): the ``shipped`` pipeline, its ``sampling.json``, ``training_report.json``
   and the PNGs in ``src/hf_vtok/default_pipeline/``.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_generator  # noqa: E402
import train_softvq  # noqa: E402

PACKAGE_DIR = HERE.parent / "src" / "hf_vtok" / "default_pipeline"
PIPELINES = {"sit": "SiTPipeline", "dit": "DiT1DPipeline"}
TRANSFORMERS = {"sit": "SiTTransformer1DModel", "dit": "DiTTransformer1DModel"}


# ------------------------------------------------------------------------------------------------------
# helpers
def write_trainer_config(section: dict, path: Path) -> Path:
    """A stage's options as a training script's ``--config`` file (``model_config`` as inline JSON)."""
    options = dict(section)
    if isinstance(options.get("model_config"), dict):
        options["model_config"] = json.dumps(options["model_config"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(options, indent=1))
    return path


def loss_summary(run: Path, key: str = "loss") -> dict:
    """Mean ``key`` over the first and the last tenth of the logged steps of a training run."""
    from hf_vtok.training.logging import METRICS_FILE, read_metrics

    rows = [row for row in read_metrics(run / METRICS_FILE) if key in row]
    tenth = max(1, len(rows) // 10)
    return {
        "first": float(np.mean([row[key] for row in rows[:tenth]])),
        "last": float(np.mean([row[key] for row in rows[-tenth:]])),
        "steps": rows[-1]["step"] if rows else 0,
    }


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def timed(stage: str, timings: dict, timings_file: Path, run: Path, resume: bool, work):
    """Run ``work()``, record its wall time, the machine's load and whether it continued a checkpoint of ``run``
    under ``timings[stage]``."""
    from hf_vtok.training import list_checkpoints

    resumed = resume and run.is_dir() and bool(list_checkpoints(run))
    load_before, started = os.getloadavg(), time.time()
    result = work()
    timings[stage] = {
        "seconds": round(time.time() - started, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "resumed": resumed,
    }
    timings_file.write_text(json.dumps(timings, indent=1))
    return result


def digit_tensor(indices, size: int) -> torch.Tensor:
    """``[N, 3, size, size]`` in [0, 1] of the digits ``indices``, as the image folders hold them."""
    from hf_vtok.data.digits import digit_image, load_digits

    images, _ = load_digits()
    arrays = [np.asarray(digit_image(images[index], size), dtype=np.float32) / 255 for index in indices]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------------------
# stages
def train_tokenizer(config: dict, work: Path, train_dir: Path, resume: bool) -> Path:
    run = work / "tokenizer_run"
    argv = ["--config", str(write_trainer_config(config["tokenizer"], work / "configs" / "tokenizer.json"))]
    argv += ["--train-data", str(train_dir), "--output-dir", str(run)] + (["--resume"] if resume else [])
    train_softvq.main(argv)
    return run


@torch.no_grad()
def reconstruct(model, images: torch.Tensor, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents, reconstructions in [0, 1])`` of images ``[N, 3, S, S]`` in [0, 1]."""
    latents, reconstructions = [], []
    for start in range(0, len(images), batch_size):
        encoded = model.encode(images[start : start + batch_size] * 2 - 1)
        latents.append(encoded.latents)
        reconstructions.append(((model.decode(encoded.latents).sample.clamp(-1, 1) + 1) / 2).float())
    return torch.cat(latents), torch.cat(reconstructions)


def psnr(first: torch.Tensor, second: torch.Tensor) -> float:
    return float(-10 * torch.log10((first - second).square().mean()))


def finish_tokenizer(run: Path, work: Path, split: dict, size: int, classifier) -> dict:
    """Pick the online or EMA weights, set the latent normalisation, save ``work/tokenizer``; returns its report."""
    from hf_vtok import LatentTokenImageProcessor, SoftVQModel
    from hf_vtok.data.digits import load_digits
    from hf_vtok.metrics.digits import score_digits

    _, labels = load_digits()
    train_images, held_out_images = digit_tensor(split["train"], size), digit_tensor(split["held_out"], size)
    candidates = {}
    for name in ("model", "model_ema"):
        model = SoftVQModel.from_pretrained(run / name).eval()
        _, held_out_reconstructions = reconstruct(model, held_out_images)
        candidates[name] = (psnr(held_out_reconstructions, held_out_images), model)
    best = max(candidates, key=lambda name: candidates[name][0])
    model = candidates[best][1]
    latents, train_reconstructions = reconstruct(model, train_images)
    model.config.shift_factor = float(latents.mean())
    model.config.scaling_factor = float(1 / latents.std())
    folder = work / "tokenizer"
    model.save_pretrained(folder)
    LatentTokenImageProcessor.for_model(model.config).save_pretrained(folder)
    reconstruction_scores = score_digits(classifier, train_reconstructions, labels[split["train"]])
    return {
        "family": "softvq",
        "weights": "EMA" if best == "model_ema" else "online",
        "parameters": count_parameters(model),
        "psnr_train": psnr(train_reconstructions, train_images),
        "psnr_held_out": candidates[best][0],
        "psnr_held_out_other_weights": candidates["model" if best == "model_ema" else "model_ema"][0],
        "classifier_on_train_reconstructions": {
            key: reconstruction_scores[key] for key in ("accuracy", "per_class_accuracy", "frechet_distance")
        },
        "shift_factor": model.config.shift_factor,
        "scaling_factor": model.config.scaling_factor,
        "loss": loss_summary(run),
        "l2": loss_summary(run, "l2"),
    }


def cache(work: Path, tokenizer: Path, train_dir: Path) -> Path:
    from hf_vtok.cli import main as cli

    output = work / "latents"
    argv = ["cache-latents", "--model", str(tokenizer), "--images", str(train_dir), "--output", str(output)]
    cli(argv + ["--batch-size", "100", "--device", "cpu"])
    return output


def cache_is_complete(folder: Path) -> bool:
    from hf_vtok.data import load_latent_cache

    try:
        load_latent_cache(folder)
    except (FileNotFoundError, ValueError):
        return False
    return True


def train_one_generator(name: str, config: dict, work: Path, latents: Path, resume: bool) -> Path:
    run = work / f"{name}_run"
    options = write_trainer_config(config["generators"][name], work / "configs" / f"{name}.json")
    argv = ["--model", name, "--config", str(options), "--latents", str(latents), "--output-dir", str(run)]
    train_generator.main(argv + (["--resume"] if resume else []))
    return run


def build_pipeline(name: str, tokenizer: Path, run: Path, scheduler_options: dict):
    import hf_vtok
    from hf_vtok.pipelines.pipeline_utils import tokenizer_from

    transformer = getattr(hf_vtok, TRANSFORMERS[name]).from_pretrained(run / "transformer_ema").eval()
    scheduler = None
    if name == "dit":  # the DiT pipeline's own scheduler has the released cosine betas: set the trained ones
        variance = "learned_range" if transformer.config.learn_sigma else "fixed_small"
        scheduler = hf_vtok.GaussianDiffusionScheduler(**{"variance_type": variance, **scheduler_options})
    pipeline = getattr(hf_vtok, PIPELINES[name]).from_components(
        transformer, tokenizer_from(str(tokenizer)), scheduler=scheduler, sampling=scheduler_options
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def nearest_train_distance(pixels: np.ndarray, train_pixels: np.ndarray) -> float:
    """Median over ``pixels`` of the L2 distance (8 x 8 pixels in [0, 1]) to the nearest training digit."""
    squared = (pixels**2).sum(1)[:, None] + (train_pixels**2).sum(1)[None] - 2 * pixels @ train_pixels.T
    return float(np.median(np.sqrt(np.maximum(squared.min(1), 0))))


def evaluate_generator(name: str, pipeline, call: dict, evaluation: dict, classifier, train_pixels) -> list[dict]:
    """One row per guidance scale: accuracy, per-class accuracy, Fréchet distance, memorisation, seconds."""
    from hf_vtok.commands.generate import generate_images
    from hf_vtok.data.digits import to_digit_pixels
    from hf_vtok.metrics.digits import score_digit_pixels

    count = evaluation["num_images"]
    labels = [index % 10 for index in range(count)]
    seeds = [evaluation["seed"] + index for index in range(count)]
    rows = []
    for scale in evaluation["guidance_scales"]:
        started = time.time()
        images = generate_images(pipeline, labels, seeds, evaluation["batch_size"], **call, guidance_scale=scale)
        pixels = to_digit_pixels(images)
        row = {"generator": name, "guidance_scale": scale, "seconds": round(time.time() - started, 1)}
        row.update(score_digit_pixels(classifier, pixels, labels))
        row["median_nearest_train_distance"] = nearest_train_distance(pixels, train_pixels)
        print(f"{name} guidance {scale:g}: accuracy {row['accuracy']:.4f}, FD {row['frechet_distance']:.4f}")
        rows.append(row)
    return rows


def ci_check(pipeline, call: dict, classifier, images_per_class: int, margin: float) -> dict:
    """What ``tests/commands/test_generate.py`` asserts: the accuracy of ``hf-vtok generate --class 0 .. 9
    --num-images k --seed 0`` with the shipped sampling, and the floor ``accuracy - margin``."""
    from hf_vtok.commands.generate import generate_images
    from hf_vtok.metrics.digits import score_digits

    labels = [label for label in range(10) for _ in range(images_per_class)]
    seeds = [index for _ in range(10) for index in range(images_per_class)]
    check = {"images_per_class": images_per_class, "seed": 0, **call}
    for key, scale in (("accuracy", call["guidance_scale"]), ("accuracy_without_guidance", 1.0)):
        images = generate_images(pipeline, labels, seeds, 64, **{**call, "guidance_scale": scale})
        check[key] = score_digits(classifier, images, labels)["accuracy"]
    check["floor"] = round(max(0.0, check["accuracy"] - margin), 3)
    return check


def markdown_report(report: dict) -> str:
    """The accuracy table (one row per generator and guidance scale, then per class) as markdown."""
    lines = [
        "| generator | guidance | accuracy | FD | " + " | ".join(str(k) for k in range(10)) + " |",
        "|---|---|---|---|" + "---|" * 10,
    ]
    reference = report["classifier"]
    lines.append(
        f"| real training digits | – | {reference['accuracy_on_train_digits']:.3f} | "
        f"{reference['frechet_distance_train_digits']:.3f} | "
        + " | ".join(f"{value:.2f}" for value in reference["per_class_accuracy_on_train_digits"])
        + " |"
    )
    for name, entry in report["generators"].items():
        for row in entry["runs"]:
            per_class = " | ".join(f"{value:.2f}" for value in row["per_class_accuracy"])
            lines.append(
                f"| {name} | {row['guidance_scale']:g} | {row['accuracy']:.3f} | {row['frechet_distance']:.3f} | "
                f"{per_class} |"
            )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(HERE / "default_generator.json"), help="the stages' options")
    parser.add_argument("--work-dir", default="outputs/default_generator", help="training runs, caches, results")
    parser.add_argument("--resume", action="store_true", help="continue interrupted trainings from checkpoints")
    parser.add_argument("--no-install", action="store_true", help="do not copy the result into the package")
    parser.add_argument("--install-dir", default=str(PACKAGE_DIR), help="where the pipeline goes (the package's)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: small batches; a busy machine contends)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import hf_vtok  # noqa: F401
    from hf_vtok.data.digits import digits_split, load_digits, to_digit_pixels, write_digit_folder
    from hf_vtok.metrics.digits import DigitClassifier, score_digit_pixels
    from hf_vtok.utils.tables import image_grid, plot_metrics, write_json

    config = json.loads(Path(args.config).read_text())
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    size = config["image_size"]

    # 1. digits, split, classifier
    split = digits_split(**config["split"])
    images, labels = load_digits()
    train_dir = write_digit_folder(work / "digits" / "train", split["train"], size)
    classifier = DigitClassifier.fit_held_out(split)
    train_pixels = images[split["train"]].reshape(-1, 64)
    upsampled_pixels = to_digit_pixels(digit_tensor(split["train"], size))
    real = score_digit_pixels(classifier, upsampled_pixels, labels[split["train"]])

    # 2. tokenizer
    tokenizer_run = work / "tokenizer_run"
    if not (tokenizer_run / "model_ema" / "config.json").is_file():
        train = lambda: train_tokenizer(config, work, train_dir, args.resume)  # noqa: E731
        timed("tokenizer", timings, timings_file, tokenizer_run, args.resume, train)
    tokenizer_report_file = work / "tokenizer_report.json"
    if not tokenizer_report_file.is_file():
        tokenizer_report_file.write_text(
            json.dumps(finish_tokenizer(tokenizer_run, work, split, size, classifier), indent=1)
        )
    tokenizer_report = json.loads(tokenizer_report_file.read_text())
    tokenizer = work / "tokenizer"

    # 3. latents
    if not cache_is_complete(work / "latents"):
        timed("latents", timings, timings_file, work / "latents", False, lambda: cache(work, tokenizer, train_dir))

    # 4. generators
    for name in config["generators"]:
        if not (work / f"{name}_run" / "transformer_ema" / "config.json").is_file():
            train = lambda name=name: train_one_generator(name, config, work, work / "latents", args.resume)  # noqa: E731
            timed(name, timings, timings_file, work / f"{name}_run", args.resume, train)

    # 5. evaluation
    evaluation = config["evaluation"]
    generators, pipelines = {}, {}
    for name in config["generators"]:
        sampling = evaluation["sampling"][name]
        pipeline = build_pipeline(name, tokenizer, work / f"{name}_run", sampling["scheduler"])
        pipelines[name] = pipeline
        results_file = work / f"{name}_evaluation.json"
        if not results_file.is_file():
            rows = evaluate_generator(name, pipeline, sampling["call"], evaluation, classifier, train_pixels)
            results_file.write_text(json.dumps(rows, indent=1))
        generators[name] = {
            "transformer": TRANSFORMERS[name],
            "parameters": count_parameters(pipeline.transformer),
            "model_config": config["generators"][name]["model_config"],
            "weights": "EMA",
            "sampling": sampling,
            "loss": loss_summary(work / f"{name}_run"),
            "training_seconds": timings.get(name, {}).get("seconds"),
            "runs": json.loads(results_file.read_text()),
        }
    shipped = config["shipped"]
    runs = generators[shipped]["runs"]
    best = min(runs, key=lambda row: row["frechet_distance"])
    call = {**evaluation["sampling"][shipped]["call"], "guidance_scale": best["guidance_scale"]}
    no_guidance = next((row for row in runs if row["guidance_scale"] == 1.0), None)
    curve = plot_metrics(
        [row for entry in generators.values() for row in entry["runs"]],
        ["accuracy", "frechet_distance", "median_nearest_train_distance"],
        work / "guidance_curve.png",
        x_key="guidance_scale",
        x_label="guidance scale",
        label_key="generator",
        log_x=False,
        title=f"digits: {evaluation['num_images']} samples per guidance scale, classifier fitted on held-out digits",
    )
    pipeline = pipelines[shipped]
    from hf_vtok.commands.generate import generate_images

    grid_labels = [label for label in range(10) for _ in range(10)]
    grid_images = generate_images(pipeline, grid_labels, [i % 10 for i in range(100)], 100, **call)
    grid = image_grid(
        [(f"class {label}", list(grid_images[label * 10 : (label + 1) * 10])) for label in range(10)],
        work / "samples.png",
        cell=48,
    )
    report = {
        "notes": config.get("notes", []),
        "data": {
            "source": "sklearn.datasets.load_digits (1797 images, 8x8, 17 grey levels)",
            "image_size": size,
            "upsampling": "bicubic, grey to RGB",
            "split": {**config["split"], "num_train": len(split["train"]), "method": "numpy RandomState permutation"},
            "train_class_counts": np.bincount(labels[split["train"]], minlength=10).tolist(),
            "held_out_class_counts": np.bincount(labels[split["held_out"]], minlength=10).tolist(),
            "held_out_indices": split["held_out"].tolist(),
        },
        "classifier": {
            "kind": "RBF SVM (C=10, gamma='scale') on the 8x8 pixels; images averaged back to 8x8 blocks",
            "fitted_on": f"the {len(split['held_out'])} held-out digits only",
            "feature_space": "45 one-vs-one decision values (the Frechet distance)",
            "accuracy_on_train_digits": real["accuracy"],
            "per_class_accuracy_on_train_digits": real["per_class_accuracy"],
            "accuracy_on_raw_8x8_train_digits": float(
                (classifier.predict(train_pixels) == labels[split["train"]]).mean()
            ),
            "frechet_distance_train_digits": real["frechet_distance"],
            "median_nearest_train_distance_of_held_out_digits": nearest_train_distance(
                images[split["held_out"]].reshape(-1, 64), train_pixels
            ),
        },
        "tokenizer": {
            **tokenizer_report,
            "model_config": config["tokenizer"]["model_config"],
            "training_seconds": timings.get("tokenizer", {}).get("seconds"),
        },
        "latent_cache_seconds": timings.get("latents", {}).get("seconds"),
        "generators": generators,
        "shipped": {
            "generator": shipped,
            "sampling": call,
            "accuracy": best["accuracy"],
            "frechet_distance": best["frechet_distance"],
            "accuracy_without_guidance": no_guidance["accuracy"] if no_guidance else None,
            "frechet_distance_without_guidance": no_guidance["frechet_distance"] if no_guidance else None,
        },
        "ci_check": ci_check(pipeline, call, classifier, evaluation["ci_images_per_class"], evaluation["ci_margin"]),
        "timings": timings,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "config": config,
    }
    report["table"] = markdown_report(report)
    write_json(report, work / "training_report.json")
    print(report["table"])
    print(f"shipped: {shipped} with {call}; CI floor {report['ci_check']['floor']}")

    # 6. install
    if not args.no_install:
        install(pipeline, call, report, work, [curve, grid], Path(args.install_dir))
    return report


def install(pipeline, call: dict, report: dict, work: Path, pictures: list[Path], folder: Path) -> Path:
    """The pipeline, ``sampling.json``, the report and the PNGs in ``folder`` (``src/hf_vtok/default_pipeline/``),
    which is replaced."""
    from hf_vtok.commands.generate import SAMPLING_FILE
    from hf_vtok.utils.tables import write_json

    if folder.exists():
        shutil.rmtree(folder)
    pipeline.save_pretrained(folder)
    (folder / SAMPLING_FILE).write_text(json.dumps(call, indent=1) + "\n")
    for picture in pictures:
        shutil.copy(picture, folder / picture.name)
    for name in ("tokenizer", report["shipped"]["generator"]):
        shutil.copy(work / f"{name}_run" / "loss_curves.png", folder / f"{name}_loss_curves.png")
    files = [path for path in folder.rglob("*") if path.is_file()]
    report["shipped"]["size_bytes_without_this_report"] = sum(path.stat().st_size for path in files)
    write_json(report, folder / "training_report.json")
    print(f"installed in {folder} ({report['shipped']['size_bytes_without_this_report'] / 1e6:.2f} MB)")
    return folder


if __name__ == "__main__":
    main()
