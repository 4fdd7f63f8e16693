"""FlowMo against the original code's golden outputs (../shared/parity/flowmo, see its FIXTURE.md).

Every size, name and number is read from the fixture files (original_config.yaml, the checkpoint,
the safetensors and FIXTURE.md); fixture sets with the same layout but other sizes and seeds are
run against these tests. Every tensor of outputs.safetensors is compared.
"""

import re

import pytest
import torch
from safetensors.torch import load_file

from hf_vtok import FlowMoImageProcessor, FlowMoModel
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.flowmo.convert_flowmo_original_to_hf import (
    config_from_original,
    convert_flowmo_checkpoint,
    load_original_config,
)
from hf_vtok.models.flowmo.modeling_flowmo import flowmo_position_ids
from hf_vtok.models.flowmo.sampling_flowmo import flowmo_time_grid

pytestmark = pytest.mark.parity
ATOL = 1e-5
WIDTH_TABLE_KEY = ("fixture", "dit_b_4_override")  # where the fixture records its replaced DIT_ZOO table


def _width_table(original):
    node = original
    for key in WIDTH_TABLE_KEY:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _linear_nocfg_settings(fixture_md: str) -> tuple[int, float]:
    """Steps and CFG scale of the `recon_linear_nocfg_final` call, as FIXTURE.md states them."""
    match = re.search(r'schedule="linear"`?,\s*(\d+)\s+steps\s+and\s+cfg\s*=\s*([0-9.]+)', fixture_md)
    if match is None:
        pytest.fail("FIXTURE.md does not state the steps / cfg of recon_linear_nocfg_final")
    return int(match.group(1)), float(match.group(2))


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    root = family_parity_dir("flowmo")
    original = load_original_config(root / "original_config.yaml")
    return {
        "root": root,
        "original": original,
        "width_table": _width_table(original),
        "inputs": load_file(root / "inputs.safetensors"),
        "outputs": load_file(root / "outputs.safetensors"),
        "linear_nocfg": _linear_nocfg_settings((root / "FIXTURE.md").read_text()),
    }


@pytest.fixture(scope="module")
def model(fixture):
    return convert_flowmo_checkpoint(
        fixture["root"] / "flowmo_tiny.pth", original_config=fixture["original"], width_table=fixture["width_table"]
    )


def _rotation_matrices(cos, sin):
    """cos/sin tables -> the original's ``[[cos, -sin], [sin, cos]]`` layout ``[..., D/2, 2, 2]``."""
    return torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)


@torch.no_grad()
def _compute_all(fixture, model) -> dict[str, torch.Tensor]:
    """Every fixture tensor, computed by hf_vtok through the call sequence of FIXTURE.md."""
    config, inputs = model.config, fixture["inputs"]
    images = inputs["images"]
    batch, _, height, width = images.shape
    result: dict[str, torch.Tensor] = {}

    # 1. encoder, position ids, rope tables
    model.eval()
    encoded = model.encode(images, output_hidden_states=True)
    result["encoder_code_prequant"] = encoded.prequant_latents
    for index in range(config.encoder_depth):
        result[f"dbg_encoder_block{index}_img"] = encoded.hidden_states[index + 1]
        result[f"dbg_encoder_block{index}_txt"] = encoded.code_hidden_states[index + 1]
    code_ids, image_ids = flowmo_position_ids(
        config.code_length, height // config.patch_size, width // config.patch_size
    )
    result["dbg_txt_ids"] = code_ids.expand(batch, -1, -1)
    result["dbg_img_ids"] = image_ids.expand(batch, -1, -1)
    for name, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
        (code_cos, code_sin), (image_cos, image_sin) = stack.rotary_tables(code_ids, image_ids)
        tables = _rotation_matrices(torch.cat([code_cos, image_cos]), torch.cat([code_sin, image_sin]))
        result[f"dbg_{name}_pe_double"] = tables.expand(batch, 1, *tables.shape)

    # 2. LFQ (eval mode)
    result["quantized_code"] = encoded.latents
    result["token_indices"] = encoded.image_tokens
    result["lfq_indices_flat"] = encoded.image_tokens.flatten()
    result["quantizer_loss_eval"] = encoded.quantizer_loss
    result["code_from_indices"] = model.tokens_to_latents(encoded.image_tokens)

    # 3. one decoder call, per-sample t, with the code and with the null code
    conditioning = model.conditioning(encoded.latents)
    result["decoder_code_input"] = conditioning
    velocity = model.velocity(
        inputs["dec_x_t"], inputs["dec_t"], conditioning=conditioning, output_code=True, output_hidden_states=True
    )
    result["decoder_velocity"] = velocity.sample
    result["decoder_txt_out"] = velocity.code_output
    for index in range(config.decoder_depth):
        result[f"dbg_decoder_block{index}_img"] = velocity.hidden_states[index + 1]
        result[f"dbg_decoder_block{index}_txt"] = velocity.code_hidden_states[index + 1]
    result["decoder_velocity_nullcode"] = model.velocity(
        inputs["dec_x_t"], inputs["dec_t"], conditioning=conditioning * 0
    ).sample
    result["dbg_decoder_timestep_embedding"] = model.decoder.timestep_features(inputs["dec_t"])
    result["dbg_decoder_vec"] = model.decoder.embed_time(inputs["dec_t"])

    # 4. the sampler from the given noise, with the config's steps / schedule / CFG
    times, steps = flowmo_time_grid(config.num_inference_steps, config.sampling_schedule)
    result["recon_ts"] = torch.cat([times, times[-1:] - steps[-1:]])
    result["recon_dts"] = steps
    decoded = model.decode(encoded.latents, noise=inputs["recon_z0"], output_trajectory=True)
    result["recon_trajectory"] = decoded.trajectory
    result["recon_final"] = decoded.sample
    result["recon_cfg_applied"] = decoded.guidance_steps.long()
    linear_steps, linear_cfg = fixture["linear_nocfg"]
    result["recon_linear_nocfg_final"] = model.decode(
        image_tokens=encoded.image_tokens,
        noise=inputs["recon_z0"],
        num_inference_steps=linear_steps,
        sampling_schedule="linear",
        guidance_scale=linear_cfg,
    ).sample

    # 5. training-mode losses (no code dropout, the fixture's enable_cfg=False)
    model.train()
    try:
        trained = model(
            images, return_loss=True, timesteps=inputs["dec_t"], noise=inputs["dec_noise"], condition_dropout=False
        )
    finally:
        model.eval()
    assert torch.equal(trained.image_tokens, encoded.image_tokens)
    result["train_velocity"] = trained.velocity
    result["train_diffusion_loss"] = trained.losses["diffusion_loss"]
    result["train_quantizer_loss"] = trained.losses["quantizer_loss"]
    result["train_total_loss_no_lpips"] = trained.loss
    result["train_lfq_per_sample_entropy"] = trained.losses["per_sample_entropy"]
    result["train_lfq_codebook_entropy"] = trained.losses["codebook_entropy"]
    result["train_lfq_entropy_aux_loss"] = trained.losses["entropy_loss"]
    result["train_lfq_commitment"] = trained.losses["commitment_loss"]
    return result


