"""V²Flow: DC-AE latents -> visual tokens in an LLM's vocabulary space -> DC-AE latents.

Tokenizer: a spatial-temporal connector (two RegNet stages) scores every LLM vocabulary row per
latent cell, a Gumbel-softmax mixture of the frozen LLM ``embed_tokens`` rows gives a vector in the
LLM embedding space, and a cosine-similarity EMA codebook turns it into one token id per cell.
Detokenizer: the code vectors, projected to the transformer width, condition a masked
autoregressive (MAR) encoder/decoder that reveals the latent tokens over a few steps in random
order; a per-token MLP flow head samples each revealed token (``linear_flow`` with DPM-Solver++,
or ``CondOT`` with an adaptive ODE solve).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ...flow import discrete_flow_sigmas, flow_dpm_solver_sample, flow_ode_sample
from ...modeling_outputs import VisualTokenizerDecoderOutput, VisualTokenizerEncoderOutput, VisualTokenizerOutput
from ...modeling_utils import VisualTokenizerPreTrainedModel
from ...modules import GELUMLP, Attention, gated_residual, modulate, patchify, unpatchify
from ...quantizers import CosineEMAVectorQuantizer
from .configuration_v2flow import V2FlowConfig
from .llm_vocabulary import load_llm_vocabulary

ADAPTIVE_ODE_METHODS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_ODE_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


@dataclass
class V2FlowEncoderOutput(VisualTokenizerEncoderOutput):
    r"""Result of ``V2FlowModel.encode``.

    Args:
        latents: the quantized code vectors ``[B, L, D]`` (unit norm; ``D`` is the LLM embedding width),
            what ``decode(latents=...)`` takes.
        image_tokens: code ids ``[B, L]`` in raster order over the latent grid.
        logits: connector scores over the LLM vocabulary ``[B, L, V]`` (LLM-vocabulary models).
        mixture_weights: the (Gumbel-)softmax weights of the vocabulary rows ``[B, L, V]``.
        pre_quantized: the mixture of LLM embedding rows (or the connector output) ``[B, L, D]``.
        commitment_loss: the quantizer's commitment loss (training mode; 0 otherwise).
    """

    logits: torch.FloatTensor | None = None
    mixture_weights: torch.FloatTensor | None = None
    pre_quantized: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None


@dataclass
class V2FlowDecodeStep(ModelOutput):
    r"""What one masked-AR step did (``decode(..., return_intermediates=True)``).

    Args:
        mask: tokens still unknown after the step ``[B, L]`` (1 = unknown; after the last step this is
            the original's unused ``mask_by_order`` value).
        predicted: tokens sampled in the step ``[B, L]`` (bool).
        decoder_hidden_states: MAR decoder output ``[B, L, W]``, or ``[2B, L, W]`` with guidance
            (conditional rows first, then rows conditioned on the unconditional embedding).
        flow_condition: decoder states of the sampled tokens, ordered sample-major then by position
            (both guidance halves when guided).
        flow_noise: the start noise of the sampled tokens ``[n, C]``.
        flow_samples: flow-head samples as computed, ``[2n, C]`` with guidance (the first half is kept,
            as in the original), ``[n, C]`` otherwise.
    """

    mask: torch.FloatTensor | None = None
    predicted: torch.BoolTensor | None = None
    decoder_hidden_states: torch.FloatTensor | None = None
    flow_condition: torch.FloatTensor | None = None
    flow_noise: torch.FloatTensor | None = None
    flow_samples: torch.FloatTensor | None = None


@dataclass
class V2FlowDecoderOutput(VisualTokenizerDecoderOutput):
    r"""``sample``: decoded DC-AE latents ``[B, C, h, w]`` in model space (divide by
    ``config.scaling_factor`` before DC-AE decoding); ``orders``: the random reveal order ``[B, L]``;
    ``steps``: per-step details when asked."""

    orders: torch.LongTensor | None = None
    steps: tuple[V2FlowDecodeStep, ...] | None = None


@dataclass
class V2FlowOutput(VisualTokenizerOutput):
    """``model(latents)``: training losses (``loss``, ``losses``) or the reconstruction (``sample``)."""


# --------------------------------------------------------------------------------------------------
# Spatial-temporal connector: two RegNet stages of SE bottlenecks, then a readout MLP.
# Module and parameter names follow timm's RegNet layout (``conv.weight``, ``bn.weight`` even though
# the norm is a channel LayerNorm), so original weights load by name.


class ChannelLayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``[B, C, H, W]`` maps."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states.permute(0, 2, 3, 1)
        hidden_states = F.layer_norm(hidden_states, self.normalized_shape, self.weight, self.bias, self.eps)
        return hidden_states.permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """Bias-free convolution, channel LayerNorm (``bn``), optional SiLU."""

    def __init__(self, in_channels, out_channels, kernel_size=1, groups=1, eps=1e-5, activation=True):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = ChannelLayerNorm2d(out_channels, eps=eps)
        self.act = nn.SiLU() if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(hidden_states)))


class SqueezeExcite(nn.Module):
    """Channel gate ``x * sigmoid(fc2(silu(fc1(mean_hw(x)))))``."""

    def __init__(self, channels: int, reduced_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced_channels, 1)
        self.fc2 = nn.Conv2d(reduced_channels, channels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.silu(self.fc1(hidden_states.mean((2, 3), keepdim=True))))
        return hidden_states * gate.sigmoid()


class RegNetBottleneck(nn.Module):
    """RegNetY block (bottleneck ratio 1, depthwise 3x3, SE ratio 0.25 of the block input), SiLU."""

    def __init__(self, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 1, eps=eps)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, groups=out_channels, eps=eps)
        self.se = SqueezeExcite(out_channels, int(round(in_channels * 0.25)))
        self.conv3 = ConvNormAct(out_channels, out_channels, 1, eps=eps, activation=False)
        self.downsample = (
            ConvNormAct(in_channels, out_channels, 1, eps=eps, activation=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shortcut = hidden_states if self.downsample is None else self.downsample(hidden_states)
        hidden_states = self.conv3(self.se(self.conv2(self.conv1(hidden_states))))
        return F.silu(hidden_states + shortcut)


class RegNetStage(nn.Module):
    """``depth`` bottlenecks named ``b1 .. b{depth}``, the first one changing the width."""

    def __init__(self, depth: int, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        for index in range(depth):
            block_in = in_channels if index == 0 else out_channels
            self.add_module(f"b{index + 1}", RegNetBottleneck(block_in, out_channels, eps))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            hidden_states = block(hidden_states)
        return hidden_states


def _mlp(depth: int, in_features: int, out_features: int) -> nn.Sequential:
    """``Linear`` then ``depth - 1`` times (exact GELU, ``Linear``): the original's ``build_mlp``."""
    layers = [nn.Linear(in_features, out_features)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_features, out_features)]
    return nn.Sequential(*layers)


