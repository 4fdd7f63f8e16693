"""Tiny random models, inputs and pipelines of every family, shared by the test folders.

Zero-initialised layers (adaLN gates, modulation, final layers) would hide bugs, so the factories move every
weight off its initial value; each keeps the recipe its family's tests were written with.
"""

import json

import torch
from diffusers import AutoencoderDC
from safetensors.torch import save_file

from hf_vtok import (
    DiT1DPipeline,
    DiTTransformer1DModel,
    FlowMoConfig,
    FlowMoModel,
    GaussianDiffusionScheduler,
    SiTFlowScheduler,
    SiTPipeline,
    SiTTransformer1DModel,
    SoftVQConfig,
    SoftVQModel,
    V2FlowConfig,
    V2FlowModel,
    ViTokConfig,
    ViTokDiTPipeline,
    ViTokDiTTransformerModel,
    ViTokModel,
)
from hf_vtok.modules import AdaLNModulation

# --------------------------------------------------------------------------------------------------
# tokenizers
TINY_VITOK_VARIANT = "w32_d2_h2-w48_d2_h3/1x8x4"

TINY_LATENT_TOKEN_VIT = dict(
    image_size=32, encoder_patch_size=8, decoder_patch_size=8, num_latent_tokens=8, latent_channels=8,
    encoder_hidden_size=32, encoder_num_layers=2, encoder_num_heads=4,
    decoder_hidden_size=48, decoder_num_layers=2, decoder_num_heads=4,
)  # fmt: skip
TINY_SOFTVQ_EXTRA = dict(codebook_size=16, num_codebooks=2)

TINY_FLOWMO = dict(
    image_size=16,
    patch_size=4,
    code_length=4,
    context_dim=6,
    bits_per_token=3,
    mup_width=2,
    enc_mup_width=2,
    encoder_depth=1,
    decoder_depth=2,
    base_hidden_size=64,
    num_attention_heads=2,
    base_axes_dim=(8, 12, 12),
    num_inference_steps=3,
)

TINY_V2FLOW = dict(
    latent_channels=4,
    sample_size=4,
    vae_downsample_factor=2,
    scaling_factor=0.5,
    connector_hidden_size=8,
    connector_depth=1,
    llm_vocab_size=20,
    llm_embed_dim=12,
    codebook_size=16,
    hidden_size=16,
    encoder_num_layers=1,
    decoder_num_layers=1,
    num_attention_heads=2,
    flow_head_width=16,
    flow_head_depth=1,
    flow_num_inference_steps=3,
    num_ar_steps=3,
)


def perturb_zero_inits(model, seed: int = 1):
    """Add ``0.1 * N(0, 1)`` (seeded) to every parameter, so zero-initialised adaLN layers matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1 + parameter)
    return model


def tiny_flowmo_model(**overrides) -> FlowMoModel:
    """FlowMo on ``TINY_FLOWMO`` with random adaLN weights (the gates start at zero)."""
    torch.manual_seed(0)
    model = FlowMoModel(FlowMoConfig(**{**TINY_FLOWMO, **overrides})).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AdaLNModulation):
                module.linear.weight.normal_(0, 0.05)
    return model


def tiny_v2flow_model(**overrides) -> V2FlowModel:
    """V²Flow on ``TINY_V2FLOW`` with every parameter moved off its initial value (draws from the global RNG)."""
    model = V2FlowModel(V2FlowConfig(**{**TINY_V2FLOW, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def tiny_dcae() -> AutoencoderDC:
    """A 2x-downsampling DC-AE with ``TINY_V2FLOW``'s 4 latent channels."""
    return AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=4,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=(8, 16),
        decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()),
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.5,
    ).eval()


# --------------------------------------------------------------------------------------------------
# generators
TINY_1D = dict(in_channels=4, num_tokens=6, hidden_size=16, num_layers=2, num_attention_heads=2, num_classes=5)
TINY_VITOK_DIT = dict(in_channels=4, hidden_size=16, num_layers=2, num_attention_heads=2, num_classes=5, num_tokens=9)