@pytest.fixture(scope="module")
def computed(fixture, model):
    return _compute_all(fixture, model)


def test_every_fixture_tensor_is_checked(fixture, computed):
    assert set(computed) == set(fixture["outputs"]), (
        f"unchecked fixture tensors: {sorted(set(fixture['outputs']) - set(computed))}; "
        f"unknown: {sorted(set(computed) - set(fixture['outputs']))}"
    )


def test_outputs_match(fixture, computed):
    errors, failures = {}, []
    for name, expected in fixture["outputs"].items():
        actual = computed[name]
        if tuple(actual.shape) != tuple(expected.shape):
            failures.append(f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}")
            continue
        if not expected.is_floating_point():
            if not torch.equal(actual.long(), expected):
                failures.append(f"{name}: integer tensor differs at {int((actual.long() != expected).sum())} entries")
            continue
        errors[name] = (actual.detach().float() - expected.float()).abs().max().item()
        if not errors[name] <= ATOL:
            failures.append(f"{name}: max abs error {errors[name]:.3g} > {ATOL}")
    assert not failures, "\n".join(failures)


def test_ema_weights_are_the_default(fixture, model):
    """model_state_dict is the EMA plus noise (FIXTURE.md): converting it must give other outputs."""
    online = convert_flowmo_checkpoint(
        fixture["root"] / "flowmo_tiny.pth",
        original_config=fixture["original"],
        width_table=fixture["width_table"],
        weights="online",
    )
    inputs = fixture["inputs"]
    with torch.no_grad():
        ema_code = model.encode(inputs["images"]).prequant_latents
        online_code = online.encode(inputs["images"]).prequant_latents
    torch.testing.assert_close(ema_code, fixture["outputs"]["encoder_code_prequant"], atol=ATOL, rtol=0)
    assert (online_code - ema_code).abs().max() > 1e-3


def test_mismatched_config_names_keys(fixture):
    """A checkpoint converted with another config lists the offending keys."""
    config = config_from_original(fixture["original"], fixture["width_table"])
    wrong = config_from_original(
        fixture["original"],
        fixture["width_table"],
        context_dim=config.context_dim * 2,
        decoder_depth=config.decoder_depth + 1,
    )
    with pytest.raises(CheckpointMismatchError) as error:
        convert_flowmo_checkpoint(fixture["root"] / "flowmo_tiny.pth", config=wrong)
    message = str(error.value)
    assert "missing keys" in message and f"decoder.blocks.{config.decoder_depth}." in message
    assert "shape mismatches" in message and "decoder.code_embed.weight" in message


@torch.no_grad()
def test_cli_folder_round_trip(fixture, tmp_path):
    """`hf-vtok convert flowmo` writes a folder AutoModel / AutoImageProcessor load, with the same outputs."""
    from transformers import AutoImageProcessor, AutoModel

    from hf_vtok.cli import main

    root, inputs, outputs = fixture["root"], fixture["inputs"], fixture["outputs"]
    command = [
        "convert",
        "flowmo",
        "--checkpoint",
        str(root / "flowmo_tiny.pth"),
        "--config",
        str(root / "original_config.yaml"),
    ]
    if fixture["width_table"] is not None:
        command += ["--width-table", ".".join(WIDTH_TABLE_KEY)]
    main(command + ["--output", str(tmp_path)])
    model = AutoModel.from_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(model, FlowMoModel) and isinstance(processor, FlowMoImageProcessor)
    assert processor.crop_size["height"] == model.config.image_size == inputs["images"].shape[-1]
    encoded = model.encode(inputs["images"])
    assert torch.equal(encoded.image_tokens, outputs["token_indices"])
    decoded = model.decode(encoded, noise=inputs["recon_z0"])
    torch.testing.assert_close(decoded.sample, outputs["recon_final"], atol=ATOL, rtol=0)
