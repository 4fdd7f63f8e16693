"""FlowMo on tiny random models: the tokenizer contract and FlowMo's own config, token layout, sampler, training
and processor (the parity tests live in test_flowmo_parity.py)."""

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from hf_vtok import FlowMoConfig, FlowMoImageProcessor, FlowMoModel
from hf_vtok.models.flowmo.sampling_flowmo import flowmo_time_grid, guidance_interval_in_flow_time
from tests.testing_utils.tiny_models import TINY_FLOWMO, tiny_flowmo_model
from tests.testing_utils.tokenizer_tester import TokenizerTesterMixin


class TestFlowMoTokenizer(TokenizerTesterMixin):
    """LFQ token ids; the rectified-flow decoder draws its start noise (and decodes in float32)."""

    model_class = FlowMoModel
    discrete = True
    stochastic_decoder = True
    bf16_sample_dtype = torch.float32

    def get_config(self):
        return FlowMoConfig(**TINY_FLOWMO)

    def get_model(self):
        return tiny_flowmo_model()

    def get_inputs(self, batch_size=2):
        return _images(batch_size)

    def expected_latents_shape(self, batch_size):
        return (batch_size, 4, 6)

    def expected_image_tokens_shape(self, batch_size):
        return (batch_size, 8)

    def get_processor(self):
        return FlowMoImageProcessor(image_size=16)

    decoder_hidden_states_in_forward = False  # the decoder runs once per sampler step


@pytest.fixture(scope="module")
def model():
    return tiny_flowmo_model()


def _images(batch=2, size=16):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(5)) * 2 - 1


# ------------------------------------------------------------------------------------------------
# config
def test_presets_match_the_released_sizes():
    lo, hi, small = (FlowMoConfig.from_preset(name) for name in ("flowmo-lo", "flowmo-hi", "flowmo-p8"))
    assert (lo.stack_hidden_size("encoder"), lo.stack_hidden_size("decoder")) == (768, 1152)
    assert lo.stack_axes_dim("decoder") == (12, 42, 42) and lo.stack_axes_dim("encoder") == (8, 28, 28)
    assert (lo.tokens_per_image, lo.codebook_size) == (512, 512)
    assert (hi.context_dim, hi.tokens_per_image, hi.codebook_size) == (56, 1024, 16384)
    assert (small.patch_size, small.stack_hidden_size("decoder"), small.pixels_per_token) == (8, 768, 192)
    with init_empty_weights():
        decoder_params = sum(p.numel() for p in FlowMoModel(lo).decoder.parameters())
        small_decoder_params = sum(p.numel() for p in FlowMoModel(small).decoder.parameters())
    assert round(decoder_params / 1e5) == 7721 and round(small_decoder_params / 1e5) == 3436  # spec: 772.1M / 343.6M


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"quantization_type": "vq"}, "supported: lfq, kl, noop"),
        ({"context_dim": 7}, "multiple of it"),
        ({"sampling_schedule": "cosine"}, "unknown sampling schedule"),
        ({"mup_width": 3}, "RoPE axes"),
        ({"image_size": 18}, "not a multiple of patch_size"),
        ({"guidance_interval": (1.0, 0.5)}, "lo <= hi"),
        ({"timestep_sampling": "debug_0.5"}, "supported: fat_lognormal"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        FlowMoConfig(**{**TINY_FLOWMO, **overrides})


# ------------------------------------------------------------------------------------------------
# encode / tokens
@torch.no_grad()
def test_token_layout_is_strided_lsb_first(model):
    """Token t*fh + h takes channels j*fh + h of code position t as bit j (FlowMo's LFQ rearrange)."""
    encoded = model.encode(_images())
    code, tokens = encoded.latents, encoded.image_tokens
    bits, per_position = model.config.bits_per_token, model.config.context_dim // model.config.bits_per_token
    assert tokens.shape == (2, model.config.code_length * per_position)
    for t in range(model.config.code_length):
        for h in range(per_position):
            expected = sum(int(code[0, t, j * per_position + h] > 0) << j for j in range(bits))
            assert tokens[0, t * per_position + h].item() == expected
    assert torch.equal(model.tokens_to_latents(tokens), code)
    assert torch.equal(model.latents_to_tokens(code), tokens)
    assert torch.equal(encoded.quantizer_loss, torch.zeros(()))  # eval mode: no LFQ losses, as the original


def test_fresh_model_blocks_start_as_identity(tmp_path):
    model = FlowMoModel(FlowMoConfig(**TINY_FLOWMO))
    hidden = model.config.stack_hidden_size("decoder")
    for block in model.decoder.blocks:
        weight = block.image_modulation.linear.weight
        bias = block.image_modulation.linear.bias
        for rows in (slice(2 * hidden, 3 * hidden), slice(5 * hidden, 6 * hidden)):  # the two gates
            assert weight[rows].abs().sum() == 0 and bias[rows].abs().sum() == 0
        assert weight[:hidden].abs().sum() > 0
    # loading keeps loaded gate values: from_pretrained must not re-zero them
    with torch.no_grad():
        model.decoder.blocks[0].image_modulation.linear.weight.fill_(0.5)
    model.save_pretrained(tmp_path)
    loaded = FlowMoModel.from_pretrained(tmp_path)
    assert torch.all(loaded.decoder.blocks[0].image_modulation.linear.weight == 0.5)


# ------------------------------------------------------------------------------------------------
# sampler
def test_time_grid_and_guidance_interval():
    times, steps = flowmo_time_grid(25, "pow_0.25")
    assert times[0] == 1 and torch.allclose(times[1], torch.tensor(0.8493), atol=1e-4)
    torch.testing.assert_close(steps.sum(), torch.tensor(1.0))
    low, high = guidance_interval_in_flow_time((0.17, 1.02))
    guided = [index for index, t in enumerate(times.tolist()) if low <= t <= high]
    assert guided == list(range(4, 10))  # spec: CFG on steps 4-9 of 25, 31 decoder calls
    linear, linear_steps = flowmo_time_grid(3, "linear")
    torch.testing.assert_close(linear, torch.tensor([1.0, 2 / 3, 1 / 3]))
    assert torch.all(linear_steps == 1 / 3)


@torch.no_grad()
def test_decode_is_seeded_and_clipped(model):
    latents = model.encode(_images()).latents
    first = model.decode(latents, generator=torch.Generator().manual_seed(0), output_trajectory=True)
    second = model.decode(latents, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.sample, second.sample)
    assert first.trajectory.shape == (3, 2, 3, 16, 16) and first.sample.abs().max() <= 1
    torch.testing.assert_close(first.sample, first.trajectory[-1].clip(-1, 1))
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.decode(latents, noise=noise).sample, first.sample)


