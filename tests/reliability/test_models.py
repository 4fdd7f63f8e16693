"""Issue 19, the models / processors / configs: bad input and mixed-up checkpoints give a clear error instead of a
silent wrong result or a bare traceback. The checks every family shares run in each family's tester class
(``tests/testing_utils/tokenizer_tester.py``: NaN / uint8 / out-of-range inputs, empty batches, another family's
checkpoint, EXIF orientation, bad arrays); these are the campaign's cases as it found them."""

import json
import math

import numpy as np
import pytest
import torch
import torch._dynamo
from PIL import Image
from transformers import AutoModel

from hf_vtok import (
    FlowMoConfig,
    FlowMoImageProcessor,
    LatentTokenImageProcessor,
    MAETokConfig,
    MAETokModel,
    SoftVQConfig,
    SoftVQModel,
    V2FlowConfig,
    V2FlowModel,
    ViTokConfig,
    ViTokImageProcessor,
    ViTokModel,
)
from hf_vtok.modeling_utils import CheckpointTypeError
from tests.testing_utils.tiny_models import (
    TINY_LATENT_TOKEN_VIT,
    TINY_SOFTVQ_EXTRA,
    TINY_VITOK_VARIANT,
    tiny_flowmo_model,
    tiny_v2flow_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _vitok():
    torch.manual_seed(0)
    return ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT)).eval()


def _softvq():
    torch.manual_seed(0)
    return SoftVQModel(SoftVQConfig(**TINY_LATENT_TOKEN_VIT, **TINY_SOFTVQ_EXTRA)).eval()


# ------------------------------------------------------------------------------------------------
# another family's checkpoint: was every weight random with a warning
@pytest.mark.parametrize(
    "saved, loader, saved_type, loader_config",
    [
        (tiny_flowmo_model, ViTokModel, "flowmo", "ViTokConfig"),  # was 232/232 weights missing (released sizes)
        (_vitok, V2FlowModel, "vitok", "V2FlowConfig"),  # was 256/256
        (_softvq, MAETokModel, "softvq", "MAETokConfig"),  # was one random tensor
    ],
)
def test_a_family_class_refuses_another_familys_folder(tmp_path, saved, loader, saved_type, loader_config):
    saved().save_pretrained(tmp_path)
    with pytest.raises(CheckpointTypeError, match=rf"declares model_type '{saved_type}' but {loader_config}") as error:
        loader.from_pretrained(tmp_path)
    assert str(tmp_path) in str(error.value) and loader.config_class.model_type in str(error.value)


def test_maetok_refuses_nothing_of_its_own_and_softvq_a_maetok_folder(tmp_path):
    torch.manual_seed(0)
    MAETokModel(MAETokConfig(**TINY_LATENT_TOKEN_VIT)).save_pretrained(tmp_path / "maetok")
    with pytest.raises(CheckpointTypeError, match="declares model_type 'maetok' but SoftVQConfig"):
        SoftVQModel.from_pretrained(tmp_path / "maetok")
    assert type(MAETokModel.from_pretrained(tmp_path / "maetok")) is MAETokModel


def test_an_edited_model_type_is_refused_by_its_saving_class(tmp_path):
    """A SoftVQ folder whose config.json says ``maetok``: AutoModel built a MAETokModel with one random tensor."""
    _softvq().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "model_type": "maetok"}))
    for load in (AutoModel.from_pretrained, MAETokModel.from_pretrained):
        with pytest.raises(CheckpointTypeError, match=r"saved by SoftVQModel \(a 'softvq' model\).*'maetok'"):
            load(tmp_path)


