"""V²Flow: DC-AE latents -> visual tokens in an LLM's vocabulary space -> DC-AE latents.

Tokenizer: a spatial-temporal connector (two RegNet stages) scores every LLM vocabulary row per
latent cell, a Gumbel-softmax mixture of the frozen LLM ``embed_tokens`` rows gives a vector in the
LLM embedding space, and a cosine-similarity EMA codebook turns it into one token id per cell.
Detokenizer: the code vectors, projected to the transformer width, condition a masked
autoregressive (MAR) encoder/decoder that reveals the latent tokens over a few steps in random
order; a per-token MLP flow head samples each revealed token (``linear_flow`` with DPM-Solver++,
or ``CondOT`` with an adaptive ODE solve). The sampling loop is in ``sampling_v2flow``, the
flow-matching paths and loss in ``hf_vtok.flow.matching``; this file holds the networks.
"""

import inspect
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from ...flow import classifier_free_guidance, condot_path, flow_matching_loss_per_row, linear_flow_schedule
from ...modeling_outputs import VisualTokenizerEncoderOutput, VisualTokenizerOutput
from ...modeling_utils import VisualTokenizerPreTrainedModel
from ...modules import (
    GELUMLP,
    AdaLNFinalLayer,
    Attention,
    adaln_chunks,
    gated_residual,
    modulate,
    patchify,
    sinusoidal_timesteps,
)
from ...quantizers import CosineEMAVectorQuantizer
from .configuration_v2flow import V2FlowConfig
from .llm_vocabulary import load_llm_vocabulary
from .sampling_v2flow import V2FlowDecoderOutput, V2FlowSamplingMixin


