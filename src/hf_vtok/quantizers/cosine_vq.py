"""Cosine-similarity vector quantizer with an EMA-updated unit-norm codebook.

Semantics of ``VectorQuantize(use_cosine_sim=True)`` from lucidrains' vector-quantize-pytorch (as
V²Flow vendors it, default settings): inputs and codes are l2-normalised, the nearest code is the
one of largest cosine similarity, the codebook is not learned by gradients but follows an
exponential moving average of the inputs assigned to each code, gradients reach the inputs through
the rotation trick (Fifty et al., 2024), and the loss is the commitment MSE on the unit vectors.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class VectorQuantizerOutput:
    """``quantized``: code vectors (unit norm) in the input's shape; ``indices``: code ids; ``loss``:
    ``commitment_weight`` x commitment MSE in training, 0 otherwise (a 0-dim tensor); ``normalized``:
    the l2-normalised inputs that were compared with the codes."""

    quantized: torch.Tensor
    indices: torch.LongTensor
    loss: torch.Tensor
    normalized: torch.Tensor


def rotate_to(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Value of ``target``, gradient through ``source`` by the rotation trick.

    ``source`` is rotated (Householder-style, in the plane of source and target) and rescaled onto
    ``target``; the rotation and scale are constants for autograd, so the gradient reaching ``source``
    is the one at ``target`` rotated back, rather than copied as by the straight-through estimator.
    """
    source_norm = source.norm(dim=-1, keepdim=True)
    target_norm = target.norm(dim=-1, keepdim=True)
    source_unit = (source / source_norm.clamp(min=eps)).detach()
    target_unit = (target / target_norm.clamp(min=eps)).detach()
    mirror = F.normalize(source_unit + target_unit, dim=-1, eps=eps)
    rotated = (
        source
        - 2 * (source * mirror).sum(-1, keepdim=True) * mirror
        + 2 * (source * source_unit).sum(-1, keepdim=True) * target_unit
    )
    return rotated * (target_norm / source_norm.clamp(min=eps)).detach()


class CosineEMAVectorQuantizer(nn.Module):
    r"""Vector quantizer on the unit sphere with an EMA codebook.

    Buffers: ``codebook`` ``[K, D]`` (unit rows) and, with ``ema_state=True``, the running statistics
    ``ema_cluster_size`` ``[K]`` and ``ema_embed_sum`` ``[K, D]`` that training updates. In training
    mode each forward updates them with ``decay`` and re-normalises the codebook; in eval mode the
    codebook is read only.

    Args:
        dim: width of the vectors.
        codebook_size: number of codes ``K``.
        decay: EMA decay of the statistics (0.8 in vector-quantize-pytorch).
        eps: Laplace smoothing of the cluster sizes.
        commitment_weight: weight of the commitment loss.
        rotation_trick: gradient estimator in training (rotation trick, else straight-through).
        ema_state: keep the EMA statistics (needed to train the codebook, not to use it).
        input_eps: epsilon of the l2 normalisation of the inputs.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.8,
        eps: float = 1e-5,
        commitment_weight: float = 1.0,
        rotation_trick: bool = True,
        ema_state: bool = True,
        input_eps: float = 1e-6,
    ):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.eps = eps
        self.commitment_weight = commitment_weight
        self.rotation_trick = rotation_trick
        self.input_eps = input_eps
        self.register_buffer("codebook", torch.empty(codebook_size, dim))
        if ema_state:
            self.register_buffer("ema_cluster_size", torch.empty(codebook_size))
            self.register_buffer("ema_embed_sum", torch.empty(codebook_size, dim))
        else:
            self.ema_cluster_size = self.ema_embed_sum = None

    @property
    def has_ema_state(self) -> bool:
        return self.ema_cluster_size is not None

    @torch.no_grad()
    def reset_codebook(self, generator: torch.Generator | None = None) -> None:
        """Random unit codes (the original's l2-normalised kaiming-uniform), unit cluster sizes."""
        codes = torch.empty_like(self.codebook, dtype=torch.float32).uniform_(-1.0, 1.0, generator=generator)
        self.codebook.copy_(F.normalize(codes, dim=-1, eps=self.input_eps))
        if self.has_ema_state:
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(self.codebook)

    def check_indices(self, indices: torch.Tensor) -> None:
        if indices.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.bool):
            raise ValueError(f"code indices must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"code indices must be in [0, {self.codebook_size}) for this codebook; got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    def get_codebook_entry(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``[..., D]`` of integer ``indices`` (range-checked)."""
        self.check_indices(indices)
        return self.codebook[indices.long()]

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum statistics over data-parallel ranks, so every rank keeps the same codebook."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(tensor)
        return tensor

    @torch.no_grad()
    def _update_codebook(self, flat_inputs: torch.Tensor, one_hot: torch.Tensor) -> None:
        if not self.has_ema_state:
            raise ValueError(
                "this quantizer was built without its EMA statistics (codebook_ema_state=False) and cannot "
                "update its codebook; call it in eval mode, or build it with the EMA state to train"
            )
        counts = self._all_reduce(one_hot.sum(0))
        sums = self._all_reduce(one_hot.t() @ flat_inputs)
        # in float32 whatever the buffers' dtype
        cluster_size = self.ema_cluster_size.float().lerp(counts, 1 - self.decay)
        embed_sum = self.ema_embed_sum.float().lerp(sums, 1 - self.decay)
        total = cluster_size.sum()
        smoothed = (cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.ema_cluster_size.copy_(cluster_size)
        self.ema_embed_sum.copy_(embed_sum)
        self.codebook.copy_(F.normalize(embed_sum / smoothed[:, None], dim=-1, eps=self.input_eps))

    def forward(self, inputs: torch.Tensor, update_codebook: bool | None = None) -> VectorQuantizerOutput:
        """Quantize ``inputs [..., D]`` (computed in float32 whatever the input dtype).

        ``update_codebook`` (default: ``self.training``) applies the EMA update of this batch.
        """
        if inputs.shape[-1] != self.dim:
            raise ValueError(f"the quantizer takes vectors of width {self.dim}, got shape {tuple(inputs.shape)}")
        update_codebook = self.training if update_codebook is None else update_codebook
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            normalized = F.normalize(inputs.float(), dim=-1, eps=self.input_eps)
            flat = normalized.reshape(-1, self.dim)
            codebook = self.codebook.float()
            indices = (flat @ codebook.t()).argmax(dim=-1)
            quantized = codebook[indices]
            if update_codebook:
                self._update_codebook(flat.detach(), F.one_hot(indices, self.codebook_size).to(flat.dtype))
            loss = normalized.new_zeros(())
            if self.training:
                loss = F.mse_loss(quantized.detach(), flat) * self.commitment_weight
                if flat.requires_grad:
                    quantized = (
                        rotate_to(flat, quantized) if self.rotation_trick else flat + (quantized - flat).detach()
                    )
        return VectorQuantizerOutput(
            quantized=quantized.reshape(normalized.shape),
            indices=indices.reshape(normalized.shape[:-1]),
            loss=loss,
            normalized=normalized,
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, decay={self.decay}, ema_state={self.has_ema_state}"
        )
