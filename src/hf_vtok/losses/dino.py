"""DINO feature losses on transformers backbones (``Dinov2Model``, DINOv3, ``ViTModel`` DINO v1).

- ``DinoPerceptualLoss``: ViTok-v2's perceptual loss: every block's tokens (class, registers and patches)
  of the prediction and the target, each token L2-normalised, squared differences averaged over tokens and
  channels, then over blocks.
- ``DinoDiscriminator``: the VAR-style discriminator SoftVQ / MAETok train with: a frozen DINO ViT read out
  (patch tokens + class token) after the patch embedding and after a few blocks, one trainable head per
  read-out (spectral-normalised 1D convolutions, batch norm, LeakyReLU, a circular k=9 residual block),
  logits of all heads concatenated.

Backbones come from ``AutoModel.from_pretrained(name_or_path)`` (tests build tiny ones from configs); they are
frozen and kept in eval mode; gradients reach the images.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .frozen import FrozenNetwork

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _freeze(model: nn.Module) -> nn.Module:
    return model.requires_grad_(False).eval()


def _num_prefix_tokens(backbone) -> int:
    return 1 + int(getattr(backbone.config, "num_register_tokens", 0) or 0)


class _ImageNetInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> ImageNet-normalised."""
        return ((images.float() + 1) / 2 - self.mean) / self.std


class DinoPerceptualLoss(FrozenNetwork):
    """``loss(prediction, target)`` for ``[B, 3, H, W]`` images in [-1, 1]; images larger than ``target_size``
    are resized to it (bicubic, antialiased), as ViTok-v2's ``DINOPerceptual``."""

    def __init__(self, backbone: nn.Module, target_size: int = 256):
        super().__init__()
        self.backbone = _freeze(backbone)
        self.target_size = target_size
        self.normalize = _ImageNetInput()

    @classmethod
    def from_pretrained(cls, name_or_path: str, target_size: int = 256, **kwargs) -> "DinoPerceptualLoss":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(name_or_path, **kwargs), target_size)

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if max(images.shape[-2:]) > self.target_size:
            images = F.interpolate(
                images.float(),
                size=(self.target_size, self.target_size),
                mode="bicubic",
                align_corners=False,
                antialias=True,
            )
        pixels = self.normalize(images).to(self.backbone.dtype)
        states = self.backbone(pixel_values=pixels, output_hidden_states=True).hidden_states[1:]
        return tuple(F.normalize(state.float(), dim=-1, eps=1e-6) for state in states)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape or prediction.dim() != 4:
            raise ValueError(
                "DINO perceptual loss needs two [B, 3, H, W] batches, "
                f"got {tuple(prediction.shape)}, {tuple(target.shape)}"
            )
        with torch.no_grad():
            target_features = self._features(target)
        losses = [(p - t).square().mean() for p, t in zip(self._features(prediction), target_features)]
        return torch.stack(losses).mean()


def _conv1d(in_channels: int, out_channels: int, kernel_size: int, spectral: bool) -> nn.Module:
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode="circular")
    return spectral_norm(conv) if spectral else conv


class _DiscriminatorBlock(nn.Sequential):
    def __init__(self, channels: int, kernel_size: int, spectral: bool, norm_eps: float):
        super().__init__(
            _conv1d(channels, channels, kernel_size, spectral),
            nn.BatchNorm1d(channels, eps=norm_eps),
            nn.LeakyReLU(0.2),
        )


class _Residual(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        # VAR's residual block: (x + f(x)) / sqrt(2)
        return (x + self.block(x)) * (0.5**0.5)


class DinoDiscriminator(nn.Module):
    """Logits ``[B, num_readouts * num_patches]`` of ``[B, 3, H, W]`` images in [-1, 1].

    ``readout_layers`` are 0-based block indices (SoftVQ: 2, 5, 8, 11 of DINO ViT-S/16) read out together with
    the embedding output. Images are brought to the backbone's ``image_size`` like the original: a random crop
    (probability 0.5) when both sides are larger, else area (down) / bicubic (up) resizing. Batch norm is local
    to each process (convert with ``nn.SyncBatchNorm.convert_sync_batchnorm`` for the original's synced one).
    """

    def __init__(
        self,
        backbone: nn.Module,
        readout_layers=(2, 5, 8, 11),
        kernel_size: int = 9,
        spectral_norm: bool = True,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        # a tuple keeps the frozen backbone out of the module tree: it is neither trained, checkpointed nor saved
        self._backbone = (_freeze(backbone),)
        num_layers = backbone.config.num_hidden_layers
        self.readout_layers = tuple(layer for layer in readout_layers if layer < num_layers)
        self.image_size = backbone.config.image_size
        channels = backbone.config.hidden_size
        self.normalize = _ImageNetInput()
        self.heads = nn.ModuleList(
            nn.Sequential(
                _DiscriminatorBlock(channels, 1, spectral_norm, norm_eps),
                _Residual(_DiscriminatorBlock(channels, kernel_size, spectral_norm, norm_eps)),
                _conv1d(channels, 1, 1, spectral_norm),
            )
            for _ in range(len(self.readout_layers) + 1)
        )

    @property
    def backbone(self) -> nn.Module:
        return self._backbone[0]

    def _apply(self, fn, recurse=True):
        self._backbone[0]._apply(fn, recurse)
        return super()._apply(fn, recurse)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "DinoDiscriminator":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(name_or_path))

    def _to_backbone_size(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        height, width = images.shape[-2:]
        if height > size and width > size and torch.rand(()) <= 0.5:
            top = int(torch.randint(0, height - size + 1, ()))
            left = int(torch.randint(0, width - size + 1, ()))
            return images[..., top : top + size, left : left + size]
        if (height, width) == (size, size):
            return images
        return F.interpolate(images, size=(size, size), mode="area" if height > size else "bicubic")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self._to_backbone_size(self.normalize(images))
        backbone = self.backbone
        states = backbone(pixel_values=pixels.to(backbone.dtype), output_hidden_states=True).hidden_states
        prefix = _num_prefix_tokens(backbone)
        readouts = [states[0]] + [states[layer + 1] for layer in self.readout_layers]
        logits = []
        for head, state in zip(self.heads, readouts):
            state = state.float()
            tokens = (state[:, prefix:] + state[:, :1]).transpose(1, 2)  # patches + class token, [B, C, N]
            logits.append(head(tokens).flatten(1))
        return torch.cat(logits, dim=1)


__all__ = ["DinoDiscriminator", "DinoPerceptualLoss"]
