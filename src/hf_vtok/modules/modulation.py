"""adaLN modulation: the chunked ``Linear(SiLU(c))``, ``modulate``, gated residuals and the adaLN output layer."""

import torch
from torch import nn

_REDUCED_PRECISION = (torch.bfloat16, torch.float16)


def modulate(
    hidden_states: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, scale_offset: float = 1.0
) -> torch.Tensor:
    """``x * (scale_offset + scale) + shift``; shift/scale broadcast over tokens.

    The default ``scale_offset=1`` is the DiT / SiT / Flux convention ``x * (1 + scale) + shift``;
    MAETok's latent-modulated decoder uses ``scale_offset=0`` (``x * scale + shift``). In bfloat16 /
    float16 it is one fused ``addcmul`` (one rounding instead of two: faster, and closer to float32);
    float32 keeps the originals' two operations bit for bit.
    """
    if hidden_states.dtype in _REDUCED_PRECISION:
        return torch.addcmul(shift, hidden_states, scale_offset + scale)
    return hidden_states * (scale_offset + scale) + shift


def gated_residual(hidden_states: torch.Tensor, gate: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x + gate * update`` (adaLN-Zero residuals); one fused ``addcmul`` in bfloat16 / float16, as ``modulate``."""
    if hidden_states.dtype in _REDUCED_PRECISION:
        return torch.addcmul(hidden_states, gate, update)
    return hidden_states + gate * update


def adaln_chunks(
    linear: nn.Linear,
    conditioning: torch.Tensor,
    num_chunks: int,
    activation: bool = True,
    broadcast_over_tokens: bool = True,
) -> tuple[torch.Tensor, ...]:
    """The adaLN modulation: ``linear(SiLU(c))`` split into ``num_chunks`` vectors (shift, scale, gate, ...).

    ``conditioning`` ``[B, C]`` (one vector per sample) gets a token axis, ``[B, 1, D]`` chunks that broadcast over
    a sequence; ``broadcast_over_tokens=False`` keeps its shape (rows of a per-token MLP ``[N, C]``), as does a
    conditioning that already has a token axis (``[B, L, C]``, one condition per token). ``activation=False`` where
    the caller has applied the SiLU once for every block (DiT). ``linear`` stays a plain ``nn.Linear`` (its
    ``modulation.weight`` keys are the originals', and ``prepack_linear_weights`` packs it).
    """
    if activation:
        conditioning = nn.functional.silu(conditioning)
    output = linear(conditioning)
    if broadcast_over_tokens and output.dim() == 2:
        output = output[:, None, :]
    return output.chunk(num_chunks, dim=-1)


class AdaLNModulation(nn.Module):
    """``Linear(SiLU(c))`` split into ``num_chunks`` per-channel vectors, each ``[B, 1, hidden]``.

    The conditioning ``c`` is ``[B, cond_dim]`` (one vector per sample, e.g. a timestep embedding);
    the chunks broadcast over the tokens. Which chunk is shift, scale or gate is the caller's
    convention (DiT: shift, scale, gate, ...; a final layer: shift, scale). ``zero_init_chunks``
    lists chunks whose rows start at zero (Flux / FlowMo zero the gates so blocks start as the
    identity): done here, and again by ``VisualTokenizerPreTrainedModel._init_weights`` through the
    Linear's ``zero_init_rows``.
    """

    def __init__(self, hidden_size: int, num_chunks: int, cond_dim: int | None = None, zero_init_chunks=()):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_chunks = num_chunks
        if any(not 0 <= chunk < num_chunks for chunk in zero_init_chunks):
            raise ValueError(f"zero_init_chunks {tuple(zero_init_chunks)} out of range for {num_chunks} chunks")
        self.linear = nn.Linear(cond_dim or hidden_size, num_chunks * hidden_size)
        self.linear.zero_init_rows = tuple(
            (chunk * hidden_size, (chunk + 1) * hidden_size) for chunk in zero_init_chunks
        )
        zero_init_rows_(self.linear)

    def forward(self, conditioning: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return adaln_chunks(self.linear, conditioning, self.num_chunks)


def zero_init_rows_(linear: nn.Linear) -> None:
    """Zero the output rows ``linear.zero_init_rows`` (``(start, end)`` ranges) of weight and bias."""
    with torch.no_grad():
        for start, end in getattr(linear, "zero_init_rows", ()):
            linear.weight[start:end] = 0.0
            if linear.bias is not None:
                linear.bias[start:end] = 0.0


class AdaLNFinalLayer(nn.Module):
    """adaLN output layer ``linear(modulate(norm(x), shift, scale))``, ``(shift, scale)`` from the conditioning.

    ``norm`` is a non-affine ``nn.LayerNorm``, ``modulation`` a plain ``nn.Linear`` (keys ``final_layer.norm``,
    ``final_layer.modulation.*``, ``final_layer.linear.*`` as in DiT / SiT / V2Flow). ``activation=False`` where the
    conditioning is already ``SiLU``-ed (DiT); ``broadcast_over_tokens=False`` for per-row conditioning ``[N, C]``
    of a per-token MLP (V2Flow's flow head). ``conditioning_size`` defaults to ``hidden_size``.
    """

    def __init__(
        self,
        hidden_size: int,
        out_channels: int,
        conditioning_size: int | None = None,
        norm_eps: float = 1e-6,
        activation: bool = True,
        broadcast_over_tokens: bool = True,
    ):
        super().__init__()
        self.activation = activation
        self.broadcast_over_tokens = broadcast_over_tokens
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=norm_eps)
        self.modulation = nn.Linear(conditioning_size or hidden_size, 2 * hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)

    def forward(self, hidden_states: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift, scale = adaln_chunks(
            self.modulation, conditioning, 2, self.activation, broadcast_over_tokens=self.broadcast_over_tokens
        )
        return self.linear(modulate(self.norm(hidden_states), shift, scale))
