"""MAETok against the original code's golden outputs (../shared/parity/maetok, see its FIXTURE.md).

Every size and number is read from the fixture files (config.json, original_config.json,
outputs.safetensors); fixture sets with the same layout but other sizes and seeds are run too.
"""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from hf_vtok import MAETokModel
from hf_vtok.cli import main as cli_main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.maetok.convert_maetok_original_to_hf import convert_maetok_checkpoint
from tests.testing_utils.latent_token_parity import assert_close, decode_both_ways, load_fixture, write_config

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    return load_fixture(family_parity_dir("maetok"))


@pytest.fixture(scope="module")
def converted(fixture):
    return convert_maetok_checkpoint(
        fixture["checkpoint"], fixture["config"], arch_overrides=fixture["arch_overrides"]
    )


@pytest.fixture(scope="module")
def model(converted):
    return converted[0]


@pytest.fixture(scope="module")
def encoded(model, fixture):
    with torch.no_grad():
        return model.encode(fixture["outputs"]["input_images"])


def test_conversion_report(converted):
    model, report = converted
    assert isinstance(model, MAETokModel) and not model.training
    assert {"encoder.freqs_t_x", "decoder.freqs_t_y", "decoder.model.pos_embed"} <= set(report.dropped_keys)
    assert model.encoder.mask_token is not None  # trained with token masking: the mask token is kept


def test_rope_tables(model, fixture):
    outputs = fixture["outputs"]
    for stack, name in ((model.encoder, "encoder"), (model.decoder, "decoder")):
        reference_cos = outputs[f"{name}_rope_freqs_cis_real"]
        side = int(reference_cos.shape[-2] ** 0.5)
        with torch.no_grad():
            cos, sin = stack.rope.grid_tables(side, side)
        assert_close(cos, reference_cos, f"{name}_rope_freqs_cis_real")
        assert_close(sin, outputs[f"{name}_rope_freqs_cis_imag"], f"{name}_rope_freqs_cis_imag")


def test_encoder_and_latents(model, encoded, fixture):
    outputs = fixture["outputs"]
    assert_close(encoded.last_hidden_state, outputs["encoder_hidden_states"], "encoder_hidden_states")
    assert_close(encoded.latents, outputs["latents"], "latents")
    normalized = model.normalize_latents(encoded.latents)
    assert_close(normalized, outputs["latents_normalized"], "latents_normalized")
    assert_close(model.denormalize_latents(normalized), encoded.latents, "denormalized latents")


def test_reconstruction(model, encoded, fixture):
    outputs = fixture["outputs"]
    with torch.no_grad():
        reconstruction = model(outputs["input_images"]).sample
    assert_close(reconstruction, outputs["reconstruction"], "reconstruction")
    assert_close(
        decode_both_ways(model, encoded.latents), outputs["decoded_from_quant_no_hw"], "decoded_from_quant_no_hw"
    )


def test_decode_given_latent(model, fixture):
    outputs = fixture["outputs"]
    decoded = decode_both_ways(model, outputs["latent_input_random"])
    assert_close(decoded, outputs["decoded_from_random_latent"], "decoded_from_random_latent")


def test_decode_other_sizes(model, fixture):
    """An hf_vtok extension: the RoPE decoder (no absolute positions) decodes any patch grid."""
    patch = model.config.decoder_patch_size
    height, width = model.config.image_size - patch, model.config.image_size + patch
    with torch.no_grad():
        decoded = model.decode(fixture["outputs"]["latent_input_random"], height=height, width=width).sample
    assert decoded.shape[-2:] == (height, width) and torch.isfinite(decoded).all()


def test_cli_folder_loads_with_auto_classes(fixture, tmp_path):
    cli_main(
        ["convert", "maetok", "--checkpoint", str(fixture["checkpoint"]), "--config", str(fixture["config"]),
         "--arch-overrides", str(fixture["root"] / "original_config.json"), "--output", str(tmp_path)]
    )  # fmt: skip
    model = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(model, MAETokModel)
    with torch.no_grad():
        reconstruction = model(fixture["outputs"]["input_images"]).sample
    assert_close(reconstruction, fixture["outputs"]["reconstruction"], "reconstruction (saved folder)")


def test_training_only_tensors_are_dropped(fixture, tmp_path):
    """Auxiliary decoders / teachers in a checkpoint are dropped and listed, not loaded."""
    state_dict = load_file(fixture["checkpoint"])
    extra = {"decoder_hog.mask_token": torch.zeros(1), "to_pixel_dino.weight": torch.zeros(2, 2),
             "repa_model.cls_token": torch.zeros(1), "clip_model.pos_embed": torch.zeros(1)}  # fmt: skip
    save_file({**state_dict, **extra}, tmp_path / "model.safetensors")
    _, report = convert_maetok_checkpoint(
        tmp_path / "model.safetensors", fixture["config"], arch_overrides=fixture["arch_overrides"]
    )
    assert set(extra) <= set(report.dropped_keys)


def test_config_missing_required_fields(fixture, tmp_path):
    config = write_config(tmp_path, fixture["config"], drop=("dec_type",))
    with pytest.raises(ValueError, match=r"missing required field.*dec_type"):
        convert_maetok_checkpoint(fixture["checkpoint"], config, arch_overrides=fixture["arch_overrides"])


def test_checkpoint_of_another_variant(fixture, family_parity_dir, tmp_path):
    with pytest.raises(CheckpointMismatchError, match="not MAETok/maetok-b-128"):
        convert_maetok_checkpoint(
            fixture["checkpoint"], fixture["config"], arch_overrides=fixture["arch_overrides"], release="maetok-b-128"
        )
    axial = write_config(tmp_path, fixture["config"], rope_mixed=False)
    with pytest.raises(ValueError, match="axial"):
        convert_maetok_checkpoint(fixture["checkpoint"], axial, arch_overrides=fixture["arch_overrides"])
    softvq = load_fixture(family_parity_dir("softvq"))
    with pytest.raises(CheckpointMismatchError, match="SoftVQ"):
        convert_maetok_checkpoint(softvq["checkpoint"], softvq["config"], arch_overrides=softvq["arch_overrides"])
