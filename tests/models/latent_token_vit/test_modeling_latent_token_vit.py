"""What SoftVQ-VAE and MAETok share (the latent-token ViT) on tiny random configs: pipeline component, VAE
surface, input errors, other sizes, gradients, configs, the processor, the soft quantizer and the layers (each
family's tokenizer contract lives in its own folder)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from PIL import Image

from hf_vtok import LatentTokenImageProcessor, MAETokConfig, MAETokModel, SoftVQConfig, SoftVQModel
from hf_vtok.modules import Attention, LearnedMixedRope2D, LearnedPositionEmbedding, modulate
from hf_vtok.quantizers import SoftVectorQuantizer
from tests.testing_utils.tiny_models import TINY_LATENT_TOKEN_VIT, TINY_SOFTVQ_EXTRA, perturb_zero_inits

NO_MASKING = {"softvq": {}, "maetok": {"mask_ratio_min": 0.0}}  # training-mode runs without random masks
FAMILIES = {
    "softvq": lambda **kw: SoftVQModel(SoftVQConfig(**TINY_LATENT_TOKEN_VIT, **TINY_SOFTVQ_EXTRA, **kw)),
    "maetok": lambda **kw: MAETokModel(MAETokConfig(**TINY_LATENT_TOKEN_VIT, **kw)),
}


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return request.param


@pytest.fixture
def model(family):
    return perturb_zero_inits(FAMILIES[family](shift_factor=0.1, scaling_factor=2.0)).eval()


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


class _TokenizerPipeline(DiffusionPipeline):
    """The smallest pipeline holding a tokenizer and its processor (generators compose these)."""

    _optional_components = ["image_processor"]

    def __init__(self, tokenizer, image_processor=None):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, image_processor=image_processor)


def test_diffusers_pipeline_component(model, images, tmp_path):
    processor = LatentTokenImageProcessor.for_model(model.config)
    _TokenizerPipeline(model, processor).save_pretrained(tmp_path)
    reloaded = _TokenizerPipeline.from_pretrained(tmp_path)
    assert type(reloaded.tokenizer) is type(model) and isinstance(reloaded.image_processor, LatentTokenImageProcessor)
    with torch.no_grad():
        assert torch.equal(reloaded.tokenizer.eval()(images).sample, model(images).sample)


def test_diffusers_vae_surface(model, images):
    with torch.no_grad():
        encoded = model.encode(images, output_hidden_states=True)
        assert encoded.latent is encoded.latents
        decoded = model.decode(encoded.latent, output_hidden_states=True)
    assert decoded.sample.shape == images.shape
    assert len(encoded.hidden_states) == model.config.encoder_num_layers + 1
    assert len(decoded.hidden_states) == model.config.decoder_num_layers + 1
    normalized = model.normalize_latents(encoded.latents)
    config = model.config
    torch.testing.assert_close(normalized, (encoded.latents - config.shift_factor) * config.scaling_factor)
    torch.testing.assert_close(model.denormalize_latents(normalized), encoded.latents)
    assert config.latent_mean == config.shift_factor and config.latent_std == pytest.approx(1 / config.scaling_factor)


def test_bad_inputs(model, images):
    with pytest.raises(ValueError, match=r"24x24.*encodes 32x32"):
        model.encode(images[..., :24, :24])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.encode(images[:, :1])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.encode(images[0])
    with pytest.raises(ValueError, match="not a multiple of the encoder patch size"):
        model.encode(F.pad(images, (0, 4, 0, 4)))
    with pytest.raises(ValueError, match="floating point"):
        model.encode((images * 127).to(torch.uint8))
    with pytest.raises(ValueError, match=r"latents must be \[B, 8, 8\]"):
        model.decode(torch.zeros(2, 7, 8))
    with pytest.raises(ValueError, match="not image_tokens"):
        model.decode(torch.zeros(2, 8, 8), image_tokens=torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="multiples of the decoder patch size"):
        model.decode(torch.zeros(2, 8, 8), height=30, width=32)


def test_other_sizes_need_interpolation(family, model, images):
    larger = F.interpolate(images, size=(48, 48), mode="bilinear")
    with torch.no_grad():
        encoded = model.encode(larger, interpolate_pos_encoding=True)
        assert encoded.latents.shape == (2, 8, 8)
        if family == "softvq":  # absolute positions in the decoder: same rule as the encoder
            with pytest.raises(ValueError, match="absolute position embedding"):
                model.decode(encoded.latents, height=48, width=48)
            decoded = model.decode(encoded.latents, height=48, width=48, interpolate_pos_encoding=True)
        else:  # RoPE decoder: any grid, even non-square
            decoded = model.decode(encoded.latents, height=48, width=40)
    assert decoded.sample.shape[-2:] == ((48, 48) if family == "softvq" else (48, 40))


def test_gradients_reach_every_parameter(family, images):
    extra = {"entropy_loss_ratio": 0.01} if family == "softvq" else {}
    model = perturb_zero_inits(FAMILIES[family](**NO_MASKING[family], **extra)).train()
    output = model(images)
    loss = output.sample.square().mean() + (output.loss if output.loss is not None else 0)
    loss.backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing, missing
    if family == "softvq":
        assert set(output.losses) == {"entropy"}


def test_activation_checkpointing_same_gradients(family, images):
    model = perturb_zero_inits(FAMILIES[family](**NO_MASKING[family])).train()

    def gradients():
        model.zero_grad()
        model(images).sample.square().mean().backward()
        return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (SoftVQConfig, {"num_latent_tokens": 6, "num_codebooks": 4}, "multiple of num_codebooks"),
        (SoftVQConfig, {"temperature": 0.0}, "temperature must be positive"),
        (SoftVQConfig, {"encoder_num_heads": 5}, "not divisible by encoder_num_heads"),
        (SoftVQConfig, {"image_size": 30}, "not a multiple of encoder_patch_size"),
        (MAETokConfig, {"encoder_num_heads": 16}, "head dimension divisible by 4"),
        (MAETokConfig, {"decoder_layer_scale_init": 1e-5}, "no LayerScale"),
        (MAETokConfig, {"mask_ratio_min": 0.7}, "mask_ratio_min <= mask_ratio_max"),
        (MAETokConfig, {"auxiliary_targets": ("hog", "clip")}, "auxiliary_targets"),
        (MAETokConfig, {"scaling_factor": 0}, "scaling_factor must be non-zero"),
    ],
)
def test_config_validation(config_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config_class(**{**TINY_LATENT_TOKEN_VIT, **kwargs})


# --------------------------------------------------------------------------------------------------
# image processor
def test_processor_center_crop_and_roundtrip():
    processor = LatentTokenImageProcessor(size={"height": 32, "width": 32})
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 90, 3), dtype=np.uint8))
    batch = processor([wide, wide.convert("L")], return_tensors="pt")
    assert batch.pixel_values.shape == (2, 3, 32, 32)
    assert batch.pixel_values.min() >= -1 and batch.pixel_values.max() <= 1
    exact = Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    pixels = processor(exact, return_tensors="pt").pixel_values
    assert np.array_equal(np.asarray(processor.postprocess(pixels)[0]), np.asarray(exact))
    assert processor.postprocess(pixels, output_type="np")[0].shape == (32, 32, 3)


def test_processor_sizes_and_errors():
    assert LatentTokenImageProcessor.for_model(MAETokConfig(image_size=512)).size.height == 512
    image = Image.new("RGB", (48, 40))
    resized = LatentTokenImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False, do_resize=True)
    assert resized(image, return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)
    strict = LatentTokenImageProcessor(size={"height": 32, "width": 32}, do_center_crop=False)
    with pytest.raises(ValueError, match=r"48x40 \(WxH\) but the model takes 32x32"):
        strict(image)
    with pytest.raises(ValueError, match="square"):
        LatentTokenImageProcessor(size={"height": 32, "width": 16})(image)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        strict.postprocess(torch.zeros(2, 4, 8, 8))


# --------------------------------------------------------------------------------------------------
# soft quantizer
def test_soft_quantizer_segments_and_mixture():
    torch.manual_seed(0)
    quantizer = SoftVectorQuantizer(num_codebooks=2, codebook_size=5, dim=4, temperature=0.5)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.randn(2, 5, 4))
    latents = torch.randn(3, 6, 4)
    output = quantizer(latents)
    codebook = F.normalize(quantizer.codebook, dim=-1)
    for token in range(6):  # tokens 0-2 use codebook 0, tokens 3-5 codebook 1
        logits = F.normalize(latents[:, token], dim=-1) @ codebook[token // 3].t()
        probs = (logits / 0.5).softmax(-1)
        torch.testing.assert_close(output.logits[:, token], logits)
        torch.testing.assert_close(output.quantized[:, token], probs @ codebook[token // 3])
    torch.testing.assert_close(output.probs.sum(-1), torch.ones(3, 6))
    assert torch.equal(output.indices, output.probs.argmax(-1))
    assert output.entropy_loss is None  # eval mode, no regulariser


def test_soft_quantizer_limits_and_gradients():
    quantizer = SoftVectorQuantizer(1, 8, 4, temperature=1e-4, entropy_loss_ratio=0.1).train()
    with torch.no_grad():
        quantizer.codebook.copy_(quantizer.initial_codebook(torch.Generator().manual_seed(0)))
    latents = torch.randn(2, 4, 4, requires_grad=True)
    output = quantizer(latents)
    nearest = quantizer.normalized_codebook()[0][output.indices]
    torch.testing.assert_close(output.quantized, nearest, atol=1e-4, rtol=0)  # tiny tau: hard assignment
    (output.quantized.sum() + output.entropy_loss).backward()
    assert quantizer.codebook.grad is not None and latents.grad is not None
    with pytest.raises(ValueError, match="equal codebook segments"):
        SoftVectorQuantizer(3, 8, 4)(torch.randn(1, 4, 4))


# --------------------------------------------------------------------------------------------------
# shared layers added for these families
def test_position_embedding_grid_rules():
    embedding = LearnedPositionEmbedding((4, 4), 8, num_prefix_tokens=1)
    with torch.no_grad():
        embedding.weight.normal_()
    assert embedding.table((4, 4)) is embedding.weight
    with pytest.raises(ValueError, match="4x4 patch grid.*6x6"):
        embedding.table((6, 6))
    resampled = embedding.table((6, 3), interpolate=True)
    assert resampled.shape == (1, 1 + 18, 8) and torch.equal(resampled[:, :1], embedding.weight[:, :1])


def test_mixed_rope_leaves_extra_tokens_unrotated():
    rope = LearnedMixedRope2D(num_layers=2, num_heads=2, head_dim=8)
    with torch.no_grad():
        rope.frequencies.copy_(rope.initial_frequencies(torch.Generator().manual_seed(0)))
    tables = rope(3, 2, num_leading=1, num_trailing=2)
    assert len(tables) == 2
    cos, sin = tables[1]
    assert cos.shape == (1, 2, 1 + 6 + 2, 4)
    assert torch.equal(cos[:, :, [0, 7, 8]], torch.ones(1, 2, 3, 4)) and not sin[:, :, [0, 7, 8]].any()
    grid_cos, grid_sin = rope.grid_tables(3, 2)
    angles = 1 * rope.frequencies[0, 1] + 2 * rope.frequencies[1, 1]  # token 5: column 1, row 2
    torch.testing.assert_close(grid_cos[1, :, 5], angles.cos())
    torch.testing.assert_close(grid_sin[1, :, 5], angles.sin())


def test_attention_per_head_tables_and_modulate():
    attention = Attention(16, 2, qkv_bias=True, out_bias=True)
    tokens = torch.randn(2, 5, 16)
    identity = (torch.ones(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))
    torch.testing.assert_close(attention(tokens, identity), attention(tokens))
    x, shift, scale = torch.randn(3), torch.randn(3), torch.randn(3)
    torch.testing.assert_close(modulate(x, shift, scale), x * (1 + scale) + shift)
    torch.testing.assert_close(modulate(x, shift, scale, scale_offset=0.0), x * scale + shift)
