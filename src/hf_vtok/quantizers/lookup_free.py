"""Lookup-free quantization (LFQ, MAGVIT-v2): each channel is its sign, a token's id its bits.

A token is a vector of ``bits`` channels; it quantizes to ``sign(x)`` in {-1, +1} (0 -> -1) and
its id is ``sum_j [x_j > 0] * 2**j`` (channel ``j`` is bit ``j``, least significant first). The
codebook is implicit: all ``2**bits`` sign patterns. Training adds an entropy loss (confident
per-token assignments, a uniformly used codebook) and a commitment loss.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class LookupFreeQuantizerOutput(ModelOutput):
    """``quantized``: the ±1 code with straight-through gradients, same shape as the input.

    ``indices``: the token ids, the input shape without its last (bit) dimension. The loss terms
    are ``None`` unless requested: ``per_sample_entropy`` (mean entropy of each token's soft
    assignment), ``codebook_entropy`` (entropy of the batch-mean assignment), ``entropy_loss``
    (their weighted difference, to minimise) and ``commitment_loss`` (MSE between input and code).
    """

    quantized: torch.FloatTensor | None = None
    indices: torch.LongTensor | None = None
    per_sample_entropy: torch.FloatTensor | None = None
    codebook_entropy: torch.FloatTensor | None = None
    entropy_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None


class LookupFreeQuantizer(nn.Module):
    r"""Lookup-free quantizer over the last dimension (``bits`` channels per token); no parameters.

    Args:
        bits: channels per token; the vocabulary is ``2**bits``.
        entropy_temperature: softmax temperature of the soft code assignment in the entropy loss
            (the SEED-Voken / FlowMo implementation hard-codes 0.1).
        sample_entropy_weight / codebook_entropy_weight: ``entropy_loss = w_s * per_sample - w_c * codebook``.
        entropy_eps: the epsilon inside the logarithms.
    """

    def __init__(
        self,
        bits: int,
        entropy_temperature: float = 0.1,
        sample_entropy_weight: float = 1.0,
        codebook_entropy_weight: float = 1.0,
        entropy_eps: float = 1e-5,
    ):
        super().__init__()
        if not 1 <= bits <= 62:
            raise ValueError(f"LookupFreeQuantizer needs 1..62 bits per token, got {bits}")
        self.bits = bits
        self.entropy_temperature = entropy_temperature
        self.sample_entropy_weight = sample_entropy_weight
        self.codebook_entropy_weight = codebook_entropy_weight
        self.entropy_eps = entropy_eps

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def _bit_values(self, device) -> torch.Tensor:
        return 2 ** torch.arange(self.bits, device=device, dtype=torch.long)

    def codebook(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """All ``2**bits`` codes ``[2**bits, bits]`` in ±1, row ``i`` being the code of id ``i``."""
        return self.indices_to_codes(torch.arange(self.codebook_size, device=device), dtype=dtype)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.LongTensor:
        """Sign pattern ``[..., bits]`` (positive = 1) -> ids ``[...]``."""
        self._check_bits(codes, "codes")
        return ((codes > 0).long() * self._bit_values(codes.device)).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ids ``[...]`` -> ±1 codes ``[..., bits]``."""
        if indices.is_floating_point() or indices.is_complex():
            raise ValueError(f"token ids must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {self.codebook_size}) for {self.bits} bits per token; "
                f"got values in [{int(indices.min())}, {int(indices.max())}]"
            )
        bits = (indices.long().unsqueeze(-1) & self._bit_values(indices.device)) != 0
        return bits.to(dtype) * 2 - 1

    def _check_bits(self, tensor: torch.Tensor, name: str) -> None:
        if tensor.dim() == 0 or tensor.shape[-1] != self.bits:
            raise ValueError(f"{name} of shape {tuple(tensor.shape)} must end in {self.bits} bit channels")

    def entropy_terms(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-sample entropy, codebook entropy, entropy loss) of the soft assignment of ``latents [..., bits]``.

        The affinity to code ``c`` is ``2 <x, c>`` (the negative squared distance up to a constant);
        the codebook entropy uses the mean assignment over all tokens of the (local) batch.
        """
        logits = 2 * latents.float() @ self.codebook(latents.device).T
        scaled = logits / self.entropy_temperature
        probs = F.softmax(scaled, dim=-1)
        log_probs = F.log_softmax(scaled + self.entropy_eps, dim=-1)
        mean_probs = probs.reshape(-1, self.codebook_size).mean(0)
        codebook_entropy = -(mean_probs * torch.log(mean_probs + self.entropy_eps)).sum()
        per_sample_entropy = (-(probs * log_probs).sum(-1)).mean()
        loss = self.sample_entropy_weight * per_sample_entropy - self.codebook_entropy_weight * codebook_entropy
        return per_sample_entropy, codebook_entropy, loss

    def forward(self, latents: torch.Tensor, return_losses: bool = False) -> LookupFreeQuantizerOutput:
        """Quantize ``latents [..., bits]``; with ``return_losses`` also the entropy and commitment terms."""
        self._check_bits(latents, "latents")
        signs = torch.where(latents > 0, 1.0, -1.0).to(latents.dtype)
        indices = self.codes_to_indices(signs)
        # straight-through estimator: the value of the code, the gradient of the identity
        quantized = latents + (signs - latents).detach()
        output = LookupFreeQuantizerOutput(quantized=quantized, indices=indices)
        if return_losses:
            output.per_sample_entropy, output.codebook_entropy, output.entropy_loss = self.entropy_terms(latents)
            output.commitment_loss = F.mse_loss(latents, signs.detach())
        return output

    def extra_repr(self) -> str:
        return f"bits={self.bits}, codebook_size={self.codebook_size}, entropy_temperature={self.entropy_temperature}"
