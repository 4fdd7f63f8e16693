"""ViTok-v2 against the original code's golden outputs (../shared/parity/vitok, see its FIXTURE.md).

Every size, name and number is read from the fixture files; fixture sets with the same layout but
other sizes and seeds are run against these tests.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hf_vtok import ViTokImageProcessor, ViTokModel
from hf_vtok.models.vitok.convert_vitok_original_to_hf import convert_vitok_checkpoint
from hf_vtok.modules import padding_attention_mask, rope_tables_2d

pytestmark = pytest.mark.parity
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    root = family_parity_dir("vitok")
    config = json.loads((root / "original_config.json").read_text())
    meta = json.loads((root / "fixture_meta.json").read_text())
    return {
        "root": root,
        "variant": config["variant"],
        "pp": meta["pp"],
        "outputs": load_file(root / "outputs.safetensors"),
        "extra": load_file(root / "preprocess_extra.safetensors"),
    }


@pytest.fixture(scope="module")
def model(fixture):
    root = fixture["root"]
    return convert_vitok_checkpoint(
        root / "encoder.safetensors", root / "decoder.safetensors", variant=fixture["variant"]
    )


def _images(fixture, indices):
    return [Image.open(fixture["root"] / f"input_{index}.png").convert("RGB") for index in indices]


def _assert_close(actual, expected, name, valid=None):
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    )
    actual, expected = actual.detach().float(), expected.float()
    if valid is not None:  # padded positions are meaningless (FIXTURE.md): compare valid tokens only
        actual, expected = actual[valid], expected[valid]
    error = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert error <= ATOL, f"{name}: max abs error {error:.3g} > {ATOL}"
    return error


def _processor_keys(batch, outputs, prefix):
    for key, value in batch.items():
        reference = outputs[f"{prefix}_{'patches' if key == 'pixel_values' else key}"]
        assert value.dtype == reference.dtype, f"{key}: dtype {value.dtype} vs {reference.dtype}"
        _assert_close(value, reference, f"{prefix}_{key}")


def test_preprocessing_matches_patch_dict(fixture):
    outputs = fixture["outputs"]
    processor = ViTokImageProcessor.from_original_pp(fixture["pp"]["main"])
    batch = processor(_images(fixture, (0, 1)), return_tensors="pt")
    assert set(batch) == {
        key[3:] if key != "pd_patches" else "pixel_values" for key in outputs if key.startswith("pd_")
    }
    _processor_keys(batch, outputs, "pd")


@pytest.mark.parametrize("prefix,pp_name", [("budget", "budget"), ("lside", "longest_side")])
def test_resize_paths(fixture, prefix, pp_name):
    processor = ViTokImageProcessor.from_original_pp(fixture["pp"][pp_name])
    batch = processor(_images(fixture, (2,)), return_tensors="pt")
    _processor_keys(batch, fixture["extra"], prefix)
    reference_image = processor.postprocess(batch, output_type="pt", do_denormalize=False)[0]
    _assert_close(reference_image, fixture["extra"][f"{prefix}_ref_image"], f"{prefix}_ref_image")


def test_rope_tables_and_attention_mask(fixture, model):
    outputs = fixture["outputs"]
    row, col = outputs["pd_row_idx"], outputs["pd_col_idx"]
    for stack, name in ((model.encoder, "enc"), (model.decoder, "dec")):
        cos, sin = rope_tables_2d(row, col, stack.head_dim, model.config.rope_theta)
        _assert_close(cos, outputs[f"{name}_rope_cos"], f"{name}_rope_cos")
        _assert_close(sin, outputs[f"{name}_rope_sin"], f"{name}_rope_sin")
    mask = padding_attention_mask(outputs["pd_patch_mask"], pairwise=True)
    assert torch.equal(mask, outputs["attn_mask"])


@torch.no_grad()
def test_masked_path_every_tensor(fixture, model):
    outputs = fixture["outputs"]
    processor = ViTokImageProcessor.from_original_pp(fixture["pp"]["main"])
    batch = processor(_images(fixture, (0, 1)), return_tensors="pt")
    valid = batch["patch_mask"]
    captured = {}
    hook = model.encoder.latent_proj.register_forward_hook(lambda module, args, out: captured.update(to_code=out))
    try:
        encoded = model.encode(**batch, mask_padding=True, output_hidden_states=True)
    finally:
        hook.remove()
    encoder_states = ["enc_patch_embed_out"] + [f"enc_block{i}_out" for i in range(model.config.encoder_num_layers)]
    for state, name in zip(encoded.hidden_states, encoder_states, strict=True):
        _assert_close(state, outputs[name], name, valid)
    _assert_close(captured["to_code"], outputs["enc_to_code_out"], "enc_to_code_out", valid)
    _assert_close(encoded.latents, outputs["z"], "z", valid)

    decoded = model.decode(encoded, mask_padding=True, output_hidden_states=True)
    decoder_states = ["dec_embed_out"] + [f"dec_block{i}_out" for i in range(model.config.decoder_num_layers)]
    for state, name in zip(decoded.hidden_states, decoder_states, strict=True):
        _assert_close(state, outputs[name], name, valid)
    _assert_close(decoded.sample, outputs["decoded_patches"], "decoded_patches", valid)

    _assert_close(processor.to_canvas(decoded), outputs["recon_canvas"], "recon_canvas")
    _assert_close(processor.to_canvas(batch), outputs["ref_canvas"], "ref_canvas")
    count = batch["pixel_values"].shape[0]
    for kind, source in (("recon", decoded), ("ref", batch)):
        images = processor.postprocess(source, output_type="pt", do_denormalize=False)
        for index in range(count):
            _assert_close(images[index], outputs[f"{kind}_image_{index}"], f"{kind}_image_{index}")
    for index, image in enumerate(processor.postprocess(decoded, output_type="pil")):
        expected = outputs[f"recon_image_u8_{index}"].numpy()
        np.testing.assert_array_equal(
            np.asarray(image).transpose(2, 0, 1), expected, err_msg=f"recon_image_u8_{index}"
        )


@torch.no_grad()
def test_unmasked_path_released_semantics(fixture, model):
    """The released flash backend lets padding attend; config default mask_padding=False reproduces it."""
    outputs = fixture["outputs"]
    assert model.config.mask_padding is False
    processor = ViTokImageProcessor.from_original_pp(fixture["pp"]["main"])
    batch = processor(_images(fixture, (0, 1)), return_tensors="pt")
    valid = batch["patch_mask"]
    result = model(**batch)
    _assert_close(result.latents, outputs["z_unmasked"], "z_unmasked", valid)
    _assert_close(result.sample, outputs["decoded_patches_unmasked"], "decoded_patches_unmasked", valid)
    for index, image in enumerate(processor.postprocess(result, output_type="pt", do_denormalize=False)):
        _assert_close(image, outputs[f"recon_image_unmasked_{index}"], f"recon_image_unmasked_{index}")


@torch.no_grad()
@pytest.mark.parametrize("mask_padding", [True, False])
def test_unpadded_image(fixture, model, mask_padding):
    outputs = fixture["outputs"]
    processor = ViTokImageProcessor.from_original_pp(fixture["pp"]["nopad_img0"])
    batch = processor(_images(fixture, (0,)), return_tensors="pt")
    _assert_close(batch["pixel_values"], outputs["nopad0_patches"], "nopad0_patches")
    assert bool(batch["patch_mask"].all()), "the no-padding case must have no padding"
    encoded = model.encode(**batch, mask_padding=mask_padding)
    _assert_close(encoded.latents, outputs["nopad0_z"], "nopad0_z")
    _assert_close(
        model.decode(encoded, mask_padding=mask_padding).sample, outputs["nopad0_decoded_patches"], "nopad0_decoded"
    )


@torch.no_grad()
def test_split_files_load_as_half_models(fixture, model):
    """encoder.safetensors alone -> encoder-only model; decoder.safetensors alone -> decoder-only."""
    root, outputs = fixture["root"], fixture["outputs"]
    encoder_only = convert_vitok_checkpoint(encoder_path=root / "encoder.safetensors", variant=fixture["variant"])
    decoder_only = convert_vitok_checkpoint(decoder_path=root / "decoder.safetensors", variant=fixture["variant"])
    assert encoder_only.decoder is None and decoder_only.encoder is None
    processor = ViTokImageProcessor.from_original_pp(fixture["pp"]["main"])
    batch = processor(_images(fixture, (0, 1)), return_tensors="pt")
    valid = batch["patch_mask"]
    encoded = encoder_only.encode(**batch, mask_padding=True)
    _assert_close(encoded.latents, outputs["z"], "z (encoder-only)", valid)
    _assert_close(decoder_only.decode(encoded, mask_padding=True).sample, outputs["decoded_patches"], "decoded", valid)


@torch.no_grad()
def test_converted_folder_round_trip(fixture, tmp_path):
    """The CLI converter writes a folder AutoModel / AutoImageProcessor load, with the same outputs."""
    from transformers import AutoImageProcessor, AutoModel

    from hf_vtok.cli import main

    root, outputs = fixture["root"], fixture["outputs"]
    main(
        [
            "convert",
            "vitok",
            "--encoder",
            str(root / "encoder.safetensors"),
            "--decoder",
            str(root / "decoder.safetensors"),
            "--variant",
            fixture["variant"],
            "--pp",
            fixture["pp"]["main"],
            "--mask-padding",
            "--output",
            str(tmp_path),
        ]
    )
    model = AutoModel.from_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(model, ViTokModel) and isinstance(processor, ViTokImageProcessor)
    assert model.config.mask_padding is True
    batch = processor(_images(fixture, (0, 1)), return_tensors="pt")
    result = model(**batch)
    _assert_close(result.latents, outputs["z"], "z", batch["patch_mask"])
    _assert_close(result.sample, outputs["decoded_patches"], "decoded_patches", batch["patch_mask"])
