"""ViTokModel on tiny random configs: the tokenizer contract on image tensors, and the NaFlex patch path:
save/load, Auto classes, dtypes, compile, padding, errors."""

import pytest
import torch
from transformers import AutoImageProcessor, AutoModel

from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel
from hf_vtok.modules import LayerScale
from tests.testing_utils.tiny_models import TINY_VITOK_VARIANT, perturb_zero_inits
from tests.testing_utils.tokenizer_tester import TokenizerTesterMixin, seeded


class TestViTokTokenizer(TokenizerTesterMixin):
    """The contract on ``[B, 3, H, W]`` image tensors (latents: a ``[B, C, h, w]`` grid)."""

    model_class = ViTokModel

    def get_config(self):
        return ViTokConfig.from_variant(TINY_VITOK_VARIANT)

    def get_inputs(self, batch_size=2):
        return torch.rand(batch_size, 3, 16, 24, generator=seeded(1)) * 2 - 1

    def expected_latents_shape(self, batch_size):
        return (batch_size, 4, 2, 3)

    def get_processor(self):
        return ViTokImageProcessor(patch_size=8, max_num_patches=24)

    supports_tiling = True


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT)).eval()


@pytest.fixture
def processor():
    return ViTokImageProcessor(patch_size=8, max_num_patches=24)


def _images(*sizes):
    generator = torch.Generator().manual_seed(1)
    return [
        torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
        for width, height in sizes
    ]


@torch.no_grad()
def test_save_and_auto_load_are_bit_identical(model, processor, tmp_path):
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    }
    loaded, loaded_processor = AutoModel.from_pretrained(tmp_path).eval(), AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is ViTokModel and type(loaded_processor) is ViTokImageProcessor
    inputs = processor(_images((40, 24), (16, 32)), return_tensors="pt")
    assert all(
        torch.equal(inputs[key], value)
        for key, value in loaded_processor(_images((40, 24), (16, 32)), return_tensors="pt").items()
    )
    expected, actual = model(**inputs), loaded(**inputs)
    assert torch.equal(expected.latents, actual.latents) and torch.equal(expected.sample, actual.sample)


def test_custom_parameters_are_initialised(model):
    scales = [module for module in model.modules() if isinstance(module, LayerScale)]
    assert scales and all(torch.all(module.gamma == model.config.layer_scale_init) for module in scales)
    drop_rates = [
        layer.drop_path.drop_prob
        for layer in ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT, drop_path_rate=0.2)).decoder.layers
    ]
    assert drop_rates == pytest.approx([0.0, 0.2])


@torch.no_grad()
def test_image_tensor_path_equals_patch_sequence_path(model, processor):
    images = torch.rand(2, 3, 16, 24) * 2 - 1
    grid = model.encode(images)
    assert grid.latents.shape == (2, 4, 2, 3)
    decoded = model.decode(grid.latents).sample
    assert decoded.shape == images.shape
    as_floats = [((image + 1) / 2) for image in images]
    inputs = ViTokImageProcessor(patch_size=8, max_num_patches=6, do_rescale=False)(as_floats, return_tensors="pt")
    sequence = model.encode(**inputs)
    torch.testing.assert_close(sequence.latents, grid.latents.flatten(2).transpose(1, 2), atol=1e-6, rtol=0)
    canvas = processor.to_canvas(model.decode(sequence))
    torch.testing.assert_close(canvas, decoded, atol=1e-5, rtol=0)


