"""The GAN part of the SoftVQ / MAETok recipe (``losses/vq_loss.py``), shared by the tokenizer scripts.

Generator side: ``weight * adaptive * hinge_generator_loss(D(DiffAugment(fake)))`` from ``disc_start`` on
(``adaptive`` is VQGAN's gradient-norm balance when enabled, else 1). Discriminator side, after the
generator's step: ``weight * (hinge(D(aug(real)), D(aug(fake))) + lecam_weight * LeCAM)`` plus the
consistency term ``cr_weight * MSE(D(x), D(DiffAugment_strong(x)))``, with its own optimizer; nothing
before ``disc_start``. DiffAugment: ``color,translation,cutout_0.2`` with probability 0.5 on D / G inputs,
``color,translation,cutout_0.5`` always for the consistency term.
"""

import argparse

import torch
import torch.nn.functional as F

from ..losses import (
    DinoDiscriminator,
    LeCAMRegularizer,
    adaptive_generator_weight,
    diff_augment,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from .optim import build_optimizer, build_scheduler

WEAK_AUGMENT = "color,translation,cutout_0.2"
STRONG_AUGMENT = "color,translation,cutout_0.5"


def add_gan_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    group = parser.add_argument_group("GAN (DINO discriminator)")
    group.add_argument("--gan-weight", type=float, default=0.2, help="disc_weight; 0 disables the GAN")
    group.add_argument(
        "--disc-model", help="frozen DINO backbone of the discriminator (folder or Hub id, e.g. facebook/dino-vits16)"
    )
    group.add_argument("--disc-start", type=int, default=20_000, help="step from which the GAN losses count")
    group.add_argument("--disc-adaptive-weight", action="store_true", help="VQGAN gradient-norm balancing")
    group.add_argument("--disc-lr", type=float, help="discriminator learning rate (default: --lr)")
    group.add_argument("--lecam-weight", type=float, default=0.001)
    group.add_argument("--disc-cr-weight", type=float, default=4.0, help="consistency regularisation weight")
    group.add_argument("--no-diff-augment", action="store_true", help="feed D without DiffAugment")
    parser.set_defaults(**defaults)


class AdversarialTraining:
    """Discriminator, its optimizer / schedule and LeCAM state; ``generator_loss`` and ``discriminator_step``."""

    def __init__(self, args, trainer, discriminator: torch.nn.Module, total_steps: int):
        self.args, self.trainer = args, trainer
        lr = args.disc_lr or args.lr
        optimizer = build_optimizer(
            discriminator, getattr(args, "optimizer", "adamw"), lr, args.betas, getattr(args, "weight_decay", 0.0)
        )
        warmup = int(getattr(args, "warmup_ratio", 0.0) * total_steps)
        scheduler = build_scheduler(optimizer, total_steps, warmup, getattr(args, "min_lr", 0.0))
        discriminator = discriminator.to(trainer.device)
        self.discriminator, self.optimizer, self.scheduler = trainer.prepare(discriminator, optimizer, scheduler)
        self.lecam = LeCAMRegularizer() if args.lecam_weight else None
        if self.lecam is not None:
            trainer.add_state("lecam", self.lecam)

    def _augment(self, images: torch.Tensor, policy: str = WEAK_AUGMENT, probability: float = 0.5) -> torch.Tensor:
        return images if self.args.no_diff_augment else diff_augment(images, policy, probability)

    def active(self, step: int) -> bool:
        return step >= self.args.disc_start

    def generator_loss(
        self, fake: torch.Tensor, reconstruction_loss: torch.Tensor, last_layer, step: int, logs: dict
    ) -> torch.Tensor:
        if not self.active(step):
            return fake.new_zeros(())
        logits = self.discriminator(self._augment(fake))
        loss = hinge_generator_loss(logits)
        weight = self.args.gan_weight
        if self.args.disc_adaptive_weight:
            adaptive = adaptive_generator_weight(reconstruction_loss, loss, last_layer)
            logs["gan_adaptive_weight"] = adaptive
            weight = weight * adaptive
        logs["gan_generator"] = loss.detach()
        return weight * loss

    def discriminator_step(self, real: torch.Tensor, fake: torch.Tensor, step: int, logs: dict) -> None:
        """One discriminator update on detached ``fake`` images (skipped before ``disc_start``)."""
        if not self.active(step):
            return
        accelerator, args = self.trainer.accelerator, self.args
        real, fake = real.detach(), fake.detach()
        with accelerator.autocast():
            real_logits = self.discriminator(self._augment(real))
            fake_logits = self.discriminator(self._augment(fake))
            loss = hinge_discriminator_loss(real_logits, fake_logits)
            if self.lecam is not None:
                self.lecam.update(real_logits, fake_logits)
                lecam = self.lecam(real_logits, fake_logits)
                loss = loss + args.lecam_weight * lecam
                logs["lecam"] = lecam.detach()
            loss = args.gan_weight * loss
            if args.disc_cr_weight:
                strong_real = self.discriminator(self._augment(real, STRONG_AUGMENT, 1.0))
                strong_fake = self.discriminator(self._augment(fake, STRONG_AUGMENT, 1.0))
                consistency = F.mse_loss(torch.cat([real_logits, fake_logits]), torch.cat([strong_real, strong_fake]))
                loss = loss + args.disc_cr_weight * consistency
                logs["disc_consistency"] = consistency.detach()
        self.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        self.trainer.clip_gradients(self.discriminator.parameters())
        self.optimizer.step()
        self.scheduler.step()
        logs.update(
            disc_loss=loss.detach(), logits_real=real_logits.detach().mean(), logits_fake=fake_logits.detach().mean()
        )


def build_adversarial(args, trainer, total_steps: int, discriminator: torch.nn.Module | None = None):
    """``AdversarialTraining`` for ``add_gan_arguments`` options, or None when ``--gan-weight 0``."""
    if not args.gan_weight:
        return None
    if discriminator is None:
        if not args.disc_model:
            raise ValueError(
                "--gan-weight > 0 needs --disc-model (a DINO ViT such as facebook/dino-vits16), or --gan-weight 0"
            )
        discriminator = DinoDiscriminator.from_pretrained(args.disc_model)
    return AdversarialTraining(args, trainer, discriminator, total_steps)


__all__ = ["AdversarialTraining", "add_gan_arguments", "build_adversarial"]