def test_most_weights_missing_is_an_error_unless_the_caller_reads_the_loading_info(tmp_path):
    _vitok().save_pretrained(tmp_path / "vitok")
    tiny_flowmo_model().save_pretrained(tmp_path / "flowmo")
    (tmp_path / "vitok" / "model.safetensors").write_bytes((tmp_path / "flowmo" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointTypeError, match=r"40 of the 40 weights of ViTokModel \(a 'vitok' model\)"):
        ViTokModel.from_pretrained(tmp_path / "vitok")
    model, info = ViTokModel.from_pretrained(tmp_path / "vitok", output_loading_info=True)  # the caller judges
    assert len(info["missing_keys"]) == 40 and type(model) is ViTokModel


def test_a_model_refuses_another_config_class():
    with pytest.raises(CheckpointTypeError, match="ViTokModel takes a ViTokConfig, got a FlowMoConfig"):
        ViTokModel(FlowMoConfig())


# ------------------------------------------------------------------------------------------------
# pixel input of encode: was NaN latents / [0, 255] floats read as [-1, 1]
@torch.no_grad()
def test_nan_latents_no_longer_give_normal_looking_v2flow_token_ids():
    model = tiny_v2flow_model()
    latents = torch.randn(1, 4, 4, 4)
    latents[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latents contains NaN values"):
        model.encode(latents, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["vitok", "flowmo"])
@torch.no_grad()
def test_eight_bit_pixels_are_not_read_as_minus_one_to_one(family):
    model = _vitok() if family == "vitok" else tiny_flowmo_model()
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"pixel_values holds values from .* outside the expected \[-1, 1\]"):
        model.encode(images * 255)  # floats in [0, 255]
    with pytest.raises(ValueError, match="pixel_values must be a floating point tensor, got dtype torch.uint8"):
        model.encode((images * 255).to(torch.uint8))
    model.encode(images * 2 - 1)


@torch.no_grad()
def test_flowmo_training_forward_checks_the_input_before_casting_it():
    """forward cast uint8 pixels to float before encode could see their dtype."""
    model = tiny_flowmo_model().train()
    with pytest.raises(ValueError, match="torch.uint8"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), generator=torch.Generator().manual_seed(0))


def test_the_checks_do_not_break_a_fullgraph_compile():
    model, images = _vitok(), torch.rand(2, 3, 16, 24) * 2 - 1
    assert model.validate_inputs
    torch._dynamo.reset()
    try:
        explanation = torch._dynamo.explain(model.encode)(images)
    finally:
        torch._dynamo.reset()
    assert explanation.graph_count == 1 and not explanation.break_reasons


def test_validate_inputs_is_per_model():
    first, second = _vitok(), _vitok()
    first.validate_inputs = False
    with torch.no_grad():
        first.encode(torch.full((1, 3, 8, 8), 200.0))
        with pytest.raises(ValueError, match="outside the expected"):
            second.encode(torch.full((1, 3, 8, 8), 200.0))


# ------------------------------------------------------------------------------------------------
# processors: was -11 / 13 passed through, "already in [0, 1]" for -5, raw tracebacks for odd arrays
@pytest.fixture(params=["vitok", "latent_token", "flowmo"])
def processor(request):
    return {
        "vitok": lambda: ViTokImageProcessor(patch_size=8, max_num_patches=64),
        "latent_token": lambda: LatentTokenImageProcessor(size={"height": 32, "width": 32}),
        "flowmo": lambda: FlowMoImageProcessor(image_size=16),
    }[request.param]()


@pytest.mark.parametrize("value", [-11.0, 13.0])
def test_do_rescale_false_refuses_floats_outside_zero_to_one(processor, value):
    with pytest.raises(ValueError, match=rf"from {value:g} to {value:g}, outside the expected \[0, 1\]"):
        processor(np.full((32, 32, 3), value, dtype=np.float32), do_rescale=False, return_tensors="pt")


def test_a_negative_float_image_is_not_called_already_in_zero_to_one(processor):
    with pytest.raises(ValueError, match=r"from -5 to -5, outside the expected \[0, 255\]") as error:
        processor(np.full((32, 32, 3), -5.0, dtype=np.float32), return_tensors="pt")
    assert "already in [0, 1]" not in str(error.value)


def test_a_two_channel_uint8_array_is_a_clear_error(processor):
    with pytest.raises(ValueError, match=r"1, 3 or 4 channels on its first or last axis.*\(32, 32, 2\) \(uint8\)"):
        processor(np.zeros((32, 32, 2), dtype=np.uint8), return_tensors="pt")


def test_a_two_dimensional_array_is_one_grayscale_image(processor):
    gray = np.random.RandomState(0).randint(0, 256, (32, 32), dtype=np.uint8)
    expected = processor(Image.fromarray(gray), return_tensors="pt")["pixel_values"]
    assert torch.equal(processor(gray, return_tensors="pt")["pixel_values"], expected)  # was a transformers error


