"""DINO features for the Fréchet DINO Distance (FDD), through transformers' ``AutoModel``.

Any DINOv2 / DINOv3 checkpoint works (``facebook/dinov2-large``, ``facebook/dinov3-vitb16-pretrain-lvd1689m``,
a local folder); the feature is the class token of the last hidden state, after the final norm.
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..losses.frozen import FrozenNetwork

DEFAULT_FDD_MODEL = "facebook/dinov2-large"
DEFAULT_FDD_RESOLUTION = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoFeatureExtractor(FrozenNetwork):
    """Images (uint8, or float in [0, 1], ``[B, 3, H, W]``) -> ``[B, hidden_size]`` class-token features.

    Images are resized to ``resolution`` (bicubic, antialiased), clamped and ImageNet-normalised, as the
    originals' FDD evaluations do. The module is the ``feature=`` of torchmetrics' Fréchet distance.
    """

    def __init__(self, model: nn.Module, resolution: int = DEFAULT_FDD_RESOLUTION):
        super().__init__()
        hidden_size = getattr(model.config, "hidden_size", None)
        if not isinstance(hidden_size, int):
            raise ValueError(f"FDD needs a ViT model whose config has hidden_size; got {type(model).__name__}")
        if resolution <= 0:
            raise ValueError(f"FDD resolution must be positive, got {resolution}")
        self.model = model.eval().requires_grad_(False)
        self.resolution = resolution
        self.num_features = hidden_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike = DEFAULT_FDD_MODEL, resolution: int = DEFAULT_FDD_RESOLUTION, **kwargs
    ) -> "DinoFeatureExtractor":
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(name_or_path, **kwargs)
        except OSError as error:
            raise FileNotFoundError(
                f"FDD feature model {str(name_or_path)!r} could not be loaded ({error}). "
                "Pass a local folder or a Hub id "
                f"of a DINOv2 / DINOv3 model (e.g. {DEFAULT_FDD_MODEL}); offline, download it first with "
                f"`huggingface-cli download {DEFAULT_FDD_MODEL}`."
            ) from error
        return cls(model, resolution)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"DINO features need [B, 3, H, W] RGB images, got shape {tuple(images.shape)}")
        pixels = images.to(self.mean.device)
        pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
        size = (self.resolution, self.resolution)
        if pixels.shape[-2:] != size:
            pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False, antialias=True)
        pixels = (pixels.clamp(0, 1) - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        hidden = self.model(pixel_values=pixels.to(dtype)).last_hidden_state
        return hidden[:, 0].float()
