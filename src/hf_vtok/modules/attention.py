"""Multi-head self-attention on ``torch.nn.functional.scaled_dot_product_attention``.

bfloat16 inference on CPU takes another path (``attention``): torch's CPU flash kernel reaches ~120-160 GFLOP/s in
bfloat16 at the sequence lengths of these models (64-1280 tokens, 2 threads), while bfloat16 matrix products
(float32 accumulation) with a softmax between them, in blocks of query rows, reach 300-400 GFLOP/s
(benchmarks/bench_attention.py).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.prepack import eager_cpu_inference
from ..utils.switches import env_switch
from .norms import RMSNorm
from .rope import apply_rotary_embedding

FAST_ATTENTION = env_switch("HF_VTOK_FAST_ATTENTION")
# the [batch, heads, rows, keys] score block of one step: small enough to stay in the caches (4 MiB was the best of
# 1-16 MiB at 256-1280 keys in benchmarks/bench_attention.py), at least 16 query rows
SCORE_BLOCK_BYTES = 4 * 2**20
MIN_BLOCK_ROWS = 16


def padding_attention_mask(patch_mask: torch.Tensor | None, pairwise: bool = False) -> torch.Tensor | None:
    """SDPA boolean mask (True = attend) from a ``[B, N]`` validity mask.

    The default key-padding form ``[B, 1, 1, N]`` stops every query from attending to padding;
    valid tokens then get exactly what the pairwise form ``[B, 1, N, N]`` (``valid_i & valid_j``)
    gives, but padding queries still see the valid keys, so no row is fully masked (fully masked
    rows are NaN on some SDPA kernels). Padding outputs are meaningless in both forms.
    """
    if patch_mask is None:
        return None
    patch_mask = patch_mask.bool()
    if pairwise:
        return (patch_mask[:, :, None] & patch_mask[:, None, :]).unsqueeze(1)
    return patch_mask[:, None, None, :]


def _qk_norm(kind: bool | str, head_dim: int, eps: float) -> nn.Module | None:
    if kind is False or kind is None:
        return None
    if kind is True or kind == "rms":
        return RMSNorm(head_dim, eps=eps)
    if kind == "layer":
        return nn.LayerNorm(head_dim, eps=eps)
    raise ValueError(f"unknown qk_norm {kind!r}; expected False, True / 'rms' or 'layer'")


def _eager_attention(query, key, value, attention_mask=None, scale=None, dropout=0.0):
    """``softmax((q * scale) @ k^T) @ v`` with SDPA's mask semantics (boolean: True = attend; float: added)."""
    scores = (query * (query.shape[-1] ** -0.5 if scale is None else scale)) @ key.transpose(-2, -1)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    weights = scores.softmax(dim=-1)
    return F.dropout(weights, dropout) @ value if dropout else weights @ value