# ------------------------------------------------------------------------------------------------
# FlowMo: a model built for 32x32 decoded the code of a 64x64 image at 32x32
@torch.no_grad()
def test_flowmo_decodes_an_encoder_output_at_the_encoded_size():
    model = tiny_flowmo_model(image_size=32)
    encoded = model.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert tuple(encoded.orig_height.tolist()) == tuple(encoded.orig_width.tolist()) == (64,)
    generator = torch.Generator().manual_seed(0)
    assert model.decode(encoded, generator=generator).sample.shape == (1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"encoded from 64x64 \(HxW\) images but the decode asks for 32x32"):
        model.decode(encoded, height=32, width=32)
    with pytest.raises(ValueError, match="asks for 32x32"):
        model.decode(encoded, noise=torch.randn(1, 3, 32, 32))
    # a bare latents tensor records no size: it decodes at config.image_size (documented), or at the one given
    assert model.decode(encoded.latents, generator=generator).sample.shape == (1, 3, 32, 32)
    assert model.decode(encoded.latents, height=64, width=64, generator=generator).sample.shape == (1, 3, 64, 64)


# ------------------------------------------------------------------------------------------------
# configs: were accepted (or a ZeroDivisionError / "negative dimension" when building the model)
@pytest.mark.parametrize(
    "config_class, fields, message",
    [
        (ViTokConfig, {"encoder_hidden_size": 0}, "encoder_hidden_size must be positive, got 0"),
        (ViTokConfig, {"decoder_hidden_size": -64}, "decoder_hidden_size must be positive, got -64"),
        (ViTokConfig, {"encoder_num_layers": 0}, "encoder_num_layers must be positive"),
        (ViTokConfig, {"decoder_num_layers": -1}, "decoder_num_layers must be positive"),
        (ViTokConfig, {"patch_size": 0}, "patch_size must be positive"),
        (ViTokConfig, {"patch_size": -16}, "patch_size must be positive"),
        (ViTokConfig, {"encoder_num_heads": 0}, "encoder_num_heads must be positive"),  # was ZeroDivisionError
        (ViTokConfig, {"mlp_ratio": -1}, "mlp_ratio must be positive"),  # was "negative dimension"
        (ViTokConfig, {"latent_channels": -1}, "latent_channels must be positive"),  # was "negative dimension"
        (ViTokConfig, {"mlp_ratio": 0.001}, "empty SwiGLU"),
        (ViTokConfig, {"scaling_factor": math.nan}, "scaling_factor must be a finite number"),
        (ViTokConfig, {"drop_path_rate": 1.5}, r"drop_path_rate must be in \[0, 1\)"),
        (SoftVQConfig, {"scaling_factor": math.nan}, "scaling_factor must be a finite number, got nan"),
        (SoftVQConfig, {"shift_factor": math.inf}, "shift_factor must be a finite number"),
        (SoftVQConfig, {"temperature": math.nan}, "temperature must be positive, got nan"),
        (SoftVQConfig, {"mlp_ratio": 0}, "mlp_ratio must be positive"),
        (MAETokConfig, {"mask_ratio_std": math.nan}, "mask_ratio_std must be positive"),
        (MAETokConfig, {"encoder_num_heads": 0}, "encoder_num_heads must be positive"),
        (FlowMoConfig, {"mlp_ratio": -1}, "mlp_ratio must be positive"),
        (FlowMoConfig, {"guidance_scale": math.nan}, "guidance_scale must be a finite number"),
        (FlowMoConfig, {"scaling_factor": 0}, "scaling_factor must be non-zero"),
        (V2FlowConfig, {"num_attention_heads": 0}, "num_attention_heads must be positive"),  # was ZeroDivisionError
        (V2FlowConfig, {"gumbel_temperature": math.nan}, "gumbel_temperature must be positive"),
        (V2FlowConfig, {"scaling_factor": math.inf}, "scaling_factor must be a finite number"),
        (V2FlowConfig, {"hidden_dropout": 1.0}, r"hidden_dropout must be in \[0, 1\)"),
    ],
)
def test_configs_refuse_impossible_sizes_and_non_finite_factors(config_class, fields, message):
    with pytest.raises(ValueError, match=message):
        config_class(**fields)
