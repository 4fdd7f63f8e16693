"""The application layer: released checkpoints (presets), model cards and ``push_to_hub``, and the one loader
of any tokenizer / autoencoder / pipeline by folder or Hub id. Library code never imports it."""

from .cards import card_family, evaluation, model_card, template_path
from .push import default_image_processor, push_to_hub

__all__ = ["card_family", "default_image_processor", "evaluation", "model_card", "push_to_hub", "template_path"]
