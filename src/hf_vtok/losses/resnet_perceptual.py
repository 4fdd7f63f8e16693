"""Perceptual loss on ImageNet classifier logits (ResNet-50), FlowMo's post-training ``lpips_mode='resnet'``.

Both images go from [-1, 1] to [0, 1], are resized to 224x224 (bilinear, antialiased), normalised with the
ImageNet statistics and classified; the loss is the mean squared difference of the 1000 logits. The network
is transformers' ``ResNetForImageClassification``: torchvision's ResNet-50 has the same layout (v1.5, the
stride on the 3x3 convolutions), so ``from_pretrained`` converts torchvision's ``resnet50-0676ba61.pth``
(IMAGENET1K_V1, the weights the original loss uses) by renaming keys; a transformers ResNet folder or Hub id
(e.g. ``microsoft/resnet-50``, other weights) loads as is.
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..conversion import load_state_dict_strictly, rename_keys
from ..utils.weights import load_weights
from .frozen import FrozenNetwork

RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224

# torchvision ResNet keys -> transformers ResNetForImageClassification keys
TORCHVISION_RESNET_RENAMES = [
    (r"^conv1\.weight$", "resnet.embedder.embedder.convolution.weight"),
    (r"^bn1\.", "resnet.embedder.embedder.normalization."),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.weight$", lambda m: _block_key(m, "convolution.weight")),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$", lambda m: _block_key(m, "normalization." + m.group(4))),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.weight$", lambda m: _stage_key(m) + "shortcut.convolution.weight"),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$", lambda m: _stage_key(m) + "shortcut.normalization." + m.group(3)),
    (r"^fc\.", "classifier.1."),
]


def _stage_key(match) -> str:
    return f"resnet.encoder.stages.{int(match.group(1)) - 1}.layers.{match.group(2)}."


def _block_key(match, leaf: str) -> str:
    return f"{_stage_key(match)}layer.{int(match.group(3)) - 1}.{leaf}"


def resnet50_config():
    from transformers import ResNetConfig

    return ResNetConfig(
        depths=[3, 4, 6, 3],
        hidden_sizes=[256, 512, 1024, 2048],
        embedding_size=64,
        layer_type="bottleneck",
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
        num_labels=1000,
    )


class ResNetLogitPerceptualLoss(FrozenNetwork):
    """``loss(input, target)``: MSE of the classifier logits of two ``[B, 3, H, W]`` batches in [-1, 1] (a scalar).

    ``ResNetLogitPerceptualLoss()`` is a randomly initialised ResNet-50 (give a transformers ``ResNetConfig`` as
    ``config`` for another size, e.g. a tiny one in tests, or a built ``classifier``); ``from_pretrained`` loads
    real weights. The network is frozen and stays in eval mode
    (batch-norm statistics fixed); gradients flow to the inputs.
    """

    def __init__(self, config=None, classifier: nn.Module | None = None):
        super().__init__()
        from transformers import ResNetForImageClassification

        self.classifier = (
            classifier if classifier is not None else ResNetForImageClassification(config or resnet50_config())
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike | None = None) -> "ResNetLogitPerceptualLoss":
        """torchvision ResNet-50 weights (path, URL or ``hf://``; default torchvision's IMAGENET1K_V1 file), or a
        transformers ``ResNetForImageClassification`` folder / Hub id."""
        location = str(weights or RESNET50_URL)
        is_file_like = location.startswith(("http://", "https://", "hf://")) or Path(location).is_file()
        if not is_file_like:
            from transformers import ResNetForImageClassification

            model = cls(classifier=ResNetForImageClassification.from_pretrained(location))
            return model.freeze()
        state = convert_torchvision_resnet(load_weights(location, "ResNet-50 (torchvision layout)", RESNET50_URL))
        model = cls()
        for key, value in model.classifier.state_dict().items():
            if key.endswith("num_batches_tracked"):  # a training counter older torchvision files do not store
                state.setdefault(key, value)
        load_state_dict_strictly(model.classifier, state, source=f"ResNet weights {location}")
        return model.freeze()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, 1000]`` of images in [-1, 1] (the original's preprocessing)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"the ResNet perceptual loss takes [B, 3, H, W] images, got {tuple(images.shape)}")
        images = images.to(self.mean.dtype) / 2 + 0.5
        images = F.interpolate(images, size=INPUT_SIZE, mode="bilinear", antialias=True, align_corners=False)
        return self.classifier((images - self.mean) / self.std).logits

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(
                f"input and target must have the same shape, got {tuple(input.shape)} and {tuple(target.shape)}"
            )
        logits = self.logits(torch.cat([input, target]))
        first, second = logits.chunk(2)
        return F.mse_loss(first, second)


def convert_torchvision_resnet(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet (bottleneck) state dict -> ``ResNetForImageClassification`` keys."""
    return rename_keys(state_dict, TORCHVISION_RESNET_RENAMES)


__all__ = ["RESNET50_URL", "ResNetLogitPerceptualLoss", "convert_torchvision_resnet", "resnet50_config"]
