"""Bottlenecks shared by the tokenizer families: lookup-free quantization and the diagonal-Gaussian (KL) posterior."""

from .diagonal_gaussian import DiagonalGaussianBottleneck, DiagonalGaussianOutput
from .lookup_free import LookupFreeQuantizer, LookupFreeQuantizerOutput

__all__ = [
    "DiagonalGaussianBottleneck",
    "DiagonalGaussianOutput",
    "LookupFreeQuantizer",
    "LookupFreeQuantizerOutput",
]