@torch.no_grad()
def test_guidance_only_inside_interval(model):
    latents = model.encode(_images()).latents
    noise = torch.randn(2, 3, 16, 16)
    grid = [1.0, 0.4, 0.05, 0.0]  # only t = 0.4 lies in [0.145, 0.505]
    guided = model.decode(latents, noise=noise, timesteps=grid, guidance_scale=3.0)
    assert guided.guidance_steps.tolist() == [False, True, False]
    plain = model.decode(latents, noise=noise, timesteps=grid, guidance_scale=1.0)
    everywhere = model.decode(latents, noise=noise, timesteps=grid, guidance_scale=3.0, guidance_interval=None)
    assert not plain.guidance_steps.any() and everywhere.guidance_steps.all()
    assert not torch.equal(guided.sample, plain.sample) and not torch.equal(guided.sample, everywhere.sample)
    # by hand: conditional velocity outside the interval, the guided one inside
    code = model.conditioning(latents)
    state = noise
    for index, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        velocity = model.velocity(state, t, conditioning=code).sample
        if index == 1:
            null = model.velocity(state, t, conditioning=code * 0).sample
            velocity = null + 3.0 * (velocity - null)
        state = state - (torch.tensor(t) - torch.tensor(t_next)) * velocity
    torch.testing.assert_close(guided.sample, state.clip(-1, 1), atol=1e-5, rtol=0)


@torch.no_grad()
def test_per_sample_grids_equal_separate_runs(model):
    latents = model.encode(_images()).latents
    noise = torch.randn(2, 3, 16, 16)
    grids = torch.tensor([[1.0, 0.6, 0.2, 0.0], [1.0, 0.3, 0.1, 0.0]])
    joint = model.decode(latents, noise=noise, timesteps=grids)
    for index in range(2):
        alone = model.decode(latents[index : index + 1], noise=noise[index : index + 1], timesteps=grids[index])
        torch.testing.assert_close(joint.sample[index : index + 1], alone.sample, atol=1e-5, rtol=0)