def _blocked_attention(query, key, value, attention_mask, scale, block_bytes: int | None = None):
    """``softmax((q * scale) @ k^T) @ v`` in the inputs' dtype (float32 accumulation inside the products), in
    blocks of query rows whose scores take at most ``block_bytes`` (default ``SCORE_BLOCK_BYTES``); a boolean mask
    (True = attend) is applied as ``-inf``, and fully masked rows give 0, as torch's CPU SDPA kernels do."""
    lead, rows, keys = query.shape[:-2], query.shape[-2], key.shape[-2]
    block_bytes = SCORE_BLOCK_BYTES if block_bytes is None else block_bytes
    block_rows = max(MIN_BLOCK_ROWS, block_bytes // (query.element_size() * keys * lead.numel()))
    scaled = query * (query.shape[-1] ** -0.5 if scale is None else scale)
    key_t = key.transpose(-2, -1)
    output = torch.empty(*lead, rows, value.shape[-1], dtype=value.dtype, device=value.device)
    for start in range(0, rows, block_rows):
        stop = min(start + block_rows, rows)
        scores = scaled[..., start:stop, :] @ key_t
        if attention_mask is None:
            weights = scores.softmax(dim=-1)
        else:
            allowed = attention_mask if attention_mask.shape[-2] == 1 else attention_mask[..., start:stop, :]
            weights = scores.masked_fill_(~allowed, float("-inf")).softmax(dim=-1)
            weights = weights.masked_fill_(~allowed.any(dim=-1, keepdim=True), 0.0)
        torch.matmul(weights, value, out=output[..., start:stop, :])
    return output


def _blocked_attention_applies(query, key, value, attention_mask, dropout) -> bool:
    """bfloat16 CPU inference on ``[..., N, head_dim]`` inputs of one shape prefix, no dropout, no mask or a
    boolean one that broadcasts to ``[..., Nq, Nk]``."""
    if not FAST_ATTENTION or torch.compiler.is_compiling() or dropout:
        return False
    tensors = (query, key, value) if attention_mask is None else (query, key, value, attention_mask)
    if not (query.dtype == key.dtype == value.dtype == torch.bfloat16 and query.dim() >= 3):
        return False
    if not (query.shape[:-2] == key.shape[:-2] == value.shape[:-2] and key.shape[-2] == value.shape[-2]):
        return False
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool:
            return False
        try:
            target = (*query.shape[:-1], key.shape[-2])
            if torch.broadcast_shapes(attention_mask.shape, target) != target:
                return False
        except RuntimeError:
            return False
        if attention_mask.shape[-2] not in (1, query.shape[-2]):
            return False
    return eager_cpu_inference(*tensors)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention, ``[..., N, head_dim]`` -> ``[..., Nq, head_dim]``, with SDPA's arguments and
    mask semantics (boolean: True = attend; float: added).

    bfloat16 inference on CPU (see ``_blocked_attention_applies``) runs ``softmax((q * scale) @ k^T) @ v`` with
    bfloat16 products in blocks of query rows, 2-2.7x faster than SDPA's flash kernel there; the scores are
    rounded to bfloat16 before the softmax (as a non-fused bfloat16 attention such as timm's computes them), which
    stays within the bfloat16 bounds of every family's parity test. Everything else (training, other dtypes and
    devices, float masks, ``torch.compile``, ``HF_VTOK_FAST_ATTENTION=0``) calls SDPA.
    """
    if _blocked_attention_applies(query, key, value, attention_mask, dropout):
        return _blocked_attention(query, key, value, attention_mask, scale)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scale)


class Attention(nn.Module):
    """Self-attention with a fused QKV projection, optional per-head QK-norm and RoPE.

    ``qkv_proj`` rows are ordered ``(q | k | v, head, head_dim)``. QK-norm (``qk_norm=True`` or
    ``"rms"``: RMSNorm; ``"layer"``: affine LayerNorm, as timm's DiT/SiT) is applied before the
    rotation. ``rotary`` is a ``(cos, sin)`` pair of ``[B, N, head_dim / 2]`` or ``[N, head_dim / 2]``
    tables shared by all heads, or of ``[B or 1, num_heads, N, head_dim / 2]`` per-head tables
    (identity entries, cos=1 / sin=0, leave a token unrotated). ``rope_dtype`` is the dtype the
    rotation runs in (``None``: the activations' dtype; Flux-style models rotate in float32).
    ``scale`` is the softmax scale (``None``: ``1/sqrt(head_dim)``; muP models use ``8/head_dim``).

    ``eager_float32=True`` computes float32 inputs as ``softmax((q * scale) @ k^T) @ v``, the order of
    timm's non-fused path, so that originals running it (the DiT / SiT of continuous_tokenizer) are
    matched bit for bit; other dtypes, and the default, use ``attention`` (SDPA, or blocked bfloat16 products for
    bfloat16 inference on CPU). ``attention_dropout`` (on the
    attention weights) and ``output_dropout`` (after ``out_proj``) act in training mode only, as
    timm's ``Attention(attn_drop, proj_drop)``.

    The three steps (``project`` -> ``attend`` -> ``project_out``) are public so that several streams
    with their own weights can attend jointly (``joint_attention``, MMDiT / Flux double-stream blocks).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        qkv_bias: bool = False,
        out_bias: bool = False,
        qk_norm: bool | str = False,
        norm_eps: float = 1e-6,
        scale: float | None = None,
        rope_layout: str = "interleaved",
        rope_dtype: torch.dtype | None = None,
        eager_float32: bool = False,
        attention_dropout: float = 0.0,
        output_dropout: float = 0.0,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scale = scale
        self.rope_layout = rope_layout
        self.rope_dtype = rope_dtype
        self.eager_float32 = eager_float32
        self.attention_dropout = float(attention_dropout)
        self.output_dropout = float(output_dropout)
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.q_norm = _qk_norm(qk_norm, self.head_dim, norm_eps)
        self.k_norm = _qk_norm(qk_norm, self.head_dim, norm_eps)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=out_bias)

    def project(
        self, hidden_states: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, N, hidden]`` -> normed and rotated query, key and value, each ``[B, heads, N, head_dim]``."""
        batch, length, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, Dh]
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        if rotary is not None:
            cos, sin = rotary
            if cos.dim() < 4:  # one table for every head
                cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)
            query = apply_rotary_embedding(query, cos, sin, self.rope_layout, self.rope_dtype)
            key = apply_rotary_embedding(key, cos, sin, self.rope_layout, self.rope_dtype)
        return query, key, value

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention with this layer's scale and dropout: ``[B, H, N, Dh]`` -> ``[B, H, N, Dh]``."""
        dropout = self.attention_dropout if self.training else 0.0
        if self.eager_float32 and query.dtype == torch.float32:
            return _eager_attention(query, key, value, attention_mask, self.scale, dropout)
        return attention(query, key, value, attention_mask, self.scale, dropout)

    def project_out(self, attended: torch.Tensor) -> torch.Tensor:
        """``[B, H, N, Dh]`` -> ``[B, N, hidden]`` through the output projection (and its dropout)."""
        batch, _, length, _ = attended.shape
        output = self.out_proj(attended.transpose(1, 2).reshape(batch, length, self.hidden_size))
        return F.dropout(output, self.output_dropout, self.training) if self.output_dropout else output

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        query, key, value = self.project(hidden_states, rotary)
        return self.project_out(self.attend(query, key, value, attention_mask))


def joint_attention(
    attentions: Sequence[Attention],
    hidden_states: Sequence[torch.Tensor],
    rotary: Sequence[tuple[torch.Tensor, torch.Tensor] | None],
    attention_mask: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Streams with their own QKV / norm / output weights attending over their joint sequence.

    Each stream ``i`` is projected by ``attentions[i]`` (with its own ``rotary`` tables), the
    streams are concatenated along the sequence in the given order, attend once (with the first
    layer's scale and an optional mask over the joint sequence), and are split back and projected
    out by their own layers. This is the MMDiT / Flux double-stream attention; the order of the
    streams is the order of the original's concatenation (e.g. ``[text, image]``).
    """
    if not (len(attentions) == len(hidden_states) == len(rotary)) or not attentions:
        raise ValueError(
            f"joint_attention needs one attention layer, state and rotary entry per stream; got "
            f"{len(attentions)}, {len(hidden_states)} and {len(rotary)}"
        )
    heads = {(layer.num_heads, layer.head_dim, layer.scale) for layer in attentions}
    if len(heads) != 1:
        raise ValueError(
            f"jointly attending layers must share heads, head_dim and scale; got {sorted(heads, key=str)}"
        )
    projected = [layer.project(states, tables) for layer, states, tables in zip(attentions, hidden_states, rotary)]
    query, key, value = (torch.cat(parts, dim=2) for parts in zip(*projected))
    attended = attentions[0].attend(query, key, value, attention_mask)
    lengths = [states.shape[1] for states in hidden_states]
    return [layer.project_out(part) for layer, part in zip(attentions, attended.split(lengths, dim=2))]
