"""Training losses; the LPIPS network here is also what ``hf_vtok.metrics`` measures LPIPS with."""

from .alignment import RepaProjector, repa_loss
from .dino import DinoDiscriminator, DinoPerceptualLoss
from .gan import (
    LeCAMRegularizer,
    adaptive_generator_weight,
    diff_augment,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from .lpips import LPIPS, VGG16Features
from .reconstruction import charbonnier_loss, ssim_loss
from .resnet_perceptual import ResNetLogitPerceptualLoss

__all__ = [
    "LPIPS",
    "DinoDiscriminator",
    "DinoPerceptualLoss",
    "LeCAMRegularizer",
    "RepaProjector",
    "ResNetLogitPerceptualLoss",
    "VGG16Features",
    "adaptive_generator_weight",
    "charbonnier_loss",
    "diff_augment",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "repa_loss",
    "ssim_loss",
]