def randomize(model, seed: int = 0):
    """Every parameter drawn from ``0.3 * N(0, 1)`` (seeded), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def inputs_1d(model, batch: int = 3):
    """``(hidden_states, timestep, class_labels)`` for a 1D SiT (flow time) or DiT (integer step); the last label
    of a batch of 3 is the null class."""
    config = model.config
    hidden = torch.randn(batch, config.num_tokens, config.in_channels)
    if isinstance(model, SiTTransformer1DModel):
        timestep = torch.rand(batch)
    else:
        timestep = torch.randint(0, 1000, (batch,))
    return hidden, timestep, torch.tensor([0, 4, config.num_classes])[:batch]


def original_1d_checkpoint(tmp_path, kind, depth=2, hidden=16, channels=4, tokens=6, classes=5, **config_changes):
    """A SiT / DiT checkpoint in the released layout (original key names) and its config.json."""
    out = 2 * channels if kind == "dit" else channels
    shapes = {
        "x_embedder.weight": (hidden, channels),
        "x_embedder.bias": (hidden,),
        "pos_embed": (1, tokens, hidden),
        "t_embedder.mlp.0.weight": (hidden, 256),
        "t_embedder.mlp.0.bias": (hidden,),
        "t_embedder.mlp.2.weight": (hidden, hidden),
        "t_embedder.mlp.2.bias": (hidden,),
        "y_embedder.embedding_table.weight": (classes + 1, hidden),
        "final_layer.linear.weight": (out, hidden),
        "final_layer.linear.bias": (out,),
        "final_layer.adaLN_modulation.1.weight": (2 * hidden, hidden),
        "final_layer.adaLN_modulation.1.bias": (2 * hidden,),
    }
    for block in range(depth):
        shapes.update({
            f"blocks.{block}.attn.qkv.weight": (3 * hidden, hidden), f"blocks.{block}.attn.qkv.bias": (3 * hidden,),
            f"blocks.{block}.attn.proj.weight": (hidden, hidden), f"blocks.{block}.attn.proj.bias": (hidden,),
            f"blocks.{block}.mlp.fc1.weight": (4 * hidden, hidden), f"blocks.{block}.mlp.fc1.bias": (4 * hidden,),
            f"blocks.{block}.mlp.fc2.weight": (hidden, 4 * hidden), f"blocks.{block}.mlp.fc2.bias": (hidden,),
            f"blocks.{block}.adaLN_modulation.1.weight": (6 * hidden, hidden),
            f"blocks.{block}.adaLN_modulation.1.bias": (6 * hidden,),
        })  # fmt: skip
    if config_changes.get("qk_norm"):
        head_dim = hidden // 2
        for block in range(depth):
            for norm in ("q_norm", "k_norm"):
                shapes.update(
                    {
                        f"blocks.{block}.attn.{norm}.weight": (head_dim,),
                        f"blocks.{block}.attn.{norm}.bias": (head_dim,),
                    }
                )
    generator = torch.Generator().manual_seed(1)
    state_dict = {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    config = {
        "input_size": tokens, "in_channels": channels, "hidden_size": hidden, "depth": depth, "num_heads": 2,
        "mlp_ratio": 4.0, "num_classes": classes, "class_dropout_prob": 0.1, "patch_size": 1, "vae_1d": True,
        "license": "apache-2.0", "tags": ["x"], "repo_url": "https://example.invalid",
    }  # fmt: skip
    config.update(
        {"decoder_hidden_size": hidden, "path_type": "edm", "qk_norm": False, "use_cfg": True}
        if kind == "sit"
        else {"learn_sigma": True}
    )
    config.update(config_changes)
    save_file(state_dict, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "model.safetensors", tmp_path / "config.json", state_dict


# --------------------------------------------------------------------------------------------------
# pipelines
TINY_PIPELINE_1D = dict(
    in_channels=4, num_tokens=4, hidden_size=16, num_layers=1, num_attention_heads=2, num_classes=5
)


def tiny_pipeline_tokenizer(**changes) -> SoftVQModel:
    """A 16x16-pixel SoftVQ-VAE with 4 latent tokens of 4 channels (``scaling_factor`` 2, ``shift_factor`` 0.1)."""
    config = dict(
        image_size=16, encoder_patch_size=8, decoder_patch_size=8, num_latent_tokens=4, latent_channels=4,
        encoder_hidden_size=16, encoder_num_layers=1, encoder_num_heads=2, decoder_hidden_size=16,
        decoder_num_layers=1, decoder_num_heads=2, codebook_size=8, num_codebooks=2, scaling_factor=2.0,
        shift_factor=0.1,
    )  # fmt: skip
    return SoftVQModel(SoftVQConfig(**(config | changes))).eval()


def tiny_sit_pipeline(**scheduler) -> SiTPipeline:
    pipe = SiTPipeline(
        tiny_pipeline_tokenizer(), randomize(SiTTransformer1DModel(**TINY_PIPELINE_1D)), SiTFlowScheduler(**scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_dit_pipeline(**scheduler) -> DiT1DPipeline:
    pipe = DiT1DPipeline(
        tiny_pipeline_tokenizer(),
        randomize(DiTTransformer1DModel(**TINY_PIPELINE_1D)),
        GaussianDiffusionScheduler(**scheduler),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_vitok_dit_pipeline() -> ViTokDiTPipeline:
    """A ViTok DiT on a 2x2 grid of a patch-4 ViTok: 8x8-pixel images."""
    autoencoder = ViTokModel(ViTokConfig(
        encoder_hidden_size=16, encoder_num_layers=1, encoder_num_heads=2, decoder_hidden_size=16,
        decoder_num_layers=1, decoder_num_heads=2, patch_size=4, latent_channels=4,
    )).eval()  # fmt: skip
    transformer = randomize(
        ViTokDiTTransformerModel(
            in_channels=4, hidden_size=16, num_layers=1, num_attention_heads=2, num_classes=5, num_tokens=4
        )
    )
    pipe = ViTokDiTPipeline.from_components(transformer, autoencoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe
