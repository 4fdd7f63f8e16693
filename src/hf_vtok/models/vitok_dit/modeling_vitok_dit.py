"""ViTok-v2 class-conditional DiT (``Na-VAE/vitok-release``, ``dit-branch``: ``vitok/models/dit.py``).

A flow-matching velocity model on ViTok latent tokens: parallel attention + SwiGLU blocks (the
ViTok AE's QK-RMSNorm attention with 2D RoPE over patch rows/columns, LayerScale), modulated by one
shared projection of ``timestep embedding + class embedding`` plus a learned per-block offset,
with ``tanh``-bounded scales and gates. Optional class and register tokens are prepended (RoPE
leaves them unrotated) and dropped before the output layer; optional 2D sliding-window attention
on every other block.
"""

import math

import torch
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers looks this name up in component modules)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from ...modules import (
    Attention,
    FP32LayerNorm,
    LayerScale,
    SwiGLU,
    adaln_chunks,
    modulate,
    rope_tables_2d,
    rounded_hidden_size,
    sinusoidal_timesteps,
)
from ...publishing import HubMixin
from ...utils.prepack import enable_fast_linear
from ...utils.validation import check_attention_heads, check_positive
from ..vitok.modeling_vitok import token_positions

NUM_MODULATIONS = 4  # shift, scale, attention gate, MLP gate


def sliding_window_mask(num_special_tokens: int, grid_side: int, window: int, device=None) -> torch.Tensor:
    """SDPA boolean mask: patch tokens attend within a ``(2 * window + 1)``-box of the square patch grid;
    special tokens attend and are attended to everywhere."""
    length = num_special_tokens + grid_side * grid_side
    index = torch.arange(length, device=device)
    patch = index - num_special_tokens
    row, col = patch // grid_side, patch % grid_side
    box = ((row[:, None] - row[None, :]).abs() <= window) & ((col[:, None] - col[None, :]).abs() <= window)
    special = (index[:, None] < num_special_tokens) | (index[None, :] < num_special_tokens)
    return box | special


class ViTokDiTBlock(nn.Module):
    def __init__(self, config, sliding_window: int | None):
        super().__init__()
        hidden = config.hidden_size
        self.sliding_window = sliding_window
        self.mod_tanh = float(config.mod_tanh or 0.0)
        self.norm = FP32LayerNorm(hidden, eps=config.norm_eps, elementwise_affine=False)
        self.attn = Attention(hidden, config.num_attention_heads, qk_norm=True, norm_eps=config.norm_eps)
        self.mlp = SwiGLU(hidden, rounded_hidden_size(hidden, config.mlp_ratio, config.mlp_multiple_of))
        self.modulation = nn.Parameter(torch.zeros(1, NUM_MODULATIONS, hidden))
        self.layer_scale = LayerScale(hidden, config.layer_scale_init) if config.use_layer_scale else nn.Identity()

    def forward(self, hidden_states, shared_modulation, rotary, attention_mask=None):
        """``shared_modulation``: the model's ``(shift, scale, gate_attn, gate_mlp)``, each ``[B, 1, D]``; the block
        adds its own learned offsets."""
        shift, scale, gate_attn, gate_mlp = (
            shared + offset for shared, offset in zip(shared_modulation, self.modulation.unbind(dim=1))
        )
        if self.mod_tanh > 0:
            scale = torch.tanh(scale) * self.mod_tanh
            gate_attn = torch.tanh(gate_attn) * self.mod_tanh
            gate_mlp = torch.tanh(gate_mlp) * self.mod_tanh
        modulated = modulate(self.norm(hidden_states), shift, scale)
        update = gate_attn * self.attn(modulated, rotary, attention_mask) + gate_mlp * self.mlp(modulated)
        return hidden_states + self.layer_scale(update)


class ViTokDiTFinalLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = FP32LayerNorm(config.hidden_size, eps=config.norm_eps, elementwise_affine=False)
        self.linear = nn.Linear(config.hidden_size, config.in_channels)

    def forward(self, hidden_states, shift, scale):
        """``shift`` / ``scale`` ``[B, 1, D]``: computed by the model from its shared conditioning."""
        return self.linear(modulate(self.norm(hidden_states), shift, scale))


