"""Converter errors, no-pickle loading, shape inference, and the hf-vtok command."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hf_vtok import ViTokConfig, ViTokModel
from hf_vtok.cli import main
from hf_vtok.conversion import CheckpointMismatchError
from hf_vtok.models.vitok.convert_vitok_original_to_hf import KEY_RULES, convert_vitok_checkpoint

VARIANT = "w32_d2_h2-w48_d1_h3/1x8x4"


def _original_files(tmp_path, variant=VARIANT, **config):
    """Write encoder/decoder files with the original key names (the inverse of the converter's renaming)."""
    model = ViTokModel(ViTokConfig.from_variant(variant, **config))
    inverse = {
        "encoder.patch_embed.": "patch_embed.",
        "encoder.latent_proj.": "to_code.",
        "decoder.latent_embed.": "decoder_embed.",
        "decoder.patch_proj.": "to_pixels.",
        "encoder.layers.": "encoder_blocks.",
        "decoder.layers.": "decoder_blocks.",
        ".norm.": ".norm1.",
        ".attention.q_norm.": ".attn.norm_q.",
        ".attention.k_norm.": ".attn.norm_k.",
        ".attention.": ".attn.",
        ".mlp.": ".ffn.",
    }
    halves = {"encoder": {}, "decoder": {}}
    for key, value in model.state_dict().items():
        original = key
        for new, old in inverse.items():
            original = original.replace(new, old)
        halves["decoder" if original.startswith(("decoder", "to_pixels")) else "encoder"][original] = value.clone()
    paths = {}
    for half, tensors in halves.items():
        paths[half] = tmp_path / f"{half}.safetensors"
        save_file(tensors, paths[half])
    return model, paths, halves


def test_key_rules_cover_every_original_name(tmp_path):
    model, paths, _ = _original_files(tmp_path)
    converted = convert_vitok_checkpoint(paths["encoder"], paths["decoder"], variant=VARIANT)
    for name, tensor in model.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name
    assert KEY_RULES  # the rules are data, shared with the docs


def test_shapes_alone_give_the_architecture(tmp_path):
    model, paths, _ = _original_files(tmp_path)
    inferred = convert_vitok_checkpoint(paths["encoder"], paths["decoder"])
    for field in (
        "encoder_hidden_size",
        "encoder_num_layers",
        "encoder_num_heads",
        "decoder_hidden_size",
        "decoder_num_layers",
        "decoder_num_heads",
        "patch_size",
        "latent_channels",
    ):
        assert getattr(inferred.config, field) == getattr(model.config, field), field
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(inferred(images).sample, model.eval()(images).sample)


@pytest.mark.parametrize(
    "variant, config",
    [
        # one ratio (2.67), but the encoder's rounded SwiGLU width (176 of 64) gives the decoder 272, not 256, of 96
        ("w64_d1_h4-w96_d1_h4/1x8x4", {}),
        ("w32_d1_h2-w48_d1_h3/1x8x4", {"mlp_ratio_decoder": 4.0}),  # halves of different ratios
    ],
)
def test_each_half_mlp_ratio_from_its_own_weights(tmp_path, variant, config):
    model, paths, _ = _original_files(tmp_path, variant, **config)
    inferred = convert_vitok_checkpoint(paths["encoder"], paths["decoder"])  # no --variant
    for role in ("encoder", "decoder"):
        assert inferred.get_submodule(role).layers[0].mlp.fc2.weight.shape == (
            model.get_submodule(role).layers[0].mlp.fc2.weight.shape
        )
    assert inferred.config.mlp_ratio_decoder is not None
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(inferred(images).sample, model.eval()(images).sample)
    inferred.save_pretrained(tmp_path / "saved")
    assert ViTokModel.from_pretrained(tmp_path / "saved").config.mlp_ratio_decoder == inferred.config.mlp_ratio_decoder
    # one half alone, and halves of one ratio, need no second ratio
    assert convert_vitok_checkpoint(decoder_path=paths["decoder"]).config.mlp_ratio_decoder is None
    (tmp_path / "same").mkdir()
    _, same, _ = _original_files(tmp_path / "same")
    assert convert_vitok_checkpoint(same["encoder"], same["decoder"]).config.mlp_ratio_decoder is None


def test_configs_without_a_decoder_ratio_load_as_before(tmp_path):
    from hf_vtok.commands.reconstruct import DEFAULT_MODEL

    config = ViTokConfig.from_pretrained(DEFAULT_MODEL)  # saved before mlp_ratio_decoder existed
    assert config.mlp_ratio_decoder is None and config.stack_mlp_ratio("decoder") == config.mlp_ratio
    with pytest.raises(ValueError, match="mlp_ratio_decoder=0.0 gives the decoder"):
        ViTokConfig(mlp_ratio_decoder=0.0)


def test_mismatches_are_listed_by_name(tmp_path):
    _, paths, halves = _original_files(tmp_path)
    encoder = dict(halves["encoder"])
    encoder.pop("to_code.bias")
    encoder["encoder_blocks.0.attn.extra.weight"] = torch.zeros(2)
    encoder["patch_embed.weight"] = torch.zeros(32, 100)
    broken = tmp_path / "broken.safetensors"
    save_file(encoder, broken)
    with pytest.raises(CheckpointMismatchError) as error:
        convert_vitok_checkpoint(broken, paths["decoder"], variant=VARIANT)
    message = str(error.value)
    assert "missing keys (1): encoder.latent_proj.bias" in message
    assert "unexpected keys (1): encoder.layers.0.attention.extra.weight" in message
    assert "encoder.patch_embed.weight: checkpoint (32, 100) vs model (32, 192)" in message
    with pytest.raises(CheckpointMismatchError, match="does not match"):
        convert_vitok_checkpoint(paths["encoder"], paths["decoder"], variant="w32_d2_h2-w48_d2_h3/1x8x4")


def test_long_key_lists_show_one_key_per_pattern():
    from hf_vtok.conversion.state_dicts import summarise_keys

    keys = [f"decoder.layers.{index}.mlp.{name}.weight" for index in range(12) for name in ("fc1", "fc2")]
    assert summarise_keys(sorted(keys), shown=3) == (
        "decoder.layers.0.mlp.fc1.weight, decoder.layers.0.mlp.fc2.weight and 22 more like them"
    )
    many = sorted(keys + [f"encoder.extra{index}" for index in range(4)])
    assert summarise_keys(many, shown=3).endswith("and 25 more of 3 other key patterns")
    assert summarise_keys(["a.weight"]) == "a.weight"


def test_torch_checkpoints_load_without_pickle(tmp_path):
    model, _, halves = _original_files(tmp_path)
    combined = {f"_orig_mod.{key}": value for half in halves.values() for key, value in half.items()}
    torch.save(combined, tmp_path / "model.pt")
    converted = convert_vitok_checkpoint(checkpoint_path=tmp_path / "model.pt", variant=VARIANT)
    assert torch.equal(converted.encoder.patch_embed.weight, model.encoder.patch_embed.weight)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"patch_embed.weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_vitok_checkpoint(checkpoint_path=tmp_path / "evil.pt", variant=VARIANT)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        convert_vitok_checkpoint(encoder_path=tmp_path / "junk.safetensors", variant=VARIANT)
    with pytest.raises(FileNotFoundError):
        convert_vitok_checkpoint(encoder_path=tmp_path / "nope.safetensors", variant=VARIANT)


def test_preset_download_fails_fast_offline(tmp_path):
    with pytest.raises(RuntimeError, match="could not fetch encoder.safetensors"):
        main(["convert", "vitok", "--preset", "350M-f16x64", "--output", str(tmp_path / "out")])


def test_reconstruct_writes_images_at_their_sizes(tmp_path):
    model, paths, _ = _original_files(tmp_path)
    folder = tmp_path / "converted"
    main(
        [
            "convert",
            "vitok",
            "--encoder",
            str(paths["encoder"]),
            "--decoder",
            str(paths["decoder"]),
            "--variant",
            VARIANT,
            "--max-num-patches",
            "16",
            "--output",
            str(folder),
        ]
    )
    rng = np.random.default_rng(0)
    inputs = []
    for index, size in enumerate([(37, 21), (64, 48), (8, 8)]):  # the second is over the saved 16-patch budget
        inputs.append(tmp_path / f"photo{index}.png")
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(inputs[-1])
    exit_code = main(["reconstruct", "--model", str(folder), "--out", str(tmp_path / "recon"), *map(str, inputs)])
    assert exit_code == 0
    for index, size in enumerate([(37, 21), (64, 48), (8, 8)]):
        assert Image.open(tmp_path / "recon" / f"photo{index}_recon.png").size == size


@pytest.mark.slow
def test_console_script_reports_bad_files(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_vtok.cli",
            "reconstruct",
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path),
            str(bad),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    assert f"hf-vtok reconstruct: error: {str(bad)!r}" in result.stderr and "Traceback" not in result.stderr
