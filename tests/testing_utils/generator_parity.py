"""Helpers shared by the SiT / DiT / ViTok DiT parity tests."""

import json
from pathlib import Path

import torch

ATOL = 1e-5


def max_error(actual: torch.Tensor, expected: torch.Tensor, name: str) -> float:
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    )
    return (actual.detach().double() - expected.double()).abs().max().item() if actual.numel() else 0.0


def assert_close(actual, expected, name, atol=ATOL):
    error = max_error(actual, expected, name)
    assert error <= atol, f"{name}: max abs error {error:.3g} > {atol}"
    return error


def assert_close_relative(actual, expected, name, rtol=ATOL):
    """For outputs FIXTURE.md says blow up (1e2..1e5): error relative to the tensor's largest magnitude."""
    error = max_error(actual, expected, name)
    scale = expected.double().abs().max().item()
    assert error <= rtol * scale, f"{name}: max abs error {error:.3g} > {rtol} x max |value| {scale:.3g}"
    return error


def fixture_tokenizer(folder: Path):
    """The SoftVQ-VAE / MAETok tokenizer of a sibling fixture folder (its FIXTURE.md layout)."""
    from hf_vtok.models.maetok.convert_maetok_original_to_hf import convert_maetok_checkpoint
    from hf_vtok.models.softvq.convert_softvq_original_to_hf import convert_softvq_checkpoint

    original = json.loads((folder / "original_config.json").read_text())
    family = original["class"].rsplit(".", 1)[-1]
    convert = {"SoftVQModel": convert_softvq_checkpoint, "AEModel": convert_maetok_checkpoint}.get(family)
    assert convert is not None, f"{folder}: no hf_vtok converter for original class {original['class']}"
    model, _ = convert(
        folder / "model.safetensors", folder / "config.json", arch_overrides=original.get("_tiny_arch_overrides")
    )
    return model


def stand_in_tokenizer(latent_channels: int):
    """A tiny random tokenizer with the right latent size, for runs that stop at the latents."""
    from hf_vtok import ViTokConfig, ViTokModel

    config = ViTokConfig(
        encoder_hidden_size=16,
        encoder_num_layers=1,
        encoder_num_heads=2,
        decoder_hidden_size=16,
        decoder_num_layers=1,
        decoder_num_heads=2,
        patch_size=2,
        latent_channels=latent_channels,
    )
    return ViTokModel(config).eval()