@dataclass
class V2FlowEncoderOutput(VisualTokenizerEncoderOutput):
    r"""Result of ``V2FlowModel.encode``.

    Args:
        latents: the quantized code vectors ``[B, L, D]`` (unit norm; ``D`` is the LLM embedding width),
            what ``decode(latents=...)`` takes.
        image_tokens: token ids ``[B, L]`` (codebook rows) in raster order over the latent grid.
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

    def forward(self, hidden_states: torch.Tensor, states: list | None = None) -> torch.Tensor:
        """``states``: a list that collects each block's output as raster tokens ``[B, H*W, C]``."""
        for block in self.children():
            hidden_states = block(hidden_states)
            if states is not None:
                states.append(hidden_states.flatten(2).transpose(1, 2))
                # the next block reads the collected tokens back, so gradients reach them (retain_grad)
                hidden_states = states[-1].transpose(1, 2).unflatten(2, hidden_states.shape[2:])
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

    def forward(
        self, latents: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """``(features [B, H*W, out], hidden_states)``: with ``output_hidden_states`` every bottleneck's output as
        raster tokens ``[B, H*W, hidden]``, the first one (the stem, ``s1.b1``) first."""
        states = [] if output_hidden_states else None
        features = self.s2(self.sampler(self.s1(latents, states)), states)
        return self.readout(features.flatten(2).transpose(1, 2)), tuple(states) if output_hidden_states else None


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
        batch = tokens.shape[0]  # (an empty batch has no row to infer the count of known tokens from)
        hidden_states = hidden_states[visible].reshape(batch, -1 if batch else 0, hidden_states.shape[-1])
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
    """adaLN residual MLP on one token per row: ``x + gate * mlp(modulate(norm(x), shift, scale))``."""

    def __init__(self, width: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Linear(width, 3 * width)

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = adaln_chunks(self.modulation, conditioning, 3, broadcast_over_tokens=False)
        return gated_residual(hidden_states, gate, self.mlp(modulate(self.norm(hidden_states), shift, scale)))


class V2FlowHead(nn.Module):
    """``velocity = head(x [N, C], t [N], condition [N, W])`` for one token per row.

    ``t`` is fed as is to a 256-frequency ``[cos | sin]`` embedding: ``sigma * 1000`` for
    linear_flow, ``t`` in [0, 1] for CondOT.
    """

    frequency_channels = 256

    def __init__(self, config: V2FlowConfig):
        super().__init__()
        width, eps = config.flow_head_width, config.layer_norm_eps
        self.time_proj = sinusoidal_timesteps(self.frequency_channels)
        self.time_embedding = TimestepEmbedding(self.frequency_channels, width)
        self.condition_proj = nn.Linear(config.hidden_size, width)
        self.input_proj = nn.Linear(config.token_dim, width)
        self.res_blocks = nn.ModuleList(V2FlowHeadResBlock(width, eps) for _ in range(config.flow_head_depth))
        self.final_layer = AdaLNFinalLayer(width, config.token_dim, norm_eps=eps, broadcast_over_tokens=False)
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
        frequencies = self.time_proj(timestep.reshape(-1).expand(sample.shape[0]))
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
        return classifier_free_guidance(conditional, unconditional, guidance_scale)


# --------------------------------------------------------------------------------------------------


# what decode passes on to the masked-AR loop (sample_latent_tokens), besides the conditions and the generator
_SAMPLING_SETTINGS = tuple(
    name
    for name in inspect.signature(V2FlowSamplingMixin.sample_latent_tokens).parameters
    if name not in ("self", "conditions", "generator")
)


class V2FlowModel(VisualTokenizerPreTrainedModel, V2FlowSamplingMixin):
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
    # the first layer the DC-AE latents go through: the connector's stem bottleneck (latent channels -> its width)
    _input_embeddings = "connector.s1.b1"
    # encode takes scaled DC-AE latents, of no fixed range: only finite values are checked
    input_value_range = None
    input_value_hint = (
        "encode takes DC-AE latents multiplied by config.scaling_factor (V2FlowPipeline computes them from images)"
    )

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
        self._reset_buffers()
        self.post_init()

    # The first codebook and the stand-in vocabulary are drawn from fixed seeds, in __init__ and again in
    # _init_weights (after a meta-device build), so that both give the same buffers.
    _BUFFER_SEEDS = {"codebook": 0, "llm_embed_tokens": 1}

    @staticmethod
    def _seeded(tensor: torch.Tensor, seed: int) -> torch.Generator:
        device = "cpu" if tensor.device.type == "meta" else tensor.device
        return torch.Generator(device).manual_seed(seed)

    @torch.no_grad()
    def _reset_buffers(self, codebook: bool = True, vocabulary: bool = True) -> None:
        """Random unit codes with unit cluster sizes in the quantizer, and the stand-in LLM vocabulary
        (``normal(0, 0.02)``; load the real one with ``load_llm_vocabulary``), from ``_BUFFER_SEEDS``."""
        if codebook:
            self.quantizer.reset_codebook(self._seeded(self.quantizer.codebook, self._BUFFER_SEEDS["codebook"]))
        if vocabulary and self.llm_embed_tokens is not None:
            seed = self._BUFFER_SEEDS["llm_embed_tokens"]
            self.llm_embed_tokens.normal_(0.0, 0.02, generator=self._seeded(self.llm_embed_tokens, seed))

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
        elif isinstance(module, V2FlowModel):
            init.normal_(module.unconditional_embedding, std=0.02)
            module._reset_buffers(
                codebook=not getattr(module.quantizer.codebook, "_is_hf_initialized", False),
                vocabulary=not getattr(module.llm_embed_tokens, "_is_hf_initialized", False),
            )

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

    def _latents_from_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, L]`` (or ``[B, h, w]``) -> their code vectors ``[B, L, D]``."""
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
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> V2FlowEncoderOutput | tuple:
        r"""Tokenize DC-AE latents ``[B, C, h, w]`` (already multiplied by ``config.scaling_factor``).

        ``resampler_sampling`` overrides ``config.resampler_sampling`` (``"gumbel"``: the original's
        random mixture, reproducible with ``generator`` or an explicit ``gumbel_noise [B, L, V]`` of
        Gumbel(0, 1) samples; ``"softmax"``: deterministic). Training mode always adds Gumbel noise.
        ``hidden_states``: the connector's states (``V2FlowConnector.forward``) when asked.
        """
        self._check_latents(latents)
        self._check_input_values(latents)
        if gumbel_noise is not None and self.llm_embed_tokens is None:
            raise ValueError("gumbel_noise is only used by models with an LLM vocabulary")

        def mixture(latents, gumbel_noise):
            features, hidden_states = self.connector(
                latents.to(self.connector.readout[0].weight.dtype), output_hidden_states
            )
            if self.llm_embed_tokens is None:
                return features, None, None, hidden_states
            weights = self._resample(features, generator, gumbel_noise, resampler_sampling)
            return weights.to(self.llm_embed_tokens.dtype) @ self.llm_embed_tokens, features, weights, hidden_states

        # with enable_slicing() one sample at a time up to the quantizer, whose EMA update sees the whole batch
        pre_quantized, logits, mixture_weights, hidden_states = self._batch_sliced(mixture, latents, gumbel_noise)
        quantized = self.quantizer(pre_quantized)
        output = V2FlowEncoderOutput(
            latents=quantized.quantized,
            image_tokens=quantized.indices,
            logits=logits,
            mixture_weights=mixture_weights,
            pre_quantized=pre_quantized,
            commitment_loss=quantized.loss,
            hidden_states=hidden_states,
        )
        return output if return_dict else output.to_tuple()

    def conditions_from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[B, L, D]`` -> per-token conditions of the MAR transformer ``[B, L, W]``."""
        return self.projector(latents.to(self.projector[0].weight.dtype))

    # ----------------------------------------------------------------------------------------------
    # detokenizer
    def masked_transformer(self, tokens: torch.Tensor, mask: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """MAR encoder + decoder: per-token flow conditions ``[B, L, W]`` given the known tokens."""
        return self.decoder(self.encoder(tokens, mask, conditions), mask)

    def decode(
        self,
        latents: "torch.Tensor | V2FlowEncoderOutput | None" = None,
        image_tokens: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **sampling_kwargs,
    ) -> V2FlowDecoderOutput | tuple:
        r"""Detokenize: token ids (``image_tokens [B, L]``) or code vectors (``latents [B, L, D]``, or the
        ``V2FlowEncoderOutput``) -> DC-AE latents ``[B, C, h, w]`` in model space.

        ``generator`` draws the reveal orders and the flow noise; ``sampling_kwargs`` are the masked-AR loop's
        settings, documented in ``sample_latent_tokens``: ``num_ar_steps``, ``guidance_scale``,
        ``guidance_schedule``, ``flow_guidance_scale``, ``num_inference_steps``, ``ode_method``, ``noise``,
        ``orders``, ``return_intermediates``.
        """
        if isinstance(latents, V2FlowEncoderOutput):
            latents = latents.latents
        if (latents is None) == (image_tokens is None):
            raise ValueError("decode takes exactly one of image_tokens (token ids) or latents (code vectors)")
        if image_tokens is not None:
            latents = self._latents_from_image_tokens(image_tokens)
        else:
            expected = (self.config.num_tokens, self.config.code_dim)
            if latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
                raise ValueError(
                    f"latents (code vectors) must be [B, {expected[0]}, {expected[1]}], "
                    f"got shape {tuple(latents.shape)}"
                )
        self._check_sampling_settings(sampling_kwargs)
        conditions = self.conditions_from_latents(latents)
        if not self.use_slicing:
            output = self.sample_latent_tokens(conditions, generator=generator, **sampling_kwargs)
            return output if return_dict else output.to_tuple()
        if sampling_kwargs.get("return_intermediates"):
            raise ValueError("decode(return_intermediates=True) needs the whole batch: call disable_slicing() first")
        # one sample at a time on the orders of the whole batch; the flow noise is drawn per sample unless given
        orders = sampling_kwargs.pop("orders", None)
        if orders is None:
            orders = self.random_orders(conditions.shape[0], generator, conditions.device)
        noise = sampling_kwargs.pop("noise", None)
        output = self._batch_sliced(
            lambda conditions, orders, noise: self.sample_latent_tokens(
                conditions, generator=generator, orders=orders, noise=noise, **sampling_kwargs
            ),
            conditions,
            orders,
            noise,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _check_sampling_settings(settings: dict) -> None:
        unknown = sorted(set(settings) - set(_SAMPLING_SETTINGS))
        if unknown:
            raise TypeError(
                f"V2FlowModel got unexpected keyword arguments {unknown}; the sampling settings decode takes are "
                f"{list(_SAMPLING_SETTINGS)}"
            )

    def decode_from_indices(self, image_tokens: torch.Tensor, **kwargs) -> V2FlowDecoderOutput | tuple:
        """Deprecated: ``decode(image_tokens=...)``, which takes the ids of a language model too."""
        warnings.warn(
            "V2FlowModel.decode_from_indices is deprecated; use decode(image_tokens=...)", FutureWarning, stacklevel=2
        )
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
        """``hf_vtok.flow.linear_flow_schedule`` with this model's ``num_train_timesteps`` and ``flow_shift``."""
        return linear_flow_schedule(timestep_index, self.config.num_train_timesteps, self.config.flow_shift)

    condot_path = staticmethod(condot_path)

    def flow_loss_per_row(
        self,
        target: torch.Tensor,
        condition: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Flow-matching loss of the flow head on each row (mean over channels) of ``target [N, C]`` given MAR
        conditions ``condition [N, W]``, on ``config.flow_method``'s path (see ``hf_vtok.flow.matching``):
        ``timesteps`` are training indices for ``linear_flow``, times in [0, 1] for ``CondOT``."""
        config = self.config
        return flow_matching_loss_per_row(
            lambda noisy, model_time: self.flow_head(noisy, model_time, condition),
            target,
            path=config.flow_method,
            noise=noise,
            timesteps=timesteps,
            num_train_timesteps=config.num_train_timesteps,
            shift=config.flow_shift,
            generator=generator,
        )

    def forward(
        self,
        latents: torch.Tensor,
        return_loss: bool | None = None,
        generator: torch.Generator | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
        **decode_kwargs,
    ) -> V2FlowOutput | tuple:
        r"""Training losses, or a reconstruction.

        With ``return_loss`` (default: ``self.training``) this is the original training step: tokenize
        (Gumbel noise, EMA codebook update in training mode), mask a random ``[mask_ratio_min, 1]`` share
        of the tokens, drop each sample's condition with ``label_drop_prob``, and regress the flow on
        the masked tokens ``diffusion_batch_mul`` times; ``loss = flow + commitment``. Otherwise
        ``sample`` is ``decode(encode(latents))`` (``decode_kwargs``, the sampling settings, go to ``decode``).
        ``hidden_states``: the connector's states when asked.
        """
        return_loss = self.training if return_loss is None else return_loss
        output_hidden_states = self._output_hidden_states(output_hidden_states)
        encoded = self.encode(latents, generator=generator, output_hidden_states=output_hidden_states)
        if not return_loss:
            decoded = self.decode(encoded, generator=generator, **decode_kwargs)
            output = V2FlowOutput(
                sample=decoded.sample,
                latents=encoded.latents,
                image_tokens=encoded.image_tokens,
                hidden_states=encoded.hidden_states,
            )
            return output if return_dict else output.to_tuple()
        self._check_sampling_settings(decode_kwargs)  # the loss takes none of them

        config = self.config
        conditions = self.conditions_from_latents(encoded.latents)
        target = patchify(latents, config.patch_size, layout="channels_first").detach()
        batch = target.shape[0]
        orders = self.random_orders(batch, generator, latents.device)
        mask = self.random_mask(orders, generator)
        if self.training and config.label_drop_prob > 0:
            dropped = torch.rand(batch, generator=generator, device=latents.device) < config.label_drop_prob
            conditions = torch.where(dropped[:, None, None], self.unconditional_embedding.to(conditions), conditions)
        hidden_states = self.masked_transformer(target, mask, conditions)

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
            hidden_states=encoded.hidden_states,
        )
        return output if return_dict else output.to_tuple()
