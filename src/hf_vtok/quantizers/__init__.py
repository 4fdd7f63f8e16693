"""Quantizers shared by the tokenizer families."""

from .cosine_vq import CosineEMAVectorQuantizer, VectorQuantizerOutput, rotate_to
from .soft_vq import SoftVectorQuantizer, SoftVectorQuantizerOutput, codebook_entropy_loss

__all__ = [
    "CosineEMAVectorQuantizer",
    "SoftVectorQuantizer",
    "SoftVectorQuantizerOutput",
    "VectorQuantizerOutput",
    "codebook_entropy_loss",
    "rotate_to",
]