@torch.no_grad()
def test_matches_diffusers_flow_match_euler(model):
    """The sampler is FlowMatchEulerDiscreteScheduler with sigmas = the time grid and model t = sigma."""
    latents = model.encode(_images()).latents
    noise = torch.randn(2, 3, 16, 16)
    times, _ = flowmo_time_grid(4, "pow_0.25")
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(sigmas=times.tolist())
    state = noise
    for index, timestep in enumerate(scheduler.timesteps):
        velocity = model.velocity(state, scheduler.sigmas[index], latents=latents).sample
        state = scheduler.step(velocity, timestep, state).prev_sample
    ours = model.decode(latents, noise=noise, num_inference_steps=4, guidance_scale=1.0)
    torch.testing.assert_close(ours.sample, state.clip(-1, 1), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------
# training
def test_training_losses_are_differentiable():
    model = tiny_flowmo_model().train()
    output = model(_images(), return_loss=True, generator=torch.Generator().manual_seed(0))
    assert set(output.losses) == {
        "diffusion_loss",
        "quantizer_loss",
        "per_sample_entropy",
        "codebook_entropy",
        "entropy_loss",
        "commitment_loss",
    }
    torch.testing.assert_close(output.loss, output.losses["diffusion_loss"] + output.losses["quantizer_loss"])
    output.loss.backward()
    assert model.encoder.image_embed.weight.grad.abs().sum() > 0
    assert model.decoder.blocks[0].image_attention.qkv_proj.weight.grad.abs().sum() > 0
    torch.testing.assert_close(
        output.sample,
        (1 - output.timesteps.view(-1, 1, 1, 1)) * _images()
        + output.timesteps.view(-1, 1, 1, 1) * (output.noise - output.velocity),
    )


def test_activation_checkpointing_gives_the_same_gradients():
    images = _images()
    grads = []
    for checkpointing in (False, True):
        model = tiny_flowmo_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        kwargs = dict(timesteps=torch.tensor([0.3, 0.7]), noise=torch.ones_like(images), condition_dropout=False)
        model(images, return_loss=True, **kwargs).loss.backward()
        grads.append(model.decoder.blocks[0].code_mlp.fc1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_sampler_chain_is_differentiable():
    model = tiny_flowmo_model()
    latents = model.encode(_images()).latents.detach().requires_grad_(True)
    sample = model.decode(
        latents, noise=torch.randn(2, 3, 16, 16), timesteps=[1.0, 0.5, 0.0], guidance_scale=1.0
    ).sample
    sample.sum().backward()
    assert latents.grad.abs().sum() > 0 and model.decoder.image_head.linear.weight.grad is not None


def test_code_dropout_and_timestep_sampling():
    model = tiny_flowmo_model(cfg_dropout_prob=0.5).train()
    times = model.sample_timesteps(1000, torch.Generator().manual_seed(0), "cpu")
    assert times.min() >= 0 and times.max() <= 1 and 0.45 < times.mean() < 0.55
    images = _images(8, 16)
    with torch.no_grad():
        runs = [
            model(images, return_loss=True, generator=torch.Generator().manual_seed(0), condition_dropout=drop)
            for drop in (True, False, True)
        ]
        assert torch.equal(runs[0].loss, runs[2].loss)  # seeded
        assert torch.equal(runs[0].timesteps, runs[1].timesteps) and torch.equal(runs[0].noise, runs[1].noise)
        dropped = (runs[0].velocity != runs[1].velocity).flatten(1).any(1)
        assert 0 < int(dropped.sum()) < 8
        noisy = (1 - runs[0].timesteps.view(-1, 1, 1, 1)) * images + runs[0].timesteps.view(-1, 1, 1, 1) * runs[
            0
        ].noise
        null = model.velocity(noisy, runs[0].timesteps, conditioning=torch.zeros(8, 4, 7)).sample
        torch.testing.assert_close(runs[0].velocity[dropped], null[dropped])


@pytest.mark.parametrize("quantization_type", ["kl", "noop"])
def test_continuous_variants(quantization_type):
    model = tiny_flowmo_model(quantization_type=quantization_type)
    with torch.no_grad():
        encoded = model.encode(_images(), generator=torch.Generator().manual_seed(0))
        assert encoded.image_tokens is None and encoded.latents.shape == (2, 4, 6)
        if quantization_type == "kl":
            assert encoded.prequant_latents.shape == (2, 4, 12)
            mean = model.encode(_images(), sample_posterior=False).latents
            torch.testing.assert_close(mean, encoded.prequant_latents[..., :6])
            assert not torch.equal(mean, encoded.latents) and encoded.quantizer_loss > 0
        else:
            assert torch.equal(encoded.latents, encoded.prequant_latents)
        assert model.decode(encoded, num_inference_steps=2).sample.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="only for quantization_type='lfq'"):
        model.decode(image_tokens=torch.zeros(2, 8, dtype=torch.long))
    output = model.train()(_images(), return_loss=True)
    assert ("kl_loss" in output.losses) == (quantization_type == "kl")


def test_bf16_runs():
    model = tiny_flowmo_model().to(torch.bfloat16)
    with torch.no_grad():
        encoded = model.encode(_images())
        reference = tiny_flowmo_model().encode(_images())
        assert encoded.latents.dtype == torch.bfloat16
        assert (encoded.image_tokens == reference.image_tokens).float().mean() > 0.8
        decoded = model.decode(encoded, generator=torch.Generator().manual_seed(0))
    assert decoded.sample.dtype == torch.float32 and torch.isfinite(decoded.sample).all()
    output = model.train()(_images(), return_loss=True)
    assert torch.isfinite(output.loss)


# ------------------------------------------------------------------------------------------------
# bad input
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.encode(torch.rand(2, 1, 16, 16)), r"image batch \[B, 3, H, W\]"),
        (lambda m: m.encode(torch.rand(2, 3, 18, 16)), "not a multiple of the patch size 4"),
        (lambda m: m.decode(torch.rand(2, 5, 6)), r"latents must be \[B, 4, 6\]"),
        (lambda m: m.decode(image_tokens=torch.zeros(2, 7, dtype=torch.long)), r"image_tokens must be \[B, 8\]"),
        (lambda m: m.decode(image_tokens=torch.full((2, 8), 8)), r"ids must lie in \[0, 8\)"),
        (lambda m: m.decode(), "exactly one of latents or image_tokens"),
        (lambda m: m.decode(torch.rand(2, 4, 6), noise=torch.rand(3, 3, 16, 16)), "noise must be"),
        (lambda m: m.decode(torch.rand(2, 4, 6), timesteps=torch.rand(3, 4)), "per sample"),
        (lambda m: m.velocity(torch.rand(2, 3, 16, 16), 0.5, conditioning=torch.rand(2, 4, 6)), "code plus mask"),
        (
            lambda m: m.velocity(torch.rand(2, 3, 16, 16), torch.rand(3), latents=torch.rand(2, 4, 6)),
            "timesteps must be",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


# ------------------------------------------------------------------------------------------------
# image processor
def test_processor_resizes_and_center_crops():
    processor = FlowMoImageProcessor(image_size=16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (21, 40, 3), dtype=np.uint8))
    pixel_values = processor(image, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 16, 16) and pixel_values.dtype == torch.float32
    # torchvision Resize(16): short side 16, long side int(16 * 40 / 21) = 30; CenterCrop top/left = round(0), round(7)
    resized = np.asarray(image.resize((30, 16), Image.BILINEAR)).astype(np.float64)
    expected = (resized[:, 7:23] / 127.5 - 1.0).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(pixel_values[0].numpy(), expected)
    back = processor.postprocess(pixel_values, output_type="np")[0]
    np.testing.assert_allclose(back * 255, resized[:, 7:23], atol=1e-3)