class V2FlowConnector(nn.Module):
    """Latent grid ``[B, C, H, W]`` -> per-cell features ``[B, H*W, out]`` (raster order).

    The original (VideoLLaMA2's STC connector) pools between the stages with an
    ``AvgPool3d((1, 1, 1))``, an identity, followed by a SiLU: ``sampler`` keeps the SiLU.
    """

    def __init__(self, config: V2FlowConfig, out_features: int):
        super().__init__()
        hidden, eps = config.connector_hidden_size, config.connector_norm_eps
        self.s1 = RegNetStage(config.connector_depth, config.latent_channels, hidden, eps)
        self.sampler = nn.SiLU()
        self.s2 = RegNetStage(config.connector_depth, hidden, hidden, eps)
        self.readout = _mlp(config.connector_readout_depth, hidden, out_features)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        features = self.s2(self.sampler(self.s1(latents)))
        return self.readout(features.flatten(2).transpose(1, 2))


# --------------------------------------------------------------------------------------------------
# Masked autoregressive encoder / decoder


class V2FlowTransformerBlock(GradientCheckpointingLayer):
    """Pre-norm ViT block (timm ``Block``): attention and GELU MLP with LayerNorms."""

    def __init__(self, config: V2FlowConfig):
        super().__init__()
        width = config.hidden_size
        self.norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.attention = Attention(
            width,
            config.num_attention_heads,
            qkv_bias=True,
            out_bias=True,
            attention_dropout=config.attention_dropout,
            output_dropout=config.hidden_dropout,
        )
        self.norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = GELUMLP(width, int(width * config.mlp_ratio), dropout=config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attention(self.norm1(hidden_states))
        return hidden_states + self.mlp(self.norm2(hidden_states))


def _with_buffer(mask: torch.Tensor, buffer_size: int) -> torch.Tensor:
    """``[B, L]`` unknown-token mask -> ``[B, buffer + L]`` (condition slots are always visible)."""
    return torch.cat([mask.new_zeros(mask.shape[0], buffer_size), mask], dim=1)


class V2FlowMaskedEncoder(nn.Module):
    """MAE-style encoder over ``[conditions (one slot per token) | known tokens]``; unknown tokens are dropped."""

    def __init__(self, config: V2FlowConfig):
        super().__init__()
        width, length = config.hidden_size, config.num_tokens
        self.buffer_size = length
        self.token_proj = nn.Linear(config.token_dim, width)
        self.input_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.position_embedding = nn.Parameter(torch.zeros(1, 2 * length, width))
        self.blocks = nn.ModuleList(V2FlowTransformerBlock(config) for _ in range(config.encoder_num_layers))
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L, C]``, ``mask [B, L]`` (1 = unknown; the same count in every row),
        ``conditions [B, L, W]`` -> ``[B, L + known, W]``."""
        tokens = tokens.to(self.token_proj.weight.dtype)
        hidden_states = torch.cat([conditions.to(tokens.dtype), self.token_proj(tokens)], dim=1)
        hidden_states = self.input_norm(hidden_states + self.position_embedding)
        visible = ~_with_buffer(mask, self.buffer_size).bool()
        hidden_states = hidden_states[visible].reshape(tokens.shape[0], -1, hidden_states.shape[-1])
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.norm(hidden_states)


class V2FlowMaskedDecoder(nn.Module):
    """Puts the encoded tokens back among mask tokens and predicts a flow condition for every token."""

    def __init__(self, config: V2FlowConfig):
        super().__init__()
        width, length = config.hidden_size, config.num_tokens
        self.buffer_size = length
        self.input_proj = nn.Linear(width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position_embedding = nn.Parameter(torch.zeros(1, 2 * length, width))
        self.blocks = nn.ModuleList(V2FlowTransformerBlock(config) for _ in range(config.decoder_num_layers))
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.flow_position_embedding = nn.Parameter(torch.zeros(1, length, width))

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``encoded`` from the encoder, the same ``mask`` -> per-token conditions ``[B, L, W]``."""
        encoded = self.input_proj(encoded.to(self.input_proj.weight.dtype))
        batch, width = encoded.shape[0], encoded.shape[-1]
        visible = ~_with_buffer(mask, self.buffer_size).bool()
        hidden_states = self.mask_token.to(encoded.dtype).expand(batch, visible.shape[1], width).clone()
        hidden_states[visible] = encoded.reshape(-1, width)
        hidden_states = hidden_states + self.position_embedding
        for block in self.blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.norm(hidden_states)
        return hidden_states[:, self.buffer_size :] + self.flow_position_embedding