@torch.no_grad()
def test_masked_padding_makes_images_independent_of_the_batch(processor):
    model = ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT, mask_padding=True, layer_scale_init=1.0)).eval()
    images = _images((40, 24), (16, 32))
    batch = processor(images, return_tensors="pt")
    alone = ViTokImageProcessor(patch_size=8, max_num_patches=15)(images[:1], return_tensors="pt")
    assert alone["patch_mask"].all()
    batched, single = model(**batch), model(**alone)
    torch.testing.assert_close(batched.latents[0, :15], single.latents[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.sample[0, :15], single.sample[0], atol=1e-5, rtol=0)
    # the released (unmasked) semantics do depend on the padding
    unmasked = model(**batch, mask_padding=False)
    assert (unmasked.latents[0, :15] - single.latents[0]).abs().max() > 1e-2


def test_bfloat16_runs(model, processor):
    inputs = processor(_images((40, 24)), return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs)
        result = model.to(torch.bfloat16)(**inputs)  # float32 inputs are cast to the model dtype
    assert result.latents.dtype == torch.bfloat16 and result.sample.dtype == torch.bfloat16
    valid = inputs["patch_mask"]
    error = (result.sample.float() - reference.sample)[valid].abs().max()
    assert torch.isfinite(result.sample).all() and error < 0.1 * reference.sample[valid].abs().max()


@pytest.mark.slow
def test_compile_fullgraph_encode_and_decode(model, processor):
    inputs = processor(_images((40, 24), (16, 32)), return_tensors="pt")
    with torch.no_grad():
        eager = model.encode(**inputs)
        compiled_encode = torch.compile(model.encode, fullgraph=True)
        compiled = compiled_encode(**inputs)
        torch.testing.assert_close(compiled.latents, eager.latents, atol=1e-5, rtol=1e-5)
        decoded = torch.compile(model.decode, fullgraph=True)(
            eager.latents, row_idx=inputs["row_idx"], col_idx=inputs["col_idx"]
        )
        torch.testing.assert_close(decoded.sample, model.decode(eager).sample, atol=1e-5, rtol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients(processor):
    config = ViTokConfig.from_variant(TINY_VITOK_VARIANT, drop_path_rate=0.0)
    inputs = processor(_images((40, 24)), return_tensors="pt")

    def gradients(checkpointing):
        torch.manual_seed(0)
        model = ViTokModel(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(**inputs).sample.square().mean().backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


@torch.no_grad()
def test_half_models_load_from_a_full_folder(model, processor, tmp_path):
    model.save_pretrained(tmp_path)
    encoder_only = ViTokModel.from_pretrained(tmp_path, has_decoder=False).eval()
    decoder_only = ViTokModel.from_pretrained(tmp_path, has_encoder=False).eval()
    assert encoder_only.decoder is None and decoder_only.encoder is None
    inputs = processor(_images((40, 24)), return_tensors="pt")
    encoded = encoder_only.encode(**inputs)
    assert torch.equal(encoded.latents, model.encode(**inputs).latents)
    assert torch.equal(decoder_only.decode(encoded).sample, model.decode(encoded).sample)
    with pytest.raises(ValueError, match="without its decoder"):
        encoder_only.decode(encoded)
    with pytest.raises(ValueError, match="without its encoder"):
        decoder_only.encode(**inputs)
    with pytest.raises(ValueError, match="use encode / decode"):
        encoder_only(**inputs)


def test_bad_inputs_are_named(model):
    with pytest.raises(ValueError, match=r"192 channels per token .* expected 192|has 100 channels per token"):
        model.encode(
            torch.zeros(1, 4, 100),
            row_idx=torch.zeros(1, 4, dtype=torch.long),
            col_idx=torch.zeros(1, 4, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="row_idx has shape"):
        model.encode(
            torch.zeros(1, 4, 192),
            row_idx=torch.zeros(1, 5, dtype=torch.long),
            col_idx=torch.zeros(1, 5, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="positions can only be inferred for a square grid"):
        model.encode(torch.zeros(1, 6, 192))
    with pytest.raises(ValueError, match="row_idx and col_idx must be given together"):
        model.encode(torch.zeros(1, 4, 192), row_idx=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model.encode(torch.zeros(1, 3, 12, 16))
    with pytest.raises(ValueError, match=r"expected \[B, 3, H, W\]"):
        model.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="must be a patch sequence"):
        model.encode(torch.zeros(192))
    with pytest.raises(ValueError, match="not image_tokens"):
        model.decode(image_tokens=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="decode needs latents"):
        model.decode()
    with pytest.raises(ValueError, match=r"have 5 channels, expected \[B, 4, h, w\]"):
        model.decode(torch.zeros(1, 5, 2, 2))


# --------------------------------------------------------------------------------------------------
# tiled decoding (enable_tiling): a 256x256-pixel image is a 32x32 grid of tokens
@pytest.fixture(scope="module")
def tiling_model():
    torch.manual_seed(0)
    return perturb_zero_inits(ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT))).eval()


def _decode_tiled(model, latents, tile_size, tile_overlap, **kwargs):
    model.enable_tiling(tile_size=tile_size, tile_overlap=tile_overlap)
    try:
        return model.decode(latents, **kwargs).sample
    finally:
        model.disable_tiling()


@torch.no_grad()
def test_tiled_decode_is_close_to_the_whole_decode_with_bounded_tiles(tiling_model):
    latents = torch.randn(2, 4, 32, 32, generator=seeded(2))
    whole = tiling_model.decode(latents).sample
    tokens_per_call = []
    hook = tiling_model.decoder.register_forward_pre_hook(lambda module, args: tokens_per_call.append(args[0].shape))
    try:
        tiled = _decode_tiled(tiling_model, latents, 16, 4)
    finally:
        hook.remove()
    assert tiled.shape == whole.shape == (2, 3, 256, 256)
    # 3 x 3 tiles (starts 0, 12, 16) per image, each one image's 16 x 16 tokens at most
    assert len(tokens_per_call) == 2 * 9 and all(shape[:2] == (1, 16 * 16) for shape in tokens_per_call)
    # the seam error of this random model (its decoder attends globally), measured 0.0134 and 0.0019
    difference = (tiled - whole).abs() / whole.abs().max()
    assert difference.max() < 0.02 and difference.mean() < 0.003, (difference.max(), difference.mean())
    # a tile seeing more of the image errs less
    larger = (_decode_tiled(tiling_model, latents, 24, 8) - whole).abs().mean()
    smaller = (_decode_tiled(tiling_model, latents, 12, 4) - whole).abs().mean()
    assert larger < (tiled - whole).abs().mean() < smaller


@torch.no_grad()
def test_tiled_decode_of_an_image_within_one_tile_is_the_whole_decode(tiling_model):
    latents = torch.randn(1, 4, 12, 16, generator=seeded(3))
    assert torch.equal(_decode_tiled(tiling_model, latents, 16, 4), tiling_model.decode(latents).sample)


@torch.no_grad()
def test_tiled_decode_of_naflex_sequences_keeps_the_layout(tiling_model):
    processor = ViTokImageProcessor(patch_size=8, max_num_patches=32 * 32, padding="longest")
    inputs = processor(_images((256, 160), (96, 64)), return_tensors="pt")
    encoded = tiling_model.encode(**inputs, mask_padding=True)
    whole = tiling_model.decode(encoded, mask_padding=True)
    tiled = _decode_tiled(tiling_model, encoded, 16, 4)
    valid = inputs["patch_mask"]
    assert torch.equal(tiled[~valid], torch.zeros_like(tiled[~valid]))  # padding tokens decode to zeros
    difference = (tiled - whole.sample)[valid].abs() / whole.sample[valid].abs().max()
    assert difference.max() < 0.03  # measured 0.0215
    # the second image (12 x 8 tokens) fits in a tile: its tokens are decoded as a whole
    assert torch.equal(tiled[1][valid[1]], tiling_model.decode(encoded.latents[1:, : int(valid[1].sum())],
                       row_idx=encoded.row_idx[1:, : int(valid[1].sum())],
                       col_idx=encoded.col_idx[1:, : int(valid[1].sum())]).sample[0])  # fmt: skip
    images = processor.postprocess(whole.__class__(**{**whole, "sample": tiled}), output_type="pt")
    assert [tuple(image.shape) for image in images] == [(3, 160, 256), (3, 64, 96)]


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"tile_size": 0}, "tile_size"), ({"tile_size": 8, "tile_overlap": 8}, "tile_overlap"),
     ({"tile_overlap": -1}, "tile_overlap")],
)  # fmt: skip
def test_enable_tiling_rejects_bad_settings(tiling_model, settings, message):
    with pytest.raises(ValueError, match=message):
        tiling_model.enable_tiling(**settings)
    assert not tiling_model.use_tiling


@torch.no_grad()
def test_tiled_decode_has_no_hidden_states(tiling_model):
    latents = torch.randn(1, 4, 32, 32, generator=seeded(2))
    with pytest.raises(ValueError, match="disable_tiling"):
        _decode_tiled(tiling_model, latents, 16, 4, output_hidden_states=True)