def test_processor_rejects_wrong_size_without_resize():
    processor = FlowMoImageProcessor(image_size=16, do_resize=False, do_center_crop=False)
    with pytest.raises(ValueError, match="is 20x16 .* takes 16x16"):
        processor(Image.new("RGB", (16, 20)), return_tensors="pt")
    assert processor(Image.new("RGB", (16, 16)), return_tensors="pt").pixel_values.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="smaller than the 16x16 crop"):
        FlowMoImageProcessor(image_size=16, do_resize=False)(Image.new("RGB", (12, 20)), return_tensors="pt")


def test_processor_round_trip_through_model(model, tmp_path):
    processor = FlowMoImageProcessor(image_size=16)
    processor.save_pretrained(tmp_path)
    reloaded = FlowMoImageProcessor.from_pretrained(tmp_path)
    image = Image.new("RGB", (24, 16), (255, 0, 128))
    pixel_values = reloaded([image, image], return_tensors="pt").pixel_values
    with torch.no_grad():
        decoded = model.decode(model.encode(pixel_values), generator=torch.Generator().manual_seed(0))
    images = reloaded.postprocess(decoded)
    assert len(images) == 2 and images[0].size == (16, 16)


# ------------------------------------------------------------------------------------------------
# model card


def test_model_card_template_renders():
    from huggingface_hub import ModelCard, ModelCardData

    from hf_vtok.hub import template_path

    data = ModelCardData(library_name="hf_vtok", license="mit", tags=["image-tokenizer", "flowmo"])
    config = FlowMoConfig.from_preset("flowmo-hi")
    card = ModelCard.from_template(
        data,
        template_path=str(template_path("flowmo")),
        model_name="FlowMo-Hi",
        variant="flowmo-hi",
        tokens_per_image=config.tokens_per_image,
        bits_per_token=config.bits_per_token,
        original_repo="ksarge/FlowMo",
    )
    assert "# FlowMo-Hi" in card.content and "1024 token ids (14 bits each)" in card.content
    assert card.data.library_name == "hf_vtok"


