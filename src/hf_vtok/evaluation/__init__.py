"""``hf-vtok eval`` (tokenizer reconstruction) and ``hf-vtok eval-generation`` (pipeline samples)."""

from .reconstruction import evaluate_reconstruction, tokens_per_image

__all__ = ["evaluate_reconstruction", "tokens_per_image"]
