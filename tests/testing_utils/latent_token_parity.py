"""Helpers shared by the SoftVQ-VAE and MAETok parity tests (same fixture layout, see their FIXTURE.md)."""

import json

import torch
from safetensors.torch import load_file

ATOL = 1e-5


def load_fixture(root):
    """Fixture folder -> paths, the timm architecture overrides and the golden tensors."""
    original = json.loads((root / "original_config.json").read_text())
    return {
        "root": root,
        "checkpoint": root / "model.safetensors",
        "config": root / "config.json",
        "arch_overrides": original.get("_tiny_arch_overrides"),
        "outputs": load_file(root / "outputs.safetensors"),
    }


def assert_close(actual, expected, name):
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    )
    error = (actual.detach().double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    assert error <= ATOL, f"{name}: max abs error {error:.3g} > {ATOL}"
    return error


def write_config(tmp_path, config_path, drop=(), **changes):
    """A copy of an original config.json with keys removed or changed."""
    config = json.loads(config_path.read_text())
    for key in drop:
        config.pop(key)
    config.update(changes)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


@torch.no_grad()
def decode_both_ways(model, latents):
    """``decode(latents)`` (the configured size) and ``decode(latents, height, width)`` must agree."""
    size = model.config.image_size
    default = model.decode(latents).sample
    explicit = model.decode(latents, height=size, width=size).sample
    assert torch.equal(default, explicit)
    return default