# --------------------------------------------------------------------------------------------------
# Per-token flow head (MAR's SimpleMLPAdaLN)


class V2FlowHeadResBlock(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Linear(width, 3 * width)

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(F.silu(conditioning)).chunk(3, dim=-1)
        return gated_residual(hidden_states, gate, self.mlp(modulate(self.norm(hidden_states), shift, scale)))


class V2FlowHeadFinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.modulation = nn.Linear(width, 2 * width)
        self.linear = nn.Linear(width, out_channels)

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(conditioning)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(hidden_states), shift, scale))


class V2FlowHead(nn.Module):
    """``velocity = head(x [N, C], t [N], condition [N, W])`` for one token per row.

    ``t`` is fed as is to a 256-frequency ``[cos | sin]`` embedding: ``sigma * 1000`` for
    linear_flow, ``t`` in [0, 1] for CondOT.
    """

    frequency_channels = 256

    def __init__(self, config: V2FlowConfig):
        super().__init__()
        width, eps = config.flow_head_width, config.layer_norm_eps
        self.time_embedding = TimestepEmbedding(self.frequency_channels, width)
        self.condition_proj = nn.Linear(config.hidden_size, width)
        self.input_proj = nn.Linear(config.token_dim, width)
        self.res_blocks = nn.ModuleList(V2FlowHeadResBlock(width, eps) for _ in range(config.flow_head_depth))
        self.final_layer = V2FlowHeadFinalLayer(width, config.token_dim, eps)
        # the original's init (read by V2FlowModel._init_weights; other Linears are xavier-uniform)
        for linear in (self.time_embedding.linear_1, self.time_embedding.linear_2):
            linear.init_scheme = "normal"
        zero_initialised = [block.modulation for block in self.res_blocks]
        for linear in (*zero_initialised, self.final_layer.modulation, self.final_layer.linear):
            linear.init_scheme = "zeros"

    def project_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """MAR conditions ``[N, hidden]`` -> ``[N, width]``: what samplers compute once for all their steps."""
        return self.condition_proj(condition.to(self.condition_proj.weight.dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        condition: torch.Tensor | None = None,
        projected_condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity of ``sample [N, C]`` at ``timestep`` (``[N]``, or 0-dim for every row).

        The condition comes as MAR conditions ``condition [N, hidden]`` or already through
        ``project_condition`` (``projected_condition [N, width]``, hoisted out of sampler loops).
        """
        if (condition is None) == (projected_condition is None):
            raise ValueError("give exactly one of condition or projected_condition")
        if projected_condition is None:
            projected_condition = self.project_condition(condition)
        dtype = self.input_proj.weight.dtype
        # embedded row by row even for one shared time: a one-row matmul rounds differently
        frequencies = get_timestep_embedding(
            timestep.reshape(-1).expand(sample.shape[0]),
            self.frequency_channels,
            flip_sin_to_cos=True,
            downscale_freq_shift=0,
        )
        conditioning = self.time_embedding(frequencies.to(dtype)) + projected_condition
        hidden_states = self.input_proj(sample.to(dtype))
        for block in self.res_blocks:
            hidden_states = block(hidden_states, conditioning)
        return self.final_layer(hidden_states, conditioning)

    def guided_velocity(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        condition: torch.Tensor | None,
        guidance_scale,
        projected_condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Classifier-free guided velocity ``u + s (c - u)`` of ``sample [n, C]`` at one time (0-dim),
        from a single call on ``condition [2n, W]`` (or its ``projected_condition``) = conditional rows
        then unconditional rows."""
        count = sample.shape[0]
        output = self(torch.cat([sample, sample]), timestep.reshape(()), condition, projected_condition).float()
        conditional, unconditional = output.split(count)
        return unconditional + guidance_scale * (conditional - unconditional)


# --------------------------------------------------------------------------------------------------


class V2FlowModel(VisualTokenizerPreTrainedModel):
    r"""V²Flow tokenizer on DC-AE latents.

    Inputs are DC-AE latents already multiplied by ``config.scaling_factor`` (``[B, 32, h, w]`` with
    ``h = w = config.sample_size``); ``V2FlowPipeline`` does the pixel side with diffusers'
    ``AutoencoderDC``.

    ```python
    >>> encoded = model.encode(latents, generator=torch.Generator().manual_seed(0))
    >>> encoded.image_tokens                                  # [B, L] ids in [0, codebook_size)
    >>> decoded = model.decode(image_tokens=encoded.image_tokens, generator=generator)
    >>> decoded.sample                                         # [B, 32, h, w] latents (model space)
    ```
    """

    config: V2FlowConfig
    main_input_name = "latents"
    _no_split_modules = ["V2FlowTransformerBlock"]
    _keep_in_fp32_modules = ["quantizer"]

    def __init__(self, config: V2FlowConfig):
        super().__init__(config)
        code_dim = config.code_dim
        self.connector = V2FlowConnector(config, config.llm_vocab_size if config.use_llm_vocabulary else code_dim)
        if config.use_llm_vocabulary:
            self.register_buffer("llm_embed_tokens", torch.empty(config.llm_vocab_size, config.llm_embed_dim))
        else:
            self.llm_embed_tokens = None
        self.quantizer = CosineEMAVectorQuantizer(
            code_dim,
            config.codebook_size,
            decay=config.codebook_decay,
            eps=config.codebook_eps,
            commitment_weight=config.commitment_weight,
            ema_state=config.codebook_ema_state,
        )
        self.projector = _mlp(config.projector_depth, code_dim, config.hidden_size)
        # condition of the unconditional branch of classifier-free guidance ("fake_latent")
        self.unconditional_embedding = nn.Parameter(torch.zeros(1, config.hidden_size))
        self.encoder = V2FlowMaskedEncoder(config)
        self.decoder = V2FlowMaskedDecoder(config)
        self.flow_head = V2FlowHead(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------------
    # initialisation: as the original (xavier Linears; a Linear's `init_scheme` marks the flow head's
    # normal(0.02) time embedding and zero-initialised modulation / output layers). transformers skips
    # modules without parameters of their own, so the schemes live on the Linears themselves.
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            scheme = getattr(module, "init_scheme", "xavier")
            if scheme == "zeros":
                init.zeros_(module.weight)
            elif scheme == "normal":
                init.normal_(module.weight, std=0.02)
            else:
                init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # torch's default Conv2d init
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1] * module.weight[0, 0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, V2FlowMaskedEncoder):
            init.normal_(module.position_embedding, std=0.02)
        elif isinstance(module, V2FlowMaskedDecoder):
            for parameter in (module.mask_token, module.position_embedding, module.flow_position_embedding):
                init.normal_(parameter, std=0.02)
        elif isinstance(module, CosineEMAVectorQuantizer):
            if not getattr(module.codebook, "_is_hf_initialized", False):
                module.reset_codebook()
        elif isinstance(module, V2FlowModel):
            init.normal_(module.unconditional_embedding, std=0.02)
            if module.llm_embed_tokens is not None:
                # a stand-in: load the real matrix with `load_llm_vocabulary`
                init.normal_(module.llm_embed_tokens, std=0.02)

    # ----------------------------------------------------------------------------------------------
    # vocabulary
    @torch.no_grad()
    def load_llm_vocabulary(self, vocabulary: "torch.Tensor | str") -> None:
        """Copy an LLM ``embed_tokens`` matrix ``[V, D]`` (a tensor or a file, see
        ``hf_vtok.models.v2flow.llm_vocabulary``) into the frozen ``llm_embed_tokens`` buffer."""
        if self.llm_embed_tokens is None:
            raise ValueError("this V2Flow model has no LLM vocabulary (config.use_llm_vocabulary=False)")
        name = "vocabulary tensor"
        if not isinstance(vocabulary, torch.Tensor):
            name = repr(str(vocabulary))
            vocabulary = load_llm_vocabulary(vocabulary)
        expected = tuple(self.llm_embed_tokens.shape)
        if tuple(vocabulary.shape) != expected:
            raise ValueError(
                f"{name} has shape {tuple(vocabulary.shape)} (vocabulary size, width) but this model's LLM "
                f"vocabulary is {expected} (config.llm_vocab_size={self.config.llm_vocab_size}, "
                f"config.llm_embed_dim={self.config.llm_embed_dim})"
            )
        self.llm_embed_tokens.copy_(vocabulary.to(self.llm_embed_tokens))

    # ----------------------------------------------------------------------------------------------
    # checks
    def _check_latents(self, latents: torch.Tensor) -> None:
        config = self.config
        expected = f"[B, {config.latent_channels}, {config.sample_size}, {config.sample_size}]"
        if not isinstance(latents, torch.Tensor) or latents.dim() != 4:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"V2Flow takes DC-AE latents {expected}, got {shape}")
        if latents.shape[1] != config.latent_channels:
            raise ValueError(
                f"latents have {latents.shape[1]} channels (shape {tuple(latents.shape)}) but this model takes "
                f"{config.latent_channels}-channel DC-AE latents {expected}"
            )
        if tuple(latents.shape[2:]) != (config.sample_size, config.sample_size):
            raise ValueError(
                f"latents have a {latents.shape[2]}x{latents.shape[3]} grid (shape {tuple(latents.shape)}) but this "
                f"model was built for {config.sample_size}x{config.sample_size} "
                f"({config.image_size}px images); expected {expected}"
            )
        if not latents.is_floating_point():
            raise ValueError(f"latents must be floating point, got dtype {latents.dtype}")

    def _image_tokens_to_codes(self, image_tokens: torch.Tensor) -> torch.Tensor:
        config = self.config
        if image_tokens.dim() == 3:
            image_tokens = image_tokens.flatten(1)
        if image_tokens.dim() != 2 or image_tokens.shape[1] != config.num_tokens:
            raise ValueError(
                f"image_tokens must be [B, {config.num_tokens}] (or [B, {config.grid_size}, {config.grid_size}]) "
                f"ids for this {config.image_size}px model, got shape {tuple(image_tokens.shape)}"
            )
        return self.quantizer.get_codebook_entry(image_tokens)

    # ----------------------------------------------------------------------------------------------
    # tokenizer
    def _resample(self, logits, generator, gumbel_noise, resampler_sampling):
        """Mixture weights over the vocabulary: softmax((logits [+ Gumbel noise]) / tau), in float32."""
        sampling = self.config.resampler_sampling if resampler_sampling is None else resampler_sampling
        if self.training:
            sampling = "gumbel"
        logits = logits.float()
        if gumbel_noise is not None:
            if tuple(gumbel_noise.shape) != tuple(logits.shape):
                raise ValueError(
                    f"gumbel_noise has shape {tuple(gumbel_noise.shape)}, expected the logits' {tuple(logits.shape)}"
                )
            logits = logits + gumbel_noise.to(logits)
        elif sampling == "gumbel":
            # -log(Exp(1)) drawn exactly as torch.nn.functional.gumbel_softmax draws it
            logits = logits - torch.empty_like(logits).exponential_(generator=generator).log()
        elif sampling != "softmax":
            raise ValueError(f"resampler_sampling must be 'gumbel' or 'softmax', got {sampling!r}")
        return (logits / self.config.gumbel_temperature).softmax(dim=-1)

    def encode(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        gumbel_noise: torch.Tensor | None = None,
        resampler_sampling: str | None = None,
        return_dict: bool = True,
    ) -> V2FlowEncoderOutput | tuple:
        r"""Tokenize DC-AE latents ``[B, C, h, w]`` (already multiplied by ``config.scaling_factor``).

        ``resampler_sampling`` overrides ``config.resampler_sampling`` (``"gumbel"``: the original's
        random mixture, reproducible with ``generator`` or an explicit ``gumbel_noise [B, L, V]`` of
        Gumbel(0, 1) samples; ``"softmax"``: deterministic). Training mode always adds Gumbel noise.
        """
        self._check_latents(latents)
        features = self.connector(latents.to(self.connector.readout[0].weight.dtype))
        logits = mixture_weights = None
        if self.llm_embed_tokens is not None:
            logits = features
            mixture_weights = self._resample(logits, generator, gumbel_noise, resampler_sampling)
            pre_quantized = mixture_weights.to(self.llm_embed_tokens.dtype) @ self.llm_embed_tokens
        else:
            if gumbel_noise is not None:
                raise ValueError("gumbel_noise is only used by models with an LLM vocabulary")
            pre_quantized = features
        quantized = self.quantizer(pre_quantized)
        output = V2FlowEncoderOutput(
            latents=quantized.quantized,
            image_tokens=quantized.indices,
            logits=logits,
            mixture_weights=mixture_weights,
            pre_quantized=pre_quantized,
            commitment_loss=quantized.loss,
        )
        return output if return_dict else output.to_tuple()

    def conditions_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, L, D]`` -> per-token conditions of the MAR transformer ``[B, L, W]``."""
        return self.projector(codes.to(self.projector[0].weight.dtype))

    # ----------------------------------------------------------------------------------------------
    # detokenizer
    def random_orders(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """A random permutation of the token positions per sample ``[B, L]``."""
        scores = torch.rand(batch_size, self.config.num_tokens, generator=generator, device=device)
        return scores.argsort(dim=-1)

    def masked_transformer(self, tokens: torch.Tensor, mask: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """MAR encoder + decoder: per-token flow conditions ``[B, L, W]`` given the known tokens."""
        return self.decoder(self.encoder(tokens, mask, conditions), mask)

    def sample_flow_tokens(
        self,
        condition: torch.Tensor,
        noise: torch.Tensor,
        guidance_scale: float | torch.Tensor = 1.0,
        flow_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        ode_method: str | None = None,
    ) -> torch.Tensor:
        r"""Sample one latent token per row of ``noise [n, C]`` with the flow head.

        ``condition`` is ``[n, W]``, or ``[2n, W]`` (conditional rows, then unconditional rows) for MAR
        guidance with ``guidance_scale``; the result then has ``2n`` rows, as the original computes
        them, of which the first ``n`` are the samples. ``linear_flow``: DPM-Solver++ with its fixed
        inner guidance (``flow_guidance_scale``) against the unconditional embedding; with MAR guidance
        both halves are sampled from the same noise (the second, conditioned on the unconditional MAR
        pass, is discarded; ``guidance_scale`` is not used). ``CondOT``: an ODE solve of the
        (MAR-guided) velocity; guided, both halves are equal.
        """
        config = self.config
        count = noise.shape[0]
        if condition.shape[0] not in (count, 2 * count):
            raise ValueError(
                f"condition has {condition.shape[0]} rows for {count} noise rows; expected {count} (one per row) "
                f"or {2 * count} (conditional rows, then unconditional rows)"
            )
        guided = condition.shape[0] == 2 * count
        projected = self.flow_head.project_condition(condition)  # once for every solver step

        def velocity_model(sample, timestep, row_condition):
            return self.flow_head(sample, timestep, projected_condition=row_condition).float()

        if config.flow_method == "linear_flow":
            start = torch.cat([noise, noise]) if guided else noise
            unconditional = self.flow_head.project_condition(self.unconditional_embedding.expand(start.shape[0], -1))
            return flow_dpm_solver_sample(
                velocity_model,
                start,
                projected,
                unconditional,
                guidance_scale=config.flow_guidance_scale if flow_guidance_scale is None else flow_guidance_scale,
                num_steps=num_inference_steps or config.flow_num_inference_steps,
                shift=config.flow_shift,
                time_scale=float(config.num_train_timesteps),
            )

        if guided:
            # the state keeps both halves (equal) as the original does: the adaptive solver's error norms
            # and hence its steps then match it bit for bit
            start = torch.cat([noise, noise])

            def velocity(sample, timestep):
                guided_velocity = self.flow_head.guided_velocity(
                    sample[:count], timestep, None, guidance_scale, projected_condition=projected
                )
                return torch.cat([guided_velocity, guided_velocity])
        else:
            start = noise

            def velocity(sample, timestep):
                return velocity_model(sample, timestep.reshape(()), projected)

        method = ode_method or config.ode_method
        step_size = None
        if num_inference_steps is not None:
            if method in ADAPTIVE_ODE_METHODS:
                raise ValueError(
                    f"num_inference_steps sets the steps of a fixed-step ODE method, but ode_method={method!r} is "
                    f"adaptive (atol/rtol steer it); pick one of {FIXED_STEP_ODE_METHODS}"
                )
            step_size = 1.0 / num_inference_steps
        time_grid = torch.linspace(0, 1, config.ode_time_grid_size, device=noise.device)
        return flow_ode_sample(
            velocity, start, time_grid, method=method, atol=config.ode_atol, rtol=config.ode_rtol, step_size=step_size
        )

    @torch.no_grad()
    def sample_latent_tokens(
        self,
        conditions: torch.Tensor,
        num_ar_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        flow_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        ode_method: str | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        orders: torch.Tensor | None = None,
        return_intermediates: bool = False,
    ) -> V2FlowDecoderOutput:
        """The masked-AR loop (the original's ``sample_tokens`` after tokenization) on conditions ``[B, L, W]``."""
        config = self.config
        batch, length, channels = conditions.shape[0], config.num_tokens, config.token_dim
        device = conditions.device
        num_ar_steps = config.num_ar_steps if num_ar_steps is None else num_ar_steps
        if num_ar_steps < 1:
            raise ValueError(f"num_ar_steps must be >= 1, got {num_ar_steps}")
        guidance = config.resolved_guidance_scale(guidance_scale)
        schedule = guidance_schedule or config.guidance_schedule
        if schedule not in ("linear", "constant"):
            raise ValueError(f"guidance_schedule must be 'linear' or 'constant', got {schedule!r}")
        if noise is not None and tuple(noise.shape) != (batch, length, channels):
            raise ValueError(
                f"noise must hold one start value per token, [B, L, C] = {(batch, length, channels)}, "
                f"got {tuple(noise.shape)}"
            )
        if orders is None:
            orders = self.random_orders(batch, generator, device)
        else:
            orders = orders.to(device=device, dtype=torch.long)
            expected = torch.arange(length, device=device).expand(batch, -1)
            if tuple(orders.shape) != (batch, length) or not torch.equal(orders.sort(dim=-1).values, expected):
                raise ValueError(
                    f"orders must be one permutation of 0..{length - 1} per sample, [B, L] = {(batch, length)}"
                )

        dtype = self.encoder.token_proj.weight.dtype
        guided = guidance != 1.0
        unknown = torch.ones(batch, length, dtype=torch.bool, device=device)
        tokens = torch.zeros(batch, length, channels, dtype=torch.float32, device=device)
        unconditional = self.unconditional_embedding.to(conditions.dtype).expand(batch, length, -1)
        steps = []
        for step in range(num_ar_steps):
            mar_tokens, mar_unknown, mar_conditions = tokens, unknown, conditions
            if guided:
                mar_tokens = torch.cat([tokens, tokens])
                mar_unknown = torch.cat([unknown, unknown])
                mar_conditions = torch.cat([conditions, unconditional])
            hidden_states = self.masked_transformer(mar_tokens.to(dtype), mar_unknown.to(dtype), mar_conditions)

            # cosine schedule of the tokens left unknown; at least one revealed, one kept, per step
            still_unknown = math.floor(length * math.cos(math.pi / 2.0 * (step + 1) / num_ar_steps))
            still_unknown = max(1, min(int(unknown[0].sum()) - 1, still_unknown))
            next_unknown = torch.zeros_like(unknown).scatter(1, orders[:, :still_unknown], True)
            predicted = unknown.clone() if step == num_ar_steps - 1 else unknown & ~next_unknown
            unknown = next_unknown

            rows = torch.cat([predicted, predicted]) if guided else predicted
            condition = hidden_states[rows]
            count = int(predicted.sum())
            if noise is not None:
                step_noise = noise[predicted].to(device=device, dtype=torch.float32)
            else:
                step_noise = torch.randn(count, channels, generator=generator, device=device, dtype=torch.float32)
            if schedule == "linear":  # float32 tensor arithmetic, as the original
                revealed = length - torch.tensor(float(still_unknown), device=device)
                step_guidance = 1 + (guidance - 1) * revealed / length
            else:
                step_guidance = guidance
            computed = step_noise
            if count:
                computed = self.sample_flow_tokens(
                    condition, step_noise, step_guidance, flow_guidance_scale, num_inference_steps, ode_method
                )
                tokens = tokens.clone()
                tokens[predicted] = computed[:count]
            if return_intermediates:
                steps.append(
                    V2FlowDecodeStep(
                        mask=unknown.float(),
                        predicted=predicted,
                        decoder_hidden_states=hidden_states,
                        flow_condition=condition,
                        flow_noise=step_noise,
                        flow_samples=computed,
                    )
                )
        sample = unpatchify(tokens, (config.grid_size, config.grid_size), config.patch_size, config.latent_channels)
        return V2FlowDecoderOutput(sample=sample, orders=orders, steps=tuple(steps) if return_intermediates else None)

    def decode(
        self,
        latents: "torch.Tensor | V2FlowEncoderOutput | None" = None,
        image_tokens: torch.Tensor | None = None,
        num_ar_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        flow_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        ode_method: str | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        orders: torch.Tensor | None = None,
        return_intermediates: bool = False,
        return_dict: bool = True,
    ) -> V2FlowDecoderOutput | tuple:
        r"""Detokenize: code ids (``image_tokens [B, L]``) or code vectors (``latents [B, L, D]``, or the
        ``V2FlowEncoderOutput``) -> DC-AE latents ``[B, C, h, w]`` in model space.

        Args:
            num_ar_steps: masked-AR steps (default ``config.num_ar_steps``).
            guidance_scale / guidance_schedule: MAR classifier-free guidance (see ``V2FlowConfig``).
            flow_guidance_scale: linear_flow's inner guidance (default 4.5).
            num_inference_steps: flow-head steps: DPM-Solver++ steps for linear_flow (default 20); for
                CondOT the steps of a fixed-step ``ode_method`` (the default dopri5 is adaptive).
            ode_method: CondOT's torchdiffeq method (default ``config.ode_method``).
            generator: draws the reveal orders and the flow noise.
            noise: start values of the flow per token ``[B, L, C]`` (raster order) instead of drawing them.
            orders: reveal orders ``[B, L]`` (tokens are revealed from the *end* of each order).
            return_intermediates: also return every step's details (``steps``).
        """
        if isinstance(latents, V2FlowEncoderOutput):
            latents = latents.latents
        if (latents is None) == (image_tokens is None):
            raise ValueError("decode takes exactly one of image_tokens (code ids) or latents (code vectors)")
        if image_tokens is not None:
            codes = self._image_tokens_to_codes(image_tokens)
        else:
            expected = (self.config.num_tokens, self.config.code_dim)
            if latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
                raise ValueError(
                    f"latents (code vectors) must be [B, {expected[0]}, {expected[1]}], got shape {tuple(latents.shape)}"
                )
            codes = latents
        output = self.sample_latent_tokens(
            self.conditions_from_codes(codes),
            num_ar_steps=num_ar_steps,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            flow_guidance_scale=flow_guidance_scale,
            num_inference_steps=num_inference_steps,
            ode_method=ode_method,
            generator=generator,
            noise=noise,
            orders=orders,
            return_intermediates=return_intermediates,
        )
        return output if return_dict else output.to_tuple()

    def decode_from_indices(self, image_tokens: torch.Tensor, **kwargs) -> V2FlowDecoderOutput | tuple:
        """``decode(image_tokens=...)``: the entry point for ids produced by a language model."""
        return self.decode(image_tokens=image_tokens, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # training objective
    def random_mask(self, orders: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training mask ``[B, L]`` (1 = unknown): the first ``ceil(L * r)`` positions of each order, with
        ``r`` from a normal(1, 0.25) truncated to ``[mask_ratio_min, 1]`` (drawn by inverting its CDF)."""
        device = generator.device if generator is not None else orders.device
        uniform = torch.rand((), generator=generator, dtype=torch.float64, device=device).cpu()
        cdf_low = torch.special.ndtr(torch.tensor((self.config.mask_ratio_min - 1.0) / 0.25, dtype=torch.float64))
        ratio = 1.0 + 0.25 * float(torch.special.ndtri(cdf_low + uniform * (0.5 - cdf_low)))
        count = min(self.config.num_tokens, math.ceil(self.config.num_tokens * ratio))
        mask = torch.zeros(orders.shape, device=orders.device)
        return mask.scatter(1, orders[:, :count], 1.0)

    def linear_flow_schedule(self, timestep_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """linear_flow training point of each index in ``[0, num_train_timesteps)``: the data and noise
        weights ``1 - sigma`` and ``sigma`` (computed in float64, returned in float32) and the integer
        time the head sees, ``int(sigma * num_train_timesteps)``."""
        config = self.config
        index = timestep_index.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= config.num_train_timesteps):
            raise ValueError(f"timestep indices must be in [0, {config.num_train_timesteps})")
        sigmas = discrete_flow_sigmas(config.num_train_timesteps, config.flow_shift)  # float64, as the original
        index_cpu = index.cpu().numpy()
        alpha = torch.from_numpy(1.0 - sigmas[index_cpu]).float()
        sigma = torch.from_numpy(sigmas[index_cpu]).float()
        model_time = torch.from_numpy((sigmas * config.num_train_timesteps).astype(np.int64)[index_cpu])
        return alpha.to(index.device), sigma.to(index.device), model_time.to(index.device)

    @staticmethod
    def condot_path(target: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CondOT path point ``x_t = t x1 + (1 - t) x0`` (x0 = noise, x1 = target) and its velocity ``x1 - x0``."""
        time = t.to(target).reshape(-1, *([1] * (target.dim() - 1)))
        return (1 - time) * noise + time * target, target - noise

    def flow_loss_per_row(
        self,
        target: torch.Tensor,
        condition: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Flow-matching loss of each row (mean over channels) of ``target [N, C]`` given ``condition [N, W]``.

        ``linear_flow``: ``timesteps`` are training indices (default ``int(sigmoid(N(0, 1)) * 1000)``);
        ``x_t = (1 - sigma) x0 + sigma noise`` and the head regresses ``noise - x0`` (see
        ``linear_flow_schedule``). ``CondOT``: ``timesteps`` are times in [0, 1] (default uniform) and the
        head regresses ``x1 - noise`` at ``condot_path``.
        """
        config = self.config
        rows, device = target.shape[0], target.device
        if noise is None:
            noise = torch.randn(target.shape, generator=generator, device=device, dtype=target.dtype)
        if config.flow_method == "linear_flow":
            if timesteps is None:
                logit = torch.randn(rows, generator=generator, device=device)
                timesteps = (logit.sigmoid() * config.num_train_timesteps).long()
            alpha, sigma, model_time = self.linear_flow_schedule(timesteps)
            noisy = alpha[:, None] * target + sigma[:, None] * noise
            velocity_target = noise - target
            prediction = self.flow_head(noisy, model_time, condition)
        else:
            if timesteps is None:
                timesteps = torch.rand(rows, generator=generator, device=device)
            noisy, velocity_target = self.condot_path(target, noise, timesteps)
            prediction = self.flow_head(noisy, timesteps, condition)
        return (prediction.float() - velocity_target.float()).pow(2).mean(dim=-1)

    def forward(
        self,
        latents: torch.Tensor,
        return_loss: bool | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **decode_kwargs,
    ) -> V2FlowOutput | tuple:
        r"""Training losses, or a reconstruction.

        With ``return_loss`` (default: ``self.training``) this is the original training step: tokenize
        (Gumbel noise, EMA codebook update in training mode), mask a random ``[mask_ratio_min, 1]`` share
        of the tokens, drop each sample's condition with ``label_drop_prob``, and regress the flow on
        the masked tokens ``diffusion_batch_mul`` times; ``loss = flow + commitment``. Otherwise
        ``sample`` is ``decode(encode(latents))`` (``decode_kwargs`` go to ``decode``).
        """
        return_loss = self.training if return_loss is None else return_loss
        encoded = self.encode(latents, generator=generator)
        if not return_loss:
            decoded = self.decode(encoded, generator=generator, **decode_kwargs)
            output = V2FlowOutput(sample=decoded.sample, latents=encoded.latents, image_tokens=encoded.image_tokens)
            return output if return_dict else output.to_tuple()

        config = self.config
        conditions = self.conditions_from_codes(encoded.latents)
        target = patchify(latents, config.patch_size, layout="channels_first").detach()
        batch = target.shape[0]
        orders = self.random_orders(batch, generator, latents.device)
        mask = self.random_mask(orders, generator)
        if self.training and config.label_drop_prob > 0:
            dropped = torch.rand(batch, generator=generator, device=latents.device) < config.label_drop_prob
            conditions = torch.where(dropped[:, None, None], self.unconditional_embedding.to(conditions), conditions)
        dtype = self.encoder.token_proj.weight.dtype
        hidden_states = self.masked_transformer(target.to(dtype), mask.to(dtype), conditions)

        repeats = config.diffusion_batch_mul
        rows_target = target.reshape(-1, config.token_dim).repeat(repeats, 1)
        rows_condition = hidden_states.reshape(-1, hidden_states.shape[-1]).repeat(repeats, 1)
        rows_mask = mask.reshape(-1).repeat(repeats)
        per_row = self.flow_loss_per_row(rows_target, rows_condition, generator=generator)
        flow_loss = (per_row * rows_mask).sum() / rows_mask.sum()
        commitment = encoded.commitment_loss
        output = V2FlowOutput(
            loss=flow_loss + commitment,
            losses={"flow": flow_loss, "commitment": commitment},
            latents=encoded.latents,
            image_tokens=encoded.image_tokens,
        )
        return output if return_dict else output.to_tuple()
