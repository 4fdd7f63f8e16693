"""SoftVQ-VAE against the original code's golden outputs (../shared/parity/softvq, see its FIXTURE.md).

Every size and number is read from the fixture files (config.json, original_config.json,
outputs.safetensors); fixture sets with the same layout but other sizes and seeds are run too.
"""

import pytest
import torch
from transformers import AutoImageProcessor, AutoModel

from hf_vtok import SoftVQModel
from hf_vtok.cli import main as cli_main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.softvq.convert_softvq_original_to_hf import convert_softvq_checkpoint
from tests.testing_utils.latent_token_parity import assert_close, decode_both_ways, load_fixture, write_config

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    return load_fixture(family_parity_dir("softvq"))


@pytest.fixture(scope="module")
def converted(fixture):
    return convert_softvq_checkpoint(
        fixture["checkpoint"], fixture["config"], arch_overrides=fixture["arch_overrides"]
    )


@pytest.fixture(scope="module")
def model(converted):
    return converted[0]


@pytest.fixture(scope="module")
def encoded(model, fixture):
    with torch.no_grad():
        return model.encode(fixture["outputs"]["input_images"])


def _per_codebook(values, num_codebooks):
    """hf_vtok's ``[B, L, X]`` -> the original's ``[num_codebooks, B * L / num_codebooks, X]`` layout."""
    batch, length = values.shape[:2]
    return (
        values.reshape(batch, num_codebooks, length // num_codebooks, -1)
        .transpose(0, 1)
        .reshape(num_codebooks, batch * length // num_codebooks, -1)
    )


def test_conversion_report(converted, fixture):
    model, report = converted
    assert isinstance(model, SoftVQModel) and not model.training
    assert "quantize.codebook_used" in report.dropped_keys
    assert all(key.startswith(("decoder.model.patch_embed.", "quantize.codebook_used")) for key in report.dropped_keys)


def test_encoder_and_latents(encoded, fixture):
    outputs = fixture["outputs"]
    assert_close(encoded.last_hidden_state, outputs["encoder_hidden_states"], "encoder_hidden_states")
    assert_close(encoded.unquantized_latents, outputs["latents_pre_quant"], "latents_pre_quant")
    assert_close(encoded.latents, outputs["latents_quantized"], "latents_quantized")


def test_quantizer_tensors(model, encoded, fixture):
    outputs = fixture["outputs"]
    num_codebooks = model.config.num_codebooks
    with torch.no_grad():
        assert_close(model.quantizer.normalized_codebook(), outputs["codebook_normalized"], "codebook_normalized")
    assert_close(_per_codebook(encoded.code_logits, num_codebooks), outputs["quant_logits"], "quant_logits")
    assert_close(_per_codebook(encoded.code_probs, num_codebooks), outputs["quant_probs"], "quant_probs")
    assert_close(encoded.cosine_similarity.reshape(1), outputs["zq_z_cos"], "zq_z_cos")
    # the original returns its [num_codebooks, B * segment] argmax tensor reinterpreted (a raw view) as
    # [B, n_cb, segment]
    reference = outputs["quant_indices"]
    raw_view = _per_codebook(encoded.code_indices.unsqueeze(-1), num_codebooks).reshape(reference.shape)
    assert torch.equal(raw_view, reference)


def test_latent_normalization(model, encoded, fixture):
    normalized = model.normalize_latents(encoded.latents)
    assert_close(normalized, fixture["outputs"]["latents_normalized"], "latents_normalized")
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


def test_cli_folder_loads_with_auto_classes(fixture, tmp_path):
    cli_main(
        ["convert", "softvq", "--checkpoint", str(fixture["checkpoint"]), "--config", str(fixture["config"]),
         "--arch-overrides", str(fixture["root"] / "original_config.json"), "--output", str(tmp_path)]
    )  # fmt: skip
    model = AutoModel.from_pretrained(tmp_path).eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(model, SoftVQModel)
    assert processor.size.height == model.config.image_size
    with torch.no_grad():
        reconstruction = model(fixture["outputs"]["input_images"]).sample
    assert_close(reconstruction, fixture["outputs"]["reconstruction"], "reconstruction (saved folder)")


def test_config_missing_required_fields(fixture, tmp_path):
    config = write_config(tmp_path, fixture["config"], drop=("enc_type", "decoder_model"))
    with pytest.raises(ValueError, match=r"missing required field.*enc_type.*decoder_model"):
        convert_softvq_checkpoint(fixture["checkpoint"], config, arch_overrides=fixture["arch_overrides"])


def test_checkpoint_of_another_variant(fixture, tmp_path):
    with pytest.raises(CheckpointMismatchError, match="not SoftVQVAE/softvq-l-64"):
        convert_softvq_checkpoint(
            fixture["checkpoint"], fixture["config"], arch_overrides=fixture["arch_overrides"], release="softvq-l-64"
        )
    with pytest.raises(CheckpointMismatchError, match="another variant"):  # real ViT sizes vs the tiny weights
        convert_softvq_checkpoint(fixture["checkpoint"], fixture["config"])
    wrong_codebooks = write_config(tmp_path, fixture["config"], num_codebooks=1)
    with pytest.raises(CheckpointMismatchError, match="quantize.embedding"):
        convert_softvq_checkpoint(fixture["checkpoint"], wrong_codebooks, arch_overrides=fixture["arch_overrides"])
