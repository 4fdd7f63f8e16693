"""Quantizers shared by the tokenizer families."""

from .soft_vq import SoftVectorQuantizer, SoftVectorQuantizerOutput, codebook_entropy_loss

__all__ = ["SoftVectorQuantizer", "SoftVectorQuantizerOutput", "codebook_entropy_loss"]
