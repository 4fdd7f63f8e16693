"""Quantizers shared by the discrete tokenizers."""

from .cosine_vq import CosineEMAVectorQuantizer, VectorQuantizerOutput, rotate_to

__all__ = ["CosineEMAVectorQuantizer", "VectorQuantizerOutput", "rotate_to"]
