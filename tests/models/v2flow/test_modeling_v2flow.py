"""V²Flow on tiny random configs: the tokenizer contract, save/load, the tokenizer and detokenizer API, bad inputs,
the quantizer, the training objective, the converter and the caching tools (no download, no fixtures; the DC-AE
pipeline lives in tests/pipelines/v2flow)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import init_empty_weights
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModel

from hf_vtok import V2FLOW_PRESETS, V2FlowConfig, V2FlowImageProcessor, V2FlowModel
from hf_vtok.cli import main
from hf_vtok.data import cache_latents, load_latent_cache
from hf_vtok.models.v2flow.llm_vocabulary import extract_llm_vocabulary, load_llm_vocabulary
from hf_vtok.quantizers import CosineEMAVectorQuantizer, rotate_to
from tests.testing_utils.tiny_models import TINY_V2FLOW, tiny_dcae, tiny_v2flow_model
from tests.testing_utils.tokenizer_tester import TokenizerTesterMixin

pytestmark = pytest.mark.usefixtures("one_thread")


class TestV2FlowTokenizer(TokenizerTesterMixin):
    """DC-AE ``latents`` in, code ids out (Gumbel resampling: seeded); the masked-AR flow decoder draws noise. The
    quantizer stays in float32 (``_keep_in_fp32_modules``), so a bfloat16 model's code vectors are float32."""

    model_class = V2FlowModel
    input_name = "latents"
    discrete = True
    stochastic_decoder = True
    bf16_latents_dtype = torch.float32
    bf16_sample_dtype = torch.float32

    def get_config(self):
        return V2FlowConfig(**TINY_V2FLOW)

    def get_model(self):
        torch.manual_seed(0)
        return tiny_v2flow_model()

    def get_inputs(self, batch_size=2):
        return torch.randn(batch_size, 4, 4, 4, generator=seeded(0))

    def expected_latents_shape(self, batch_size):
        return (batch_size, 16, TINY_V2FLOW["llm_embed_dim"])

    def expected_image_tokens_shape(self, batch_size):
        return (batch_size, 16)

    def encode_kwargs(self):
        return {"generator": seeded(3)}

    def compile_kwargs(self):
        return {
            "gumbel_noise": -torch.empty(2, 16, TINY_V2FLOW["llm_vocab_size"]).exponential_(generator=seeded(3)).log()
        }

    decoder_hidden_states_in_forward = False  # the MAR transformer runs once per masked-AR step

    def get_image_processor(self):
        return V2FlowImageProcessor(crop_size={"height": 16, "width": 16})  # the DC-AE's

    def test_processor_keeps_the_channels_without_convert_rgb(self):
        """The DC-AE's processor (the tokenizer itself takes latents)."""
        processor = V2FlowImageProcessor(crop_size={"height": 16, "width": 16})
        rgba = np.random.RandomState(0).randint(0, 256, (20, 24, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        kept = processor(rgba, do_convert_rgb=False, image_mean=[0.5] * 4, image_std=[0.5] * 4, return_tensors="pt")
        assert kept["pixel_values"].shape == (1, 4, 16, 16)
        assert torch.equal(kept["pixel_values"][:, :3], processor(rgba, return_tensors="pt")["pixel_values"])
        with pytest.raises(ValueError, match="4 values"):
            processor(rgba, do_convert_rgb=False, return_tensors="pt")

    def slicing_decode_kwargs(self, batch_size):
        # sliced, the flow noise would be drawn sample by sample: give it
        token_dim = V2FlowConfig(**TINY_V2FLOW).token_dim
        return {**self.decode_kwargs(), "noise": torch.randn(batch_size, 16, token_dim, generator=seeded(4))}


@pytest.fixture(scope="module")
def model():
    return tiny_v2flow_model()


@pytest.fixture
def latents():
    return torch.randn(2, TINY_V2FLOW["latent_channels"], TINY_V2FLOW["sample_size"], TINY_V2FLOW["sample_size"])


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------------
# model


@torch.no_grad()
@pytest.mark.parametrize("flow_method", ["linear_flow", "CondOT"])
def test_save_load_is_bit_identical(tmp_path, latents, flow_method):
    model = tiny_v2flow_model(flow_method=flow_method)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, V2FlowModel) and not loaded.training
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys()
    assert all(torch.equal(saved[key], reloaded[key]) for key in saved)
    first, second = model.encode(latents, generator=seeded(1)), loaded.encode(latents, generator=seeded(1))
    assert torch.equal(first.image_tokens, second.image_tokens)
    sample = model.decode(first, generator=seeded(2)).sample
    assert torch.equal(sample, loaded.decode(second, generator=seeded(2)).sample)
    assert sample.shape == latents.shape


def test_fresh_model_follows_the_original_init():
    model = V2FlowModel(V2FlowConfig(**TINY_V2FLOW))
    head = model.flow_head
    assert torch.allclose(model.quantizer.codebook.norm(dim=-1), torch.ones(TINY_V2FLOW["codebook_size"]))
    assert torch.equal(model.quantizer.ema_embed_sum, model.quantizer.codebook)
    for zero in (
        head.final_layer.linear.weight,
        head.final_layer.modulation.weight,
        head.res_blocks[0].modulation.bias,
    ):
        assert not zero.any()
    assert head.input_proj.weight.std() > 0.1 and not head.input_proj.bias.any()  # xavier, zero bias
    assert 0.01 < model.encoder.position_embedding.std() < 0.03


@torch.no_grad()
def test_tokenizer_modes(model, latents):
    first = model.encode(latents, generator=seeded(3))
    assert first.image_tokens.shape == (2, model.config.num_tokens)
    assert first.image_tokens.dtype == torch.long
    assert torch.equal(model.encode(latents, generator=seeded(3)).image_tokens, first.image_tokens)
    assert torch.allclose(first.latents.norm(dim=-1), torch.ones(2, model.config.num_tokens))
    assert torch.equal(first.latents, model.quantizer.codebook[first.image_tokens])
    deterministic = model.encode(latents, resampler_sampling="softmax")
    assert torch.allclose(deterministic.mixture_weights, deterministic.logits.softmax(-1))
    assert torch.equal(model.encode(latents, resampler_sampling="softmax").image_tokens, deterministic.image_tokens)
    gumbel = -torch.empty(first.logits.shape).exponential_(generator=seeded(3)).log()
    assert torch.equal(model.encode(latents, gumbel_noise=gumbel).image_tokens, first.image_tokens)


@torch.no_grad()
@pytest.mark.parametrize("flow_method", ["linear_flow", "CondOT"])
def test_decode_entry_points_and_given_noise(latents, flow_method):
    model = tiny_v2flow_model(flow_method=flow_method)
    config = model.config
    encoded = model.encode(latents, generator=seeded(4))
    reference = model.decode(image_tokens=encoded.image_tokens, generator=seeded(5), return_intermediates=True)
    assert torch.equal(model.decode(encoded, generator=seeded(5)).sample, reference.sample)
    with pytest.warns(FutureWarning, match="decode_from_indices"):
        from_indices = model.decode_from_indices(encoded.image_tokens, generator=seeded(5))
    assert torch.equal(from_indices.sample, reference.sample)
    grid = encoded.image_tokens.reshape(2, config.grid_size, config.grid_size)
    assert torch.equal(model.decode(image_tokens=grid, generator=seeded(5)).sample, reference.sample)
    # every token is predicted exactly once, and given noise + orders reproduce the generator's draws
    predicted = torch.stack([step.predicted for step in reference.steps])
    assert torch.equal(predicted.sum(0), torch.ones(2, config.num_tokens, dtype=torch.long))
    noise = torch.zeros(2, config.num_tokens, config.token_dim)
    for step in reference.steps:
        noise[step.predicted] = step.flow_noise
    replay = model.decode(encoded, noise=noise, orders=reference.orders)
    assert torch.equal(replay.sample, reference.sample)
    assert len(model.decode(encoded, num_ar_steps=2, generator=seeded(5), return_intermediates=True).steps) == 2


@torch.no_grad()
def test_guidance_defaults_and_linear_flow_outer_guidance(latents):
    assert V2FlowConfig(**TINY_V2FLOW).resolved_guidance_scale() == 1.0
    assert V2FlowConfig(**TINY_V2FLOW, flow_method="CondOT").resolved_guidance_scale() == 2.9
    assert V2FlowConfig(**TINY_V2FLOW, guidance_scale=1.5).resolved_guidance_scale() == 1.5
    model = tiny_v2flow_model()
    tokens = model.encode(latents, generator=seeded(6)).image_tokens
    orders = model.random_orders(2, seeded(7))
    plain = model.decode(image_tokens=tokens, generator=seeded(8), orders=orders, return_intermediates=True)
    guided = model.decode(
        image_tokens=tokens, generator=seeded(8), orders=orders, guidance_scale=2.9, return_intermediates=True
    )
    assert guided.steps[0].decoder_hidden_states.shape[0] == 4 and plain.steps[0].decoder_hidden_states.shape[0] == 2
    assert (guided.sample - plain.sample).abs().max() < 1e-5  # linear_flow keeps only the conditional half


@torch.no_grad()
def test_condot_fixed_step_solver(latents):
    model = tiny_v2flow_model(flow_method="CondOT")
    tokens = model.encode(latents, generator=seeded(9)).image_tokens
    euler = model.decode(image_tokens=tokens, generator=seeded(1), ode_method="euler", num_inference_steps=4)
    assert torch.isfinite(euler.sample).all()
    with pytest.raises(ValueError, match="adaptive"):
        model.decode(image_tokens=tokens, num_inference_steps=4)


@torch.no_grad()
def test_without_llm_vocabulary(latents):
    model = tiny_v2flow_model(use_llm_vocabulary=False, connector_readout_depth=1)
    assert model.llm_embed_tokens is None and model.quantizer.dim == TINY_V2FLOW["hidden_size"]
    encoded = model.encode(latents)
    assert encoded.logits is None and encoded.latents.shape == (2, model.config.num_tokens, TINY_V2FLOW["hidden_size"])
    assert torch.equal(model.encode(latents).image_tokens, encoded.image_tokens)  # no Gumbel noise here
    assert model.decode(encoded, generator=seeded(0)).sample.shape == latents.shape
    with pytest.raises(ValueError, match="no LLM vocabulary"):
        model.load_llm_vocabulary(torch.zeros(3, 3))


@pytest.mark.parametrize("flow_method", ["linear_flow", "CondOT"])
def test_training_step_is_differentiable(latents, flow_method):
    model = tiny_v2flow_model(flow_method=flow_method).train()
    codebook = model.quantizer.codebook.clone()
    output = model(latents, generator=seeded(0))
    assert set(output.losses) == {"flow", "commitment"} and torch.isfinite(output.loss)
    assert output.losses["commitment"] > 0
    output.loss.backward()
    for name in (
        "connector.s1.b1.conv1.conv.weight",
        "connector.readout.0.weight",
        "projector.0.weight",
        "encoder.blocks.0.attention.qkv_proj.weight",
        "decoder.mask_token",
        "flow_head.input_proj.weight",
    ):
        gradient = model.get_parameter(name).grad
        assert gradient is not None and gradient.abs().sum() > 0, name
    assert not torch.equal(model.quantizer.codebook, codebook)  # EMA update
    assert torch.allclose(model.quantizer.codebook.norm(dim=-1), torch.ones(TINY_V2FLOW["codebook_size"]))
    evaluation = model.eval()(latents, return_loss=True, generator=seeded(0))
    assert torch.isfinite(evaluation.loss)
    dropped = tiny_v2flow_model(flow_method=flow_method, label_drop_prob=1.0).train()
    dropped(latents, generator=seeded(0)).loss.backward()  # every condition replaced by the unconditional one
    assert dropped.unconditional_embedding.grad.abs().sum() > 0 and not dropped.projector[0].weight.grad.any()


def test_training_mask_ratio(model):
    orders = model.random_orders(64, seeded(0))
    counts = [int(model.random_mask(orders[:1], seeded(seed)).sum()) for seed in range(64)]
    low = int(np.ceil(model.config.num_tokens * model.config.mask_ratio_min))
    assert min(counts) >= low and max(counts) <= model.config.num_tokens and len(set(counts)) > 1


def test_presets_sizes():
    assert set(V2FLOW_PRESETS) == {f"v2flow_{n}_{s}" for n in ("base", "large", "huge") for s in (512, 1024)}
    config = V2FlowConfig.from_preset("v2flow_large_1024")
    assert (config.hidden_size, config.encoder_num_layers, config.num_attention_heads, config.num_tokens) == (
        1024,
        16,
        16,
        1024,
    )
    assert V2FlowConfig.from_preset("v2flow_base_512").num_tokens == 256
    with init_empty_weights(include_buffers=True):
        model = V2FlowModel(config)
    # the original v2flow_large @1024 with the LLaMA-2 vocabulary: 1629.7M parameters with its unused
    # 67.1M class embedding (dropped here), 265.3M buffer values
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 1562.6
    assert round(sum(b.numel() for b in model.buffers()) / 1e6, 1) == 265.3
    with pytest.raises(ValueError, match="unknown V2Flow preset"):
        V2FlowConfig.from_preset("v2flow_tiny")


# --------------------------------------------------------------------------------------------------
# bad input


@torch.no_grad()
def test_bad_inputs(model, latents):
    with pytest.raises(ValueError, match="channels"):
        model.encode(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="grid"):
        model.encode(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="DC-AE latents"):
        model.encode(torch.randn(4, 4, 4))
    with pytest.raises(ValueError, match="gumbel_noise"):
        model.encode(latents, gumbel_noise=torch.randn(2, 3))
    with pytest.raises(ValueError, match="resampler_sampling"):
        model.encode(latents, resampler_sampling="argmax")
    tokens = model.encode(latents).image_tokens
    for bad in (tokens + TINY_V2FLOW["codebook_size"], tokens - tokens - 1):
        with pytest.raises(ValueError, match=r"\[0, 16\)"):
            model.decode(image_tokens=bad)
    with pytest.raises(ValueError, match="integer"):
        model.decode(image_tokens=tokens.float())
    with pytest.raises(ValueError, match="image_tokens must be"):
        model.decode(image_tokens=tokens[:, :5])
    with pytest.raises(ValueError, match="exactly one"):
        model.decode()
    with pytest.raises(ValueError, match="code vectors"):
        model.decode(latents=latents)
    with pytest.raises(ValueError, match="noise"):
        model.decode(image_tokens=tokens, noise=torch.randn(2, 3))
    with pytest.raises(ValueError, match="permutation"):
        model.decode(image_tokens=tokens, orders=torch.zeros(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        model.load_llm_vocabulary(torch.randn(TINY_V2FLOW["llm_vocab_size"], TINY_V2FLOW["llm_embed_dim"] + 1))


def test_bad_configs():
    for fields, message in (
        ({"flow_method": "ddpm"}, "flow_method"),
        ({"num_attention_heads": 3}, "divisible"),
        ({"resampler_sampling": "hard"}, "resampler_sampling"),
        ({"sample_size": 5, "patch_size": 2}, "multiple"),
        ({"connector_depth": 0}, "connector_depth"),
    ):
        with pytest.raises(ValueError, match=message):
            V2FlowConfig(**{**TINY_V2FLOW, **fields})


# --------------------------------------------------------------------------------------------------
# quantizer


def test_quantizer_eval_is_cosine_argmax():
    quantizer = CosineEMAVectorQuantizer(8, 32).eval()
    quantizer.reset_codebook(seeded(0))
    inputs = torch.randn(3, 5, 8)
    output = quantizer(inputs)
    expected = (F.normalize(inputs, dim=-1) @ quantizer.codebook.t()).argmax(-1)
    assert torch.equal(output.indices, expected)
    assert torch.equal(output.quantized, quantizer.codebook[expected]) and output.loss == 0
    assert torch.equal(quantizer(inputs * 7.0).indices, expected)  # scale-free
    with pytest.raises(ValueError, match="width 8"):
        quantizer(torch.randn(2, 7))


def test_quantizer_training_ema_and_rotation_trick():
    quantizer = CosineEMAVectorQuantizer(4, 3, decay=0.5, eps=0.0, commitment_weight=2.0).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.eye(3, 4))
        quantizer.ema_embed_sum.copy_(quantizer.codebook)
        quantizer.ema_cluster_size.fill_(1.0)
    inputs = torch.tensor([[2.0, 0.2, 0.0, 0.0], [0.1, 3.0, 0.0, 0.1]], requires_grad=True)
    output = quantizer(inputs)
    unit = F.normalize(inputs.detach(), dim=-1)
    assert output.indices.tolist() == [0, 1]
    assert torch.allclose(output.quantized, torch.eye(3, 4)[:2], atol=1e-6)  # value of the codes
    assert torch.allclose(output.loss, 2.0 * F.mse_loss(torch.eye(3, 4)[:2], unit))
    # EMA: cluster sizes 0.5 * 1 + 0.5 * [1, 1, 0]; sums 0.5 * e_k + 0.5 * assigned inputs; then l2-normalised
    assert torch.allclose(quantizer.ema_cluster_size, torch.tensor([1.0, 1.0, 0.5]))
    expected = F.normalize(0.5 * torch.eye(3, 4)[:2] + 0.5 * unit, dim=-1)
    assert torch.allclose(quantizer.codebook[:2], expected, atol=1e-6)
    output.quantized.sum().backward()
    assert inputs.grad is not None and inputs.grad.abs().sum() > 0
    # the rotation trick is not the straight-through estimator
    source = torch.randn(5, 4, requires_grad=True)
    target = F.normalize(torch.randn(5, 4), dim=-1)
    rotated = rotate_to(source, target)
    assert torch.allclose(rotated, target, atol=1e-5)
    rotated.pow(2).sum().backward()
    assert not torch.allclose(source.grad, 2 * target)


def test_quantizer_without_ema_state():
    quantizer = CosineEMAVectorQuantizer(4, 3, ema_state=False)
    assert "ema_embed_sum" not in quantizer.state_dict()
    quantizer.reset_codebook(seeded(0))
    quantizer.eval()(torch.randn(2, 4))
    with pytest.raises(ValueError, match="EMA statistics"):
        quantizer.train()(torch.randn(2, 4))


def test_codebook_entries_range_checked():
    quantizer = CosineEMAVectorQuantizer(4, 3)
    quantizer.reset_codebook(seeded(0))
    assert quantizer.get_codebook_entry(torch.tensor([[0, 2]])).shape == (1, 2, 4)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        quantizer.get_codebook_entry(torch.tensor([3]))


# --------------------------------------------------------------------------------------------------
# image processor


def test_image_processor_adm_crop_and_postprocess():
    from hf_vtok import V2FlowImageProcessor
    from hf_vtok.utils import adm_center_crop

    processor = V2FlowImageProcessor(crop_size={"height": 8, "width": 8})
    image = Image.fromarray((np.random.default_rng(1).random((40, 25, 3)) * 255).astype(np.uint8))
    pixels = processor(image, return_tensors="pt").pixel_values
    expected = torch.from_numpy(np.asarray(adm_center_crop(image, 8), dtype=np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(pixels[0], (expected - 0.5) / 0.5)
    assert np.array_equal(np.asarray(processor.postprocess(pixels)[0]), np.asarray(adm_center_crop(image, 8)))
    with pytest.raises(ValueError, match="8x8"):
        processor(np.zeros((3, 6, 6), np.float32), do_center_crop=False, do_rescale=False)
    with pytest.raises(ValueError, match="square"):
        V2FlowImageProcessor(crop_size={"height": 8, "width": 6})(image)


# --------------------------------------------------------------------------------------------------
# converter on a checkpoint in the original training format (the parity fixture covers the vocabulary
# branch; this one has no LLM vocabulary, CondOT and distinct EMA weights)

TO_ORIGINAL = [  # hf_vtok key -> original key, the converter's renaming run backwards
    (r"^connector\.", "downsampler."),
    (r"^unconditional_embedding$", "fake_latent"),
    (r"^encoder\.token_proj\.", "z_proj."),
    (r"^encoder\.input_norm\.", "z_proj_ln."),
    (r"^encoder\.position_embedding$", "encoder_pos_embed_learned"),
    (r"^encoder\.blocks\.", "encoder_blocks."),
    (r"^encoder\.norm\.", "encoder_norm."),
    (r"^decoder\.input_proj\.", "decoder_embed."),
    (r"^decoder\.mask_token$", "mask_token"),
    (r"^decoder\.position_embedding$", "decoder_pos_embed_learned"),
    (r"^decoder\.blocks\.", "decoder_blocks."),
    (r"^decoder\.norm\.", "decoder_norm."),
    (r"^decoder\.flow_position_embedding$", "diffusion_pos_embed_learned"),
    (r"\.attention\.qkv_proj\.", ".attn.qkv."),
    (r"\.attention\.out_proj\.", ".attn.proj."),
    (r"^flow_head\.time_embedding\.linear_1\.", "flowloss.net.time_embed.mlp.0."),
    (r"^flow_head\.time_embedding\.linear_2\.", "flowloss.net.time_embed.mlp.2."),
    (r"^flow_head\.condition_proj\.", "flowloss.net.cond_embed."),
    (r"^flow_head\.", "flowloss.net."),
    (r"(res_blocks\.\d+)\.norm\.", r"\1.in_ln."),
    (r"\.modulation\.", ".adaLN_modulation.1."),
    (r"^quantizer\.codebook$", "quantizer._codebook.embed"),
    (r"^quantizer\.ema_embed_sum$", "quantizer._codebook.embed_avg"),
    (r"^quantizer\.ema_cluster_size$", "quantizer._codebook.cluster_size"),
]


def original_checkpoint(hf_model, path, **args):
    """Write ``hf_model`` as the original's ``checkpoint-last.pth`` (EMA = weights + 0.5, args as a Namespace)."""
    import argparse

    from hf_vtok.conversion import rename_keys

    def original_state(shift):
        state = {
            key: value + shift if key.endswith("weight") else value.clone()
            for key, value in hf_model.state_dict().items()
        }
        for key in ("quantizer.codebook", "quantizer.ema_embed_sum", "quantizer.ema_cluster_size"):
            state[key] = state[key][None]  # the original keeps a codebook axis
        state = rename_keys(state, TO_ORIGINAL)
        state.update({"quantizer._codebook.initted": torch.ones(1), "class_emb.weight": torch.randn(2, 4096)})
        return state

    checkpoint = {
        "model": original_state(0.0),
        "model_ema": original_state(0.5),
        "epoch": 3,
        "scaler": {},
        "args": argparse.Namespace(**args),
    }
    torch.save(checkpoint, path)


@torch.no_grad()
def test_convert_training_checkpoint_without_vocabulary(tmp_path, latents):
    from hf_vtok.models.v2flow.convert_v2flow_original_to_hf import convert_v2flow_checkpoint

    model = tiny_v2flow_model(
        use_llm_vocabulary=False, connector_readout_depth=1, flow_method="CondOT", guidance_scale=2.0
    )
    config = model.config
    args = dict(
        model="v2flow_small",
        flow_method="CondOT",
        visual_vocabulary=False,
        cfg=2.0,
        num_iter=3,
        img_size=config.image_size,
        vae_stride=2,
        patch_size=1,
        buffer_size=config.num_tokens,
    )
    original_checkpoint(model, tmp_path / "checkpoint-last.pth", **args)
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert_v2flow_checkpoint(tmp_path / "checkpoint-last.pth")
    converted, dropped = convert_v2flow_checkpoint(tmp_path / "checkpoint-last.pth", num_attention_heads=2)
    assert set(dropped) == {"class_emb.weight", "quantizer._codebook.initted"}
    for field in (
        "use_llm_vocabulary",
        "flow_method",
        "guidance_scale",
        "num_ar_steps",
        "connector_readout_depth",
        "codebook_size",
        "hidden_size",
        "sample_size",
        "vae_downsample_factor",
    ):
        assert getattr(converted.config, field) == getattr(config, field), field
    encoded = model.encode(latents)
    assert torch.equal(converted.encode(latents).image_tokens, encoded.image_tokens)
    expected = model.decode(encoded, generator=seeded(0)).sample
    assert torch.equal(converted.decode(image_tokens=encoded.image_tokens, generator=seeded(0)).sample, expected)
    ema, _ = convert_v2flow_checkpoint(tmp_path / "checkpoint-last.pth", weights="ema", num_attention_heads=2)
    assert torch.equal(ema.projector[0].weight, model.projector[0].weight + 0.5)
    slim, dropped = convert_v2flow_checkpoint(
        tmp_path / "checkpoint-last.pth", num_attention_heads=2, keep_ema_statistics=False
    )
    assert "quantizer._codebook.embed_avg" in dropped and slim.quantizer.ema_embed_sum is None
    assert torch.equal(slim.encode(latents).image_tokens, encoded.image_tokens)
    original_checkpoint(model, tmp_path / "bad.pth", **{**args, "buffer_size": 3})
    with pytest.raises(ValueError, match="buffer_size"):
        convert_v2flow_checkpoint(tmp_path / "bad.pth", num_attention_heads=2)


# --------------------------------------------------------------------------------------------------
# tools


def _image_folder(root, count=5):
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / ("cats" if index % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        array = (rng.random((12 + index, 10, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{index}.png")
    (root / "notes.txt").write_text("not an image")
    return root


@torch.no_grad()
def test_latent_cache_frames_images_as_the_v2flow_processor(tmp_path):
    """The shared cache-latents tool (tested for resume in test_training_scripts) stores DC-AE latents of
    exactly the V2Flow processor's pixels, flipped copies included."""
    images, vae = _image_folder(tmp_path / "images", count=2), tiny_dcae()
    rows = load_latent_cache(cache_latents(vae, images, tmp_path / "cache", resolution=8, flip=True, progress=False))
    from hf_vtok import V2FlowImageProcessor

    processor = V2FlowImageProcessor(crop_size={"height": 8, "width": 8})
    for row in rows:
        pixels = torch.as_tensor(processor(Image.open(images / row["key"])).pixel_values)
        assert torch.allclose(row["latents"], vae.encode(pixels).latent[0], atol=1e-5)
        assert torch.allclose(row["latents_flip"], vae.encode(pixels.flip(dims=[3])).latent[0], atol=1e-5)
    assert rows.cache_info["scaling_factor"] == 0.5


def test_llm_vocabulary_from_sharded_checkpoint(tmp_path):
    embed = torch.randn(10, 6, dtype=torch.bfloat16)
    save_file({"model.layers.0.weight": torch.randn(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(
        {"model.embed_tokens.weight": embed, "lm_head.weight": torch.randn(10, 6)},
        str(tmp_path / "model-00002-of-00002.safetensors"),
    )
    weight_map = {
        "model.layers.0.weight": "model-00001-of-00002.safetensors",
        "model.embed_tokens.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert torch.equal(extract_llm_vocabulary(tmp_path), embed)
    main(["cache-llm-vocabulary", "--llm", str(tmp_path), "--output", str(tmp_path / "out" / "vocab.safetensors")])
    loaded = load_llm_vocabulary(tmp_path / "out" / "vocab.safetensors")
    assert loaded.dtype == torch.bfloat16 and torch.equal(loaded, embed)
    torch.save(embed.float(), tmp_path / "vocab.pth")  # the original's format
    assert torch.equal(load_llm_vocabulary(tmp_path / "vocab.pth"), embed.float())
    model = tiny_v2flow_model(llm_vocab_size=10, llm_embed_dim=6)
    model.load_llm_vocabulary(tmp_path / "vocab.pth")
    assert torch.equal(model.llm_embed_tokens, embed.float())
    with pytest.raises(ValueError, match=r"\(10, 6\).*\(20, 12\)"):
        tiny_v2flow_model().load_llm_vocabulary(tmp_path / "vocab.pth")
    save_file({"vision.embed_tokens.weight": torch.randn(2, 2)}, str(tmp_path / "extra.safetensors"))
    (tmp_path / "model.safetensors.index.json").unlink()
    with pytest.raises(ValueError, match="several"):
        extract_llm_vocabulary(tmp_path)
    assert torch.equal(extract_llm_vocabulary(tmp_path, key="model.embed_tokens.weight"), embed)


# --------------------------------------------------------------------------------------------------
# the transformers surface
@torch.no_grad()
def test_decode_and_forward_name_unknown_arguments(model, latents):
    with pytest.raises(TypeError, match=r"\['output_attentions'\]"):
        model(latents, output_attentions=True, generator=seeded(0))
    with pytest.raises(TypeError, match=r"\['num_step'\]"):
        model.decode(model.encode(latents, generator=seeded(0)), num_step=2)
    model.train()
    try:
        with pytest.raises(TypeError, match=r"\['output_attentions'\]"):
            model(latents, output_attentions=True, generator=seeded(0))
    finally:
        model.eval()


def test_buffers_are_the_same_after_a_meta_build():
    """transformers' test_init_weights_can_init_buffers: __init__ and _init_weights give the same buffers."""
    config = V2FlowConfig(**TINY_V2FLOW)
    direct = dict(V2FlowModel(config).named_buffers())
    with torch.device("meta"):
        empty = V2FlowModel(config)
    empty.to_empty(device="cpu")
    empty.init_weights()
    rebuilt = dict(empty.named_buffers())
    assert sorted(direct) == sorted(rebuilt) and {"llm_embed_tokens", "quantizer.codebook"} <= set(direct)
    for name, buffer in direct.items():
        assert torch.equal(buffer, rebuilt[name]), name
    assert direct["llm_embed_tokens"].std() > 0.01  # a random stand-in, not zeros


@torch.no_grad()
def test_sliced_decode_needs_the_batch_for_intermediates(model, latents):
    encoded = model.encode(latents, generator=seeded(0))
    model.enable_slicing()
    try:
        with pytest.raises(ValueError, match="disable_slicing"):
            model.decode(encoded, return_intermediates=True, generator=seeded(1))
    finally:
        model.disable_slicing()
