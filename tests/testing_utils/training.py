"""Helpers of the training tests: tiny models, teachers and data sets, in-process script runs."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "training_scripts"

TINY_VITOK = "w32_d1_h2-w32_d1_h2/8x4"
TINY_LATENT_TOKEN = dict(
    image_size=32,
    encoder_patch_size=8,
    decoder_patch_size=8,
    num_latent_tokens=8,
    latent_channels=8,
    encoder_hidden_size=32,
    encoder_num_layers=1,
    encoder_num_heads=4,
    decoder_hidden_size=32,
    decoder_num_layers=1,
    decoder_num_heads=4,
)
TINY_SOFTVQ = {**TINY_LATENT_TOKEN, "codebook_size": 16, "num_codebooks": 2}
TINY_MAETOK = {
    **TINY_LATENT_TOKEN,
    "auxiliary_hidden_size": 16,
    "auxiliary_num_layers": 1,
    "auxiliary_num_heads": 2,
    "hog_gaussian_window": 16,
    "dinov2_feature_dim": 16,
    "siglip_feature_dim": 16,
}
TINY_GENERATOR = {"hidden_size": 32, "num_layers": 1, "num_attention_heads": 2}
TEACHER = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8
)


def load_script(name: str):
    """A training script as a module (``training_scripts/`` is not a package)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_accelerate() -> None:
    """Forget the process-wide accelerate state so the next ``Accelerator`` starts afresh."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def run_script(name: str, args: list[str]) -> Path:
    reset_accelerate()
    try:
        return load_script(name).main([str(arg) for arg in args])
    finally:
        reset_accelerate()


def write_photos(folder: Path, count: int = 4, size=(48, 40), classes: tuple[str, ...] = ()) -> Path:
    """Smooth random colour images (learnable in a few steps), in class sub-folders when ``classes`` is given."""
    generator = np.random.default_rng(0)
    for index in range(count):
        low = generator.uniform(0, 255, (4, 4, 3))
        image = Image.fromarray(low.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
        target = folder / classes[index % len(classes)] if classes else folder
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"image{index}.png")
    return folder


def save_teachers(folder: Path) -> dict[str, Path]:
    """Tiny DINOv2, DINO (ViT) and SigLIP vision models saved as folders, as the scripts load them."""
    from transformers import Dinov2Config, Dinov2Model, SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    paths = {name: folder / name for name in ("dinov2", "dino", "siglip")}
    Dinov2Model(Dinov2Config(**TEACHER, mlp_ratio=2)).save_pretrained(paths["dinov2"])
    ViTModel(ViTConfig(**TEACHER), add_pooling_layer=False).save_pretrained(paths["dino"])
    SiglipVisionModel(SiglipVisionConfig(**TEACHER)).save_pretrained(paths["siglip"])
    return paths


def free_port() -> int:
    """A free local TCP port (other runs on this machine may hold the default rendezvous port)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def metrics(output_dir: Path) -> list[dict]:
    from hf_vtok.training import read_metrics

    return read_metrics(output_dir / "metrics.csv")


def as_json(value) -> str:
    return json.dumps(value)