# ------------------------------------------------------------------------------------------------
# converter pieces that need no checkpoint
def test_original_key_names_and_dropped_encoder_parts():
    from hf_vtok.models.flowmo.convert_flowmo_original_to_hf import convert_flowmo_state_dict

    names = {
        "decoder.time_in.in_layer.weight": "decoder.time_embedding.linear_1.weight",
        "decoder.img_in.bias": "decoder.image_embed.bias",
        "encoder.txt_in.weight": "encoder.code_embed.weight",
        "decoder.double_blocks.3.img_mod.lin.weight": "decoder.blocks.3.image_modulation.linear.weight",
        "decoder.double_blocks.0.txt_attn.qkv.bias": "decoder.blocks.0.code_attention.qkv_proj.bias",
        "decoder.double_blocks.0.txt_attn.proj.weight": "decoder.blocks.0.code_attention.out_proj.weight",
        "encoder.double_blocks.1.img_attn.norm.query_norm.scale": "encoder.blocks.1.image_attention.q_norm.weight",
        "encoder.double_blocks.1.txt_attn.norm.key_norm.scale": "encoder.blocks.1.code_attention.k_norm.weight",
        "decoder.double_blocks.2.img_mlp.2.weight": "decoder.blocks.2.image_mlp.fc2.weight",
        "decoder.final_layer_img.adaLN_modulation.1.bias": "decoder.image_head.modulation.linear.bias",
        "decoder.final_layer_txt.linear.weight": "decoder.code_head.linear.weight",
        "encoder.final_layer_txt.linear.bias": "encoder.code_head.linear.bias",
    }
    dropped = [
        "encoder.time_in.out_layer.bias",
        "encoder.double_blocks.0.img_mod.lin.weight",
        "encoder.double_blocks.4.txt_mod.lin.bias",
        "encoder.final_layer_img.linear.weight",
        "encoder.final_layer_txt.adaLN_modulation.1.weight",
    ]
    original = {"_orig_mod." + key: torch.zeros(1) for key in [*names, *dropped]}
    assert sorted(convert_flowmo_state_dict(original)) == sorted(names.values())


def test_original_config_mapping():
    from hf_vtok.models.flowmo.convert_flowmo_original_to_hf import apply_overrides, config_from_original

    original = apply_overrides(
        {"model": {"enable_cfg": False}},
        [
            "data.image_size=128",
            "model.context_dim=56",
            "model.codebook_size_for_entropy=14",
            "model.enc_mup_width=null",
            "eval.sampling.cfg_interval=null",
            "eval.sampling.schedule=linear",
            "opt.schedule=uniform",
        ],
    )
    config = config_from_original(original)
    assert (config.image_size, config.context_dim, config.bits_per_token, config.enc_mup_width) == (128, 56, 14, None)
    assert config.guidance_interval is None and config.sampling_schedule == "linear"
    assert config.cfg_dropout_prob == 0.0 and config.timestep_sampling == "uniform"
    assert config.stack_hidden_size("encoder") == config.stack_hidden_size("decoder") == 1152
    default = config_from_original({"eval": {"sampling": {"cfg_interval": "(.17,1.02)"}}})
    assert default.guidance_interval == (0.17, 1.02) and default == FlowMoConfig()
    with pytest.raises(ValueError, match="unknown width-table entries"):
        config_from_original({}, {"hidden": 64})
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["model.context_dim"])


