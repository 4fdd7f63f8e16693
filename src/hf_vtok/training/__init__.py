"""Training machinery shared by the scripts in ``training_scripts/``: the accelerate loop (``Trainer``),
resumable data order and augmentations, checkpoints written atomically (also on SIGTERM / SIGINT), EMA,
CSV loss curves with a PNG plot, and the originals' optimizers and schedules. ``pip install 'hf_vtok[train]'``."""

from ..data.datasets import (  # the data side of training, re-exported for the scripts
    NO_LABEL,
    AugmentedImages,
    CachedLatents,
    StepBatchSampler,
    StreamingAugmentedImages,
    collate_samples,
    draw_generator,
    horizontal_flip,
    open_image_source,
    random_crop,
    random_resized_crop,
    to_pixel_values,
)
from .checkpointing import CheckpointManager, StopRequest, latest_checkpoint, list_checkpoints
from .data import add_data_arguments, build_image_dataset
from .early_stopping import EarlyStopping
from .ema import ModelEMA
from .logging import CSVLogger, plot_metrics, read_metrics
from .optim import build_optimizer, build_scheduler, parameter_groups, warmup_cosine_factor
from .trainer import Trainer, add_training_arguments, fresh_copy_with_state, move_to_device, parse_with_config

__all__ = [
    "NO_LABEL",
    "AugmentedImages",
    "CSVLogger",
    "CachedLatents",
    "CheckpointManager",
    "EarlyStopping",
    "ModelEMA",
    "StepBatchSampler",
    "StopRequest",
    "StreamingAugmentedImages",
    "Trainer",
    "add_data_arguments",
    "add_training_arguments",
    "build_image_dataset",
    "build_optimizer",
    "build_scheduler",
    "collate_samples",
    "draw_generator",
    "fresh_copy_with_state",
    "horizontal_flip",
    "latest_checkpoint",
    "list_checkpoints",
    "move_to_device",
    "open_image_source",
    "parameter_groups",
    "parse_with_config",
    "plot_metrics",
    "random_crop",
    "random_resized_crop",
    "read_metrics",
    "to_pixel_values",
    "warmup_cosine_factor",
]
