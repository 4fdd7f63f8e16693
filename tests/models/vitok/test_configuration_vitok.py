"""ViTokConfig: the variant language, presets, validation, round trips."""

import pytest
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig

from hf_vtok import VITOK_PRESETS, ViTokConfig, ViTokModel, parse_vitok_variant


def test_released_variant_fields():
    config = ViTokConfig.from_variant("Ld4-Ld24/1x16x64")
    assert (config.encoder_hidden_size, config.encoder_num_layers, config.encoder_num_heads) == (1024, 4, 16)
    assert (config.decoder_hidden_size, config.decoder_num_layers, config.decoder_num_heads) == (1024, 24, 16)
    assert (config.patch_size, config.latent_channels, config.temporal_patch_size) == (16, 64, 1)
    assert config.mlp_ratio == 2.67 and config.pixels_per_token == 768
    assert config.variant == "Ld4-Ld24/1x16x64"


def test_underscore_form_and_two_part_strides():
    fields = parse_vitok_variant("w64_d2_h4-w96_d2_h3_m3.5/16x8")
    assert fields["encoder_hidden_size"] == 64 and fields["decoder_num_heads"] == 3
    assert fields["mlp_ratio"] == 3.5  # the larger ratio of the two stacks
    assert (fields["temporal_patch_size"], fields["patch_size"], fields["latent_channels"]) == (1, 16, 8)


def test_single_stack_is_used_for_both_and_inline_overrides():
    fields = parse_vitok_variant("Bw512h8/2x8x4")
    assert fields["encoder_hidden_size"] == fields["decoder_hidden_size"] == 512
    assert fields["encoder_num_layers"] == 12 and fields["encoder_num_heads"] == 8
    assert fields["temporal_patch_size"] == 2


@pytest.mark.parametrize(
    "preset,encoder_params,decoder_params",
    [("350M-f16x64", 51.2e6, 303.3e6), ("5B-f16x16", 456.0e6, 4538.4e6), ("5B-f32x256", 463.8e6, 4546.2e6)],
)
def test_presets_have_the_released_sizes(preset, encoder_params, decoder_params):
    with init_empty_weights():
        model = ViTokModel(ViTokConfig.from_variant(preset))
    assert sum(p.numel() for p in model.encoder.parameters()) == pytest.approx(encoder_params, rel=2e-3)
    assert sum(p.numel() for p in model.decoder.parameters()) == pytest.approx(decoder_params, rel=2e-3)


def test_all_nine_presets_parse():
    assert len(VITOK_PRESETS) == 9
    for name, (variant, repo) in VITOK_PRESETS.items():
        config = ViTokConfig.from_variant(name)
        assert config.variant == variant and repo.endswith(name)
        assert config.patch_size == int(name.split("-f")[1].split("x")[0])
        assert config.latent_channels == int(name.rsplit("x", 1)[1])


@pytest.mark.parametrize(
    "variant,message",
    [
        ("Ld4-Ld24", "expected '<encoder>"),
        ("Ld4-Ld24-B/16x8", "at most one '-'"),
        ("Qd4/16x8", "unknown base 'Q'"),
        ("Ld4/16x8x4x2", "the part after '/'"),
        ("Ld4/16xA", "the part after '/'"),
        ("w64_dX_h4/16x8", "malformed encoder spec"),
        ("Ld4d5/16x8", "'d' is given twice"),
        ("-L/16x8", "empty encoder spec"),
        ("L/0x8", "must be positive"),
        ("w64_d2_h5/16x8", "not divisible"),
        ("w60_d2_h10/16x8", "divisible by 4"),
    ],
)
def test_malformed_variants_say_what_is_wrong(variant, message):
    with pytest.raises(ValueError, match=message):
        ViTokConfig.from_variant(variant)


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="at least one of has_encoder"):
        ViTokConfig(has_encoder=False, has_decoder=False)
    with pytest.raises(Exception, match="expected int"):
        ViTokConfig(patch_size="16")
    config = ViTokConfig.from_variant("w64_d2_h4-w96_d2_h3/1x16x8", mask_padding=True)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, ViTokConfig)
    drop_path = lambda fields: {key: value for key, value in fields.items() if key != "_name_or_path"}  # noqa: E731
    assert drop_path(loaded.to_dict()) == drop_path(config.to_dict())


def test_mlp_hidden_rounding_matches_the_original_rule():
    model = ViTokModel(ViTokConfig.from_variant("w64_d1_h4-w96_d1_h3/16x8"))
    # ((int(width * 2.67) + 8) // 16) * 16
    assert model.encoder.layers[0].mlp.fc2.in_features == 176
    assert model.decoder.layers[0].mlp.fc2.in_features == 256
    assert model.encoder.layers[0].mlp.fc1.weight.dtype == torch.float32
