"""DiT (ADM-style, learned sigma) on 1D latent token sequences, and the backbone it shares with SiT.

The SoftVQ-VAE / MAETok generators (``Hhhhhhao/continuous_tokenizer``: ``modelling/dit.py``,
``modelling/sit.py``) run a DiT on the tokenizer's 1D latents ``[B, L, C]``: a per-token linear
input projection plus a frozen interleaved sin-cos table, adaLN-Zero blocks conditioned on
``timestep embedding + class embedding``, and an adaLN final layer. SiT and DiT share that network;
they differ in the time they take (flow time in [0, 1] for SiT, integer DDPM step for DiT) and in
the output (DiT with ``learn_sigma`` returns ``[eps | variance values]`` on the channel dimension).
"""

import torch
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers looks this name up in component modules)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.embeddings import LabelEmbedding, TimestepEmbedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ...modules import (
    GELUMLP,
    TIMESTEP_FREQUENCY_DIM,
    AdaLNFinalLayer,
    Attention,
    adaln_chunks,
    gated_residual,
    modulate,
    sincos_1d_interleaved,
    sinusoidal_timesteps,
)
from ...publishing import HubMixin
from ...utils.prepack import enable_fast_linear
from ...utils.validation import check_attention_heads, check_positive


class DiTBlock(nn.Module):
    """adaLN-Zero block: non-affine LayerNorms modulated by ``(shift, scale, gate)`` from the conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        # timm's qk-norm is an affine LayerNorm with torch's default eps; float32 attention in the
        # original's explicit order (the sequences are short: 32..256 tokens)
        self.attn = Attention(
            hidden_size,
            num_heads,
            qkv_bias=True,
            out_bias=True,
            qk_norm="layer" if qk_norm else False,
            norm_eps=1e-5,
            eager_float32=True,
        )
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = GELUMLP(hidden_size, int(hidden_size * mlp_ratio), bias=True, approximate="tanh")
        self.modulation = nn.Linear(hidden_size, 6 * hidden_size)

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """``conditioning`` is ``silu(timestep embedding + class embedding)``, ``[B, D]``."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_chunks(
            self.modulation, conditioning, 6, activation=False
        )
        attended = self.attn(modulate(self.norm1(hidden_states), shift_msa, scale_msa))
        hidden_states = gated_residual(hidden_states, gate_msa, attended)
        return gated_residual(
            hidden_states, gate_mlp, self.mlp(modulate(self.norm2(hidden_states), shift_mlp, scale_mlp))
        )


