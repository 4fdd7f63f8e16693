"""ViTok-v2 DiT against the original (dit-branch) golden outputs: the dit_* files of ../shared/parity/vitok.

Sizes and flags come from dit_config.json and the tensors; every model recorded there (dit_a, dit_b, ...) runs.
"""

import json

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file

from hf_vtok import ViTokDiTPipeline
from hf_vtok.models.vitok.convert_vitok_original_to_hf import convert_vitok_checkpoint
from hf_vtok.models.vitok_dit.convert_vitok_dit_original_to_hf import convert_vitok_dit_checkpoint
from tests.testing_utils.generator_parity import assert_close

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    root = family_parity_dir("vitok")
    if not (root / "dit_config.json").is_file():
        pytest.skip(f"no ViTok DiT fixtures under {root}")
    config = json.loads((root / "dit_config.json").read_text())
    names = sorted(key[: -len("_kwargs")] for key in config if key.startswith("dit_") and key.endswith("_kwargs"))
    return {"root": root, "config": config, "names": names, "outputs": load_file(root / "dit_outputs.safetensors")}


def _model(fixture, name):
    return convert_vitok_dit_checkpoint(fixture["root"] / f"{name}.safetensors", variant=fixture["config"]["variant"])


def test_fixture_lists_models(fixture):
    assert fixture["names"], "dit_config.json names no DiT"


def test_converted_config_matches_original(fixture):
    for name in fixture["names"]:
        kwargs, config = fixture["config"][f"{name}_kwargs"], _model(fixture, name).config
        assert (config.hidden_size, config.num_layers, config.num_attention_heads) == (
            kwargs["width"],
            kwargs["depth"],
            kwargs["num_heads"],
        ), name
        assert (config.in_channels, config.num_classes, config.num_tokens) == (
            kwargs["code_width"],
            kwargs["text_dim"],
            kwargs["num_tokens"],
        ), name
        assert config.class_token == kwargs.get("class_token", False), name
        assert config.num_register_tokens == kwargs.get("reg_tokens", 0), name
        hardcoded = fixture["config"]["hardcoded_in_reference"]
        assert (config.mlp_ratio, config.mod_tanh, config.frequency_embedding_size) == (
            hardcoded["mlp_ratio"],
            hardcoded["mod_tanh"],
            hardcoded["freq_dim"],
        ), name


@torch.no_grad()
def test_forward(fixture):
    outputs = fixture["outputs"]
    for name in fixture["names"]:
        model = _model(fixture, name)
        positions = {}
        if f"{name}_row_idx" in outputs:
            positions = {"row_idx": outputs[f"{name}_row_idx"], "col_idx": outputs[f"{name}_col_idx"]}
        sample = model(outputs[f"{name}_z"], outputs[f"{name}_t"], outputs[f"{name}_context"], **positions).sample
        assert_close(sample, outputs[f"{name}_out"], f"{name}_out")
        frequencies = get_timestep_embedding(
            outputs[f"{name}_t"], model.config.frequency_embedding_size, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        assert_close(frequencies, outputs[f"{name}_t_emb"], f"{name}_t_emb")


@torch.no_grad()
def test_pipeline_on_the_fixture_autoencoder(fixture):
    """DiT + the fixture's ViTok AE run end to end; the sampler sees the DiT's velocity."""
    root = fixture["root"]
    variant = json.loads((root / "original_config.json").read_text())["variant"]
    autoencoder = convert_vitok_checkpoint(root / "encoder.safetensors", root / "decoder.safetensors", variant=variant)
    name = fixture["names"][0]
    model = _model(fixture, name)
    pipe = ViTokDiTPipeline.from_components(model, autoencoder)
    pipe.set_progress_bar_config(disable=True)
    labels = fixture["outputs"][f"{name}_context"].reshape(-1).clamp(max=model.config.num_classes - 1)
    images = pipe(labels, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images
    side = round(model.config.num_tokens**0.5) * autoencoder.config.patch_size
    assert tuple(images.shape) == (labels.shape[0], 3, side, side)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
