"""The application layer: released checkpoints (presets), model cards and ``push_to_hub``, and the one loader
of any tokenizer / autoencoder / pipeline by folder or Hub id. Library code never imports it."""

from .cards import DEFAULT_MODEL_DIR, adapter_model_card, card_family, evaluation, model_card, template_path
from .metric_spaces import metric_space_folder, push_metric_space, push_metric_spaces
from .push import default_image_processor, processor_in_use, push_to_hub, save_tokenizer, write_adapter_card

__all__ = [
    "DEFAULT_MODEL_DIR",
    "adapter_model_card",
    "card_family",
    "default_image_processor",
    "evaluation",
    "metric_space_folder",
    "model_card",
    "processor_in_use",
    "push_metric_space",
    "push_metric_spaces",
    "push_to_hub",
    "save_tokenizer",
    "template_path",
    "write_adapter_card",
]