class ViTokDiTTransformerModel(HubMixin, ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""ViTok-v2 DiT: class-conditional velocity model on ViTok latent tokens (``ViTokDiTPipeline``).

    Args:
        in_channels: channels per latent token (the AE's ``latent_channels``; original ``code_width``).
        hidden_size / num_layers / num_attention_heads: width, depth, heads (original ``width / depth / num_heads``).
        num_classes: class labels; id ``num_classes`` is the null class of classifier-free guidance
            (original ``text_dim``).
        num_tokens: default number of latent tokens to generate (a square grid); any count works at run time.
        mlp_ratio / mlp_multiple_of: SwiGLU hidden size ``int(width * mlp_ratio)`` rounded to a multiple (2.67 / 16).
        mod_tanh: bound of the ``tanh``-squashed scales and gates (3.0; 0 disables the squashing).
        class_token / num_register_tokens: learned tokens prepended to the latents.
        use_layer_scale / layer_scale_init: LayerScale on the residual branch.
        sliding_window / sliding_window_every: 2D box attention of this radius on every n-th block (None: full).
        rope_theta / norm_eps / frequency_embedding_size: RoPE base, norm epsilon, timestep embedding size.

    ``forward(hidden_states [B, L, C], timestep [B] on the 0..1000 scale (``sigma * 1000``), class_labels
    [B] or [B, 1], row_idx / col_idx [B, L] or [L] patch positions (inferred for a square grid))``
    returns ``Transformer2DModelOutput(sample=[B, L, C])``, the velocity ``noise - x_0``.
    """

    # LoRA targets for peft's ``LoraConfig(target_modules=list(model.lora_target_modules))``: the fused attention
    # and the MLP projections of every block (diffusers' stock ``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0`` name
    # no layer here)
    lora_target_modules = ("qkv_proj", "out_proj", "fc1", "fc2")
    _supports_gradient_checkpointing = True
    _no_split_modules = ["ViTokDiTBlock"]
    _skip_layerwise_casting_patterns = ["norm"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 16,
        hidden_size: int = 1024,
        num_layers: int = 24,
        num_attention_heads: int = 16,
        num_classes: int = 1000,
        num_tokens: int = 256,
        mlp_ratio: float = 2.67,
        mlp_multiple_of: int = 16,
        mod_tanh: float = 3.0,
        class_token: bool = False,
        num_register_tokens: int = 0,
        use_layer_scale: bool = True,
        layer_scale_init: float = 1e-4,
        sliding_window: int | None = None,
        sliding_window_every: int = 2,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-6,
        frequency_embedding_size: int = 256,
    ):
        super().__init__()
        check_positive(self.config, "in_channels", "hidden_size", "num_layers", "num_attention_heads", "num_classes")
        check_attention_heads(self.config, "hidden_size", "num_attention_heads", head_dim_multiple=4)
        if num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {num_register_tokens}")
        if sliding_window is not None and (sliding_window < 0 or sliding_window_every < 1):
            raise ValueError(
                "sliding_window must be >= 0 and sliding_window_every >= 1, "
                f"got {sliding_window}, {sliding_window_every}"
            )
        self.proj_in = nn.Linear(in_channels, hidden_size, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if class_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, hidden_size)) if num_register_tokens else None
        )
        self.time_proj = sinusoidal_timesteps(frequency_embedding_size)
        self.time_embedding = TimestepEmbedding(frequency_embedding_size, hidden_size)
        self.class_embedding = nn.Embedding(num_classes + 1, hidden_size)
        self.modulation_proj = nn.Linear(hidden_size, NUM_MODULATIONS * hidden_size, bias=False)
        self.head_modulation_proj = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.blocks = nn.ModuleList(
            ViTokDiTBlock(
                self.config,
                sliding_window if sliding_window is not None and (index + 1) % sliding_window_every == 0 else None,
            )
            for index in range(num_layers)
        )
        self.final_layer = ViTokDiTFinalLayer(self.config)
        self.gradient_checkpointing = False
        enable_fast_linear(self)  # oneDNN linears for CPU inference; weights, state dict and training unchanged

    @property
    def num_special_tokens(self) -> int:
        return int(self.config.class_token) + self.config.num_register_tokens

    @property
    def null_class_label(self) -> int:
        return self.config.num_classes

    def _rotary(self, row_idx, col_idx):
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos, sin = rope_tables_2d(row_idx, col_idx, head_dim, self.config.rope_theta)
        special = self.num_special_tokens
        if special:  # identity rotation for class / register tokens
            batch = cos.shape[0]
            cos = torch.cat([cos.new_ones(batch, special, cos.shape[-1]), cos], dim=1)
            sin = torch.cat([sin.new_zeros(batch, special, sin.shape[-1]), sin], dim=1)
        return cos, sin

    def _attention_masks(self, length, device):
        windows = {block.sliding_window for block in self.blocks if block.sliding_window is not None}
        if not windows:
            return {}
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"sliding-window attention needs a square token grid, got {length} tokens")
        return {window: sliding_window_mask(self.num_special_tokens, side, window, device) for window in windows}

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.LongTensor,
        row_idx: torch.LongTensor | None = None,
        col_idx: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple:
        config = self.config
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != config.in_channels:
            raise ValueError(
                f"hidden_states must be [B, L, {config.in_channels}], got shape {tuple(hidden_states.shape)}"
            )
        batch, length, _ = hidden_states.shape
        device = hidden_states.device
        timestep = torch.as_tensor(timestep, device=device)
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)
        if tuple(timestep.shape) != (batch,):
            raise ValueError(f"timestep must be a scalar or have shape ({batch},), got {tuple(timestep.shape)}")
        class_labels = torch.as_tensor(class_labels, device=device)
        if class_labels.dim() == 2 and class_labels.shape[1] == 1:
            class_labels = class_labels.squeeze(1)
        if class_labels.dtype.is_floating_point or tuple(class_labels.shape) != (batch,):
            raise ValueError(
                f"class_labels must be integer ids of shape ({batch},) or ({batch}, 1), "
                f"got {tuple(class_labels.shape)}"
            )
        if not torch.compiler.is_compiling() and bool(
            ((class_labels < 0) | (class_labels > config.num_classes)).any()
        ):
            raise ValueError(
                f"class_labels {class_labels.tolist()} out of range: expected 0..{config.num_classes - 1} "
                f"or the null class {config.num_classes}"
            )
        rotary = self._rotary(*token_positions("hidden_states", batch, length, row_idx, col_idx, device))
        dtype = self.proj_in.weight.dtype

        hidden_states = self.proj_in(hidden_states.to(dtype))
        special = [
            token.expand(batch, -1, -1) for token in (self.cls_token, self.register_tokens) if token is not None
        ]
        if special:
            hidden_states = torch.cat([*special, hidden_states], dim=1)
        frequencies = self.time_proj(timestep)  # [cos | sin], float32
        conditioning = F.silu(self.time_embedding(frequencies.to(dtype)) + self.class_embedding(class_labels))
        shared_modulation = adaln_chunks(self.modulation_proj, conditioning, NUM_MODULATIONS, activation=False)
        head_shift, head_scale = adaln_chunks(self.head_modulation_proj, conditioning, 2, activation=False)
        if config.mod_tanh:
            head_scale = torch.tanh(head_scale) * config.mod_tanh

        masks = self._attention_masks(hidden_states.shape[1] - self.num_special_tokens, device)
        for block in self.blocks:
            mask = masks.get(block.sliding_window)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, shared_modulation, rotary, mask
                )
            else:
                hidden_states = block(hidden_states, shared_modulation, rotary, mask)
        output = self.final_layer(hidden_states[:, self.num_special_tokens :], head_shift, head_scale)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)