def test_a_width_mismatch_is_summarised_and_names_the_width_table(tmp_path):
    from hf_vtok.conversion import CheckpointMismatchError
    from hf_vtok.models.flowmo.convert_flowmo_original_to_hf import convert_flowmo_checkpoint
    from hf_vtok.utils.errors import MAX_MESSAGE, error_line

    torch.save(tiny_flowmo_model().state_dict(), tmp_path / "narrow.pth")  # stacks of 32 (multipliers 2)
    wider = FlowMoConfig(**{**TINY_FLOWMO, "mup_width": 4, "enc_mup_width": 4})  # the default table: 64
    with pytest.raises(CheckpointMismatchError) as error:
        convert_flowmo_checkpoint(tmp_path / "narrow.pth", config=wider, state_dict_key="")
    message = error_line(error.value)  # as `hf-vtok convert` prints it: one line
    assert len(message) < MAX_MESSAGE and "--debug shows all" not in message
    assert "its stacks are 32 (encoder) and 32 (decoder) wide, the config's 64 and 64" in message
    assert "--width-table" in message and "hidden_size: 32 fits both stacks" in message
    shown = message.count(": checkpoint (")
    assert 0 < shown <= 5 and f"shape mismatches ({len(error.value.mismatched)})" in message
    assert f"and {len(error.value.mismatched) - shown} more of" in message
    assert all(": checkpoint (" in line for line in error.value.mismatched)  # every key, for callers


def test_cli_preset_download_fails_clearly_offline(tmp_path):
    from hf_vtok.cli import main

    with pytest.raises(RuntimeError, match="could not fetch flowmo_lo.pth"):
        main(["convert", "flowmo", "--preset", "flowmo-lo", "--output", str(tmp_path)])
    with pytest.raises(ValueError, match="no released checkpoint"):
        main(["convert", "flowmo", "--preset", "flowmo-p8", "--output", str(tmp_path)])


# ------------------------------------------------------------------------------------------------
# the transformers / diffusers surface
@torch.no_grad()
def test_latent_dist_is_the_posterior_in_the_latents_layout():
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

    model = tiny_flowmo_model(quantization_type="kl")
    images = _images()
    encoded = model.encode(images, generator=torch.Generator().manual_seed(3))
    posterior = encoded.latent_dist
    assert posterior.mean.shape == posterior.std.shape == encoded.latents.shape == (2, 4, 6)
    # the same noise as encode's own posterior sample, and the mean as its mode
    assert torch.equal(posterior.sample(torch.Generator().manual_seed(3)), encoded.latents)
    assert torch.equal(posterior.mode(), model.encode(images, sample_posterior=False).latents)
    assert torch.equal(retrieve_latents(encoded, sample_mode="argmax"), posterior.mode())
    assert posterior.kl().shape == (2,) and torch.equal(posterior.kl().mean(), encoded.quantizer_losses["kl_loss"])
    decoded = model.decode(retrieve_latents(encoded, generator=torch.Generator().manual_seed(3)), noise=_images())
    assert decoded.sample.shape == images.shape


@torch.no_grad()
def test_lfq_latent_dist_is_a_point_mass(model):
    encoded = model.encode(_images())
    assert torch.equal(encoded.latent_dist.sample(torch.Generator().manual_seed(0)), encoded.latents)
    assert torch.equal(encoded.latent_dist.mode(), encoded.latents)
    assert encoded.latent_dist == model.encode(_images()).latent_dist


def test_parameters_without_gradient_are_those_no_loss_reaches(tmp_path):
    model = tiny_flowmo_model().train()
    declared = model.parameters_without_gradient()
    assert {name for name, parameter in model.named_parameters() if not parameter.requires_grad} == set(declared)
    model.requires_grad_(True)
    model(_images(), generator=torch.Generator().manual_seed(0)).loss.backward()  # training mode: the loss
    assert {name for name, parameter in model.named_parameters() if parameter.grad is None} == set(declared)
    model.save_pretrained(tmp_path)
    loaded = FlowMoModel.from_pretrained(tmp_path)
    assert {name for name, parameter in loaded.named_parameters() if not parameter.requires_grad} == set(declared)


@torch.no_grad()
def test_forward_computes_the_loss_in_training_mode_only(model):
    assert model(_images(), noise=_images()).loss is None
    model.train()
    try:
        assert model(_images(), generator=torch.Generator().manual_seed(0)).loss is not None
    finally:
        model.eval()