class ClassConditionalTransformer1DModel(HubMixin, ModelMixin, ConfigMixin, PeftAdapterMixin):
    """Shared network and ``forward`` of ``SiTTransformer1DModel`` and ``DiTTransformer1DModel``.

    Subclasses declare their own ``@register_to_config __init__`` (their config keys) and call ``_build``.
    """

    # LoRA targets for peft's ``LoraConfig(target_modules=list(model.lora_target_modules))``: the fused attention
    # and the MLP projections of every block (diffusers' stock ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0`` name
    # no layer here)
    lora_target_modules = ("qkv_proj", "out_proj", "fc1", "fc2")
    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]
    _skip_layerwise_casting_patterns = ["pos_embed", "norm"]

    def _build(self, out_channels: int) -> None:
        """The network of ``self.config`` (registered by the subclass's ``__init__``), ``out_channels`` wide."""
        config = self.config
        check_positive(
            config, "in_channels", "num_tokens", "hidden_size", "num_layers", "num_attention_heads", "num_classes"
        )
        check_attention_heads(config, "hidden_size", "num_attention_heads")
        hidden_size = config.hidden_size
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even for the sin-cos position table, got {hidden_size}")
        if not 0.0 <= config.class_dropout_prob < 1.0:
            raise ValueError(f"class_dropout_prob must be in [0, 1), got {config.class_dropout_prob}")
        self.proj_in = nn.Linear(config.in_channels, hidden_size)
        # frozen sin-cos table; saved with the weights as the original does
        self.register_buffer("pos_embed", sincos_1d_interleaved(config.num_tokens, hidden_size).unsqueeze(0))
        self.time_proj = sinusoidal_timesteps(TIMESTEP_FREQUENCY_DIM)
        self.time_embedding = TimestepEmbedding(TIMESTEP_FREQUENCY_DIM, hidden_size)
        # class_dropout_prob > 0 adds the null class (id num_classes) used for classifier-free guidance
        self.class_embedding = LabelEmbedding(config.num_classes, hidden_size, config.class_dropout_prob)
        qk_norm = getattr(config, "qk_norm", False)  # a SiT option
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, config.num_attention_heads, config.mlp_ratio, qk_norm)
            for _ in range(config.num_layers)
        )
        # the conditioning reaches the blocks and the final layer already SiLU-ed
        self.final_layer = AdaLNFinalLayer(hidden_size, out_channels, activation=False)
        self.gradient_checkpointing = False
        enable_fast_linear(self)  # oneDNN linears for CPU inference; weights, state dict and training unchanged

    @property
    def null_class_label(self) -> int | None:
        """The class id meaning "no class" (for classifier-free guidance), or None if the model has none."""
        return self.config.num_classes if self.config.class_dropout_prob > 0 else None

    def _check_inputs(self, hidden_states, timestep, class_labels):
        config = self.config
        if hidden_states.dim() != 3 or tuple(hidden_states.shape[1:]) != (config.num_tokens, config.in_channels):
            raise ValueError(
                f"hidden_states must be [B, {config.num_tokens}, {config.in_channels}] latent tokens, "
                f"got shape {tuple(hidden_states.shape)}"
            )
        batch = hidden_states.shape[0]
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)
        if tuple(timestep.shape) != (batch,):
            raise ValueError(f"timestep must be a scalar or have shape ({batch},), got {tuple(timestep.shape)}")
        class_labels = torch.as_tensor(class_labels, device=hidden_states.device)
        if class_labels.dim() == 2 and class_labels.shape[1] == 1:
            class_labels = class_labels.squeeze(1)
        if class_labels.dtype.is_floating_point or tuple(class_labels.shape) != (batch,):
            raise ValueError(
                f"class_labels must be integer ids of shape ({batch},) or ({batch}, 1), got {class_labels.dtype} "
                f"{tuple(class_labels.shape)}"
            )
        if not torch.compiler.is_compiling():
            rows = self.class_embedding.embedding_table.num_embeddings
            if bool(((class_labels < 0) | (class_labels >= rows)).any()):
                null = f" or the null class {config.num_classes}" if rows > config.num_classes else ""
                raise ValueError(
                    f"class_labels {class_labels.tolist()} out of range: expected 0..{config.num_classes - 1}{null}"
                )
        return timestep, class_labels

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.LongTensor,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple:
        """``timestep``: SiT flow time in [0, 1] or DiT integer DDPM step, a scalar or ``[B]``; ``class_labels``
        ``[B]`` or ``[B, 1]``."""
        timestep, class_labels = self._check_inputs(hidden_states, timestep, class_labels)
        dtype = self.proj_in.weight.dtype
        hidden_states = self.proj_in(hidden_states.to(dtype)) + self.pos_embed.to(dtype)
        frequencies = self.time_proj(timestep)  # [cos | sin], float32
        conditioning = self.time_embedding(frequencies.to(dtype)) + self.class_embedding(class_labels)
        conditioning = F.silu(conditioning)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, conditioning)
            else:
                hidden_states = block(hidden_states, conditioning)
        output = self.final_layer(hidden_states, conditioning)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)


class DiTTransformer1DModel(ClassConditionalTransformer1DModel):
    r"""Class-conditional DiT on 1D latent tokens, for ADM Gaussian diffusion (``DiT1DPipeline``).

    Args:
        in_channels: channels per latent token (the tokenizer's latent size).
        num_tokens: latent tokens per image (the tokenizer's number of 1D tokens).
        hidden_size / num_layers / num_attention_heads / mlp_ratio: transformer size (DiT-XL: 1152 / 28 / 16 / 4).
        num_classes: class labels; ``class_dropout_prob > 0`` adds the null class ``num_classes``
            (dropped labels while training, the unconditional branch of classifier-free guidance).
        learn_sigma: output ``[eps | variance values]`` (``2 * in_channels`` channels, last dimension)
            for the learned-range variance of ADM; otherwise ``eps`` only.

    ``forward(hidden_states [B, L, C], timestep [B] integer DDPM steps 0..999, class_labels [B] or [B, 1])``
    returns ``Transformer2DModelOutput(sample=[B, L, out_channels])``.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 32,
        num_tokens: int = 64,
        hidden_size: int = 1152,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = True,
    ):
        super().__init__()
        self._build(out_channels=2 * in_channels if learn_sigma else in_channels)

    @property
    def out_channels(self) -> int:
        return 2 * self.config.in_channels if self.config.learn_sigma else self.config.in_channels
