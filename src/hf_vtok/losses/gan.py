"""GAN losses of the SoftVQ / MAETok recipe: hinge losses, LeCAM regularisation, DiffAugment, and the
VQGAN adaptive generator weight."""

import torch
import torch.nn.functional as F


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


class LeCAMRegularizer:
    """LeCAM (Tseng et al. 2021): penalises real logits above the running mean of fake logits and fake logits
    below the running mean of real ones; the means are exponential moving averages (``decay``)."""

    def __init__(self, decay: float = 0.999):
        self.decay = decay
        self.real_mean = 0.0
        self.fake_mean = 0.0

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        self.real_mean = self.real_mean * self.decay + float(real_logits.detach().mean()) * (1 - self.decay)
        self.fake_mean = self.fake_mean * self.decay + float(fake_logits.detach().mean()) * (1 - self.decay)

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return (
            F.relu(real_logits - self.fake_mean).square().mean() + F.relu(self.real_mean - fake_logits).square().mean()
        )

    def state_dict(self) -> dict:
        return {"decay": self.decay, "real_mean": self.real_mean, "fake_mean": self.fake_mean}

    def load_state_dict(self, state: dict) -> None:
        self.real_mean, self.fake_mean = float(state["real_mean"]), float(state["fake_mean"])


# --------------------------------------------------------------------------------------------------
# DiffAugment (Zhao et al. 2020), on [B, C, H, W]
def _brightness(x):
    return x + (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def _saturation(x):
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def _contrast(x):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def _translation(x, ratio: float = 0.125):
    """Shift each image by up to ``ratio`` of its size, filling with zeros."""
    batch, _, height, width = x.shape
    shift_h, shift_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    offset_h = torch.randint(-shift_h, shift_h + 1, (batch, 1, 1), device=x.device)
    offset_w = torch.randint(-shift_w, shift_w + 1, (batch, 1, 1), device=x.device)
    rows = (torch.arange(height, device=x.device).view(1, -1, 1) + offset_h + 1).clamp(0, height + 1)
    cols = (torch.arange(width, device=x.device).view(1, 1, -1) + offset_w + 1).clamp(0, width + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
    index = torch.arange(batch, device=x.device).view(-1, 1, 1)
    return padded[index, rows, cols].permute(0, 3, 1, 2)


def _cutout(x, ratio: float):
    """Zero one square of ``ratio`` of the image size per image, at a random centre."""
    batch, _, height, width = x.shape
    size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    center_h = torch.randint(0, height + (1 - size_h % 2), (batch, 1, 1), device=x.device)
    center_w = torch.randint(0, width + (1 - size_w % 2), (batch, 1, 1), device=x.device)
    rows = (torch.arange(size_h, device=x.device).view(1, -1, 1) + center_h - size_h // 2).clamp(0, height - 1)
    cols = (torch.arange(size_w, device=x.device).view(1, 1, -1) + center_w - size_w // 2).clamp(0, width - 1)
    mask = torch.ones(batch, height, width, dtype=x.dtype, device=x.device)
    mask[torch.arange(batch, device=x.device).view(-1, 1, 1), rows, cols] = 0
    return x * mask.unsqueeze(1)


_AUGMENTATIONS = {
    "color": (_brightness, _saturation, _contrast),
    "translation": (_translation,),
}


def diff_augment(
    x: torch.Tensor, policy: str = "color,translation,cutout_0.2", probability: float = 0.5
) -> torch.Tensor:
    """Differentiable augmentation: each comma-separated op of ``policy`` (``color``, ``translation``,
    ``cutout_<ratio>``) is applied to the whole batch with ``probability``."""
    for name in filter(None, policy.split(",")):
        if name.startswith("cutout_"):
            ratio = float(name.split("_", 1)[1])
            functions = (lambda images, ratio=ratio: _cutout(images, ratio),)
        elif name in _AUGMENTATIONS:
            functions = _AUGMENTATIONS[name]
        else:
            raise ValueError(f"unknown DiffAugment op {name!r}; expected color, translation or cutout_<ratio>")
        if torch.rand(()) > probability:
            continue
        for function in functions:
            x = function(x)
    return x.contiguous()


def adaptive_generator_weight(
    reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """VQGAN's balance: ``|grad rec| / (|grad gan| + 1e-4)`` at the decoder's last weight, clamped, detached."""
    rec_grad = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(generator_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


__all__ = [
    "LeCAMRegularizer",
    "adaptive_generator_weight",
    "diff_augment",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
]
