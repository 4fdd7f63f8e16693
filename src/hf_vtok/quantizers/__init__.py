"""Quantizers and bottlenecks shared by the tokenizer families: soft VQ, cosine EMA VQ, lookup-free
quantization and the diagonal-Gaussian (KL) posterior."""

from .cosine_vq import CosineEMAVectorQuantizer, VectorQuantizerOutput, rotate_to
from .diagonal_gaussian import DiagonalGaussianBottleneck, DiagonalGaussianOutput
from .lookup_free import LookupFreeQuantizer, LookupFreeQuantizerOutput
from .soft_vq import SoftVectorQuantizer, SoftVectorQuantizerOutput, codebook_entropy_loss

__all__ = [
    "CosineEMAVectorQuantizer",
    "DiagonalGaussianBottleneck",
    "DiagonalGaussianOutput",
    "LookupFreeQuantizer",
    "LookupFreeQuantizerOutput",
    "SoftVectorQuantizer",
    "SoftVectorQuantizerOutput",
    "VectorQuantizerOutput",
    "codebook_entropy_loss",
    "rotate_to",
]
