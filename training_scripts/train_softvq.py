"""Train a SoftVQ-VAE (``SoftVQModel``) with accelerate; ``train_maetok.py`` runs the same loop for MAETok.

The recipe of ``continuous_tokenizer`` (``train/train_tokenizer.py``, ``losses/vq_loss.py``, ``softvq-l-64.yaml``):
random resized crop (scale 0.8-1) + flip to the model's image size; loss = L2 + LPIPS-VGG (weight ramped
linearly over ``--perceptual-warmup`` steps) + the soft quantizer's entropy regulariser (in the model) +
0.1 * REPA (latent tokens -> MLP -> each repeated N/L times vs DINOv2 patch features, negative cosine) +
the GAN of ``hf_vtok.training.adversarial`` (DINO discriminator, hinge, LeCAM 0.001, consistency 4.0,
DiffAugment; weight 0.2 from step 20k). Adam (0.9, 0.95) lr 1e-4 (the yaml's ``optim: adamw`` is ignored
by the original argparse), cosine to 0.1x after warmup, gradient clipping 1.0, EMA 0.9999.

MAETok (``train_maetok.py``): the encoder masks 40-60% of the patches while training and auxiliary shallow
decoders predict HOG / DINOv2 / SigLIP features of the masked patches (``MAETokModel`` computes these losses);
AdamW (0.9, 0.95), weight decay 1e-4, GAN weight 0.4 with the adaptive weight, from step 30k.

Teachers and the discriminator backbone are transformers models given as folders or Hub ids
(``--repa-model facebook/dinov2-large``, ``--disc-model facebook/dino-vits16``, ...); LPIPS loads the published
VGG16 / LPIPS files (``--lpips-vgg``, ``--lpips-heads``; ``--lpips random`` for smoke tests).

    accelerate launch training_scripts/train_softvq.py --preset softvq-l-64 --train-data /data/imagenet/train \\
        --output-dir runs/softvq --mixed-precision bf16 --repa-model facebook/dinov2-large \\
        --disc-model facebook/dino-vits16
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from hf_vtok import (
    MAETOK_PRESETS,
    SOFTVQ_PRESETS,
    LatentTokenImageProcessor,
    MAETokConfig,
    MAETokModel,
    SoftVQConfig,
    SoftVQModel,
)
from hf_vtok.losses import LPIPS, RepaProjector, repa_loss
from hf_vtok.models.maetok.feature_targets_maetok import MAETokFeatureTargets
from hf_vtok.training import (
    Trainer,
    add_data_arguments,
    add_training_arguments,
    build_image_dataset,
    build_optimizer,
    build_scheduler,
    horizontal_flip,
    parse_with_config,
    random_resized_crop,
    to_pixel_values,
)
from hf_vtok.training.adversarial import add_gan_arguments, build_adversarial
from hf_vtok.utils.errors import ArgumentParser, run_script

FAMILIES = {
    "softvq": (SoftVQConfig, SoftVQModel, SOFTVQ_PRESETS),
    "maetok": (MAETokConfig, MAETokModel, MAETOK_PRESETS),
}
RECIPE_DEFAULTS = {
    "softvq": dict(
        optimizer="adam", weight_decay=0.0, gan_weight=0.2, disc_start=20_000, repa_weight=0.1, entropy_loss_ratio=0.01
    ),
    "maetok": dict(
        optimizer="adamw",
        weight_decay=1e-4,
        gan_weight=0.4,
        disc_start=30_000,
        disc_adaptive_weight=True,
        repa_weight=0.0,
    ),
}


def build_parser(family: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--preset", help=f"sizes of a release: {sorted(FAMILIES[family][2])} (random initialisation)")
    model.add_argument("--model-config", help="JSON file (or inline JSON) of config fields, applied after --preset")
    model.add_argument("--pretrained", help="start from this hf_vtok folder")
    model.add_argument("--entropy-loss-ratio", type=float, help="SoftVQ entropy regulariser weight (0.01)")
    loss = parser.add_argument_group("losses")
    loss.add_argument("--reconstruction-weight", type=float, default=1.0)
    loss.add_argument("--perceptual-weight", type=float, default=1.0, help="LPIPS-VGG weight (0 disables)")
    loss.add_argument("--perceptual-warmup", type=int, default=10_000, help="steps of the linear LPIPS weight ramp")
    loss.add_argument(
        "--lpips",
        choices=["pretrained", "random"],
        default="pretrained",
        help="random: an untrained LPIPS network (smoke tests only)",
    )
    loss.add_argument("--lpips-vgg", help="torchvision vgg16 weights (path, URL or hf://)")
    loss.add_argument("--lpips-heads", help="LPIPS v0.1 vgg.pth heads (default: the copy inside torchmetrics)")
    loss.add_argument("--repa-weight", type=float, help="REPA alignment weight (SoftVQ: 0.1; needs --repa-model)")
    loss.add_argument("--repa-model", help="DINOv2 teacher of REPA (folder or Hub id)")
    loss.add_argument("--repa-hidden-size", type=int, default=1024)
    loss.add_argument(
        "--teacher-patch-size",
        type=int,
        default=16,
        help="teachers see the image resized so that their patch grid is image_size / this (the original's "
        "patch-16 DINOv2 / SigLIP; a patch-14 Hub DINOv2 then reads 224 pixels of a 256 image)",
    )
    loss.add_argument(
        "--auxiliary-weight", type=float, default=1.0, help="MAETok: weight of each auxiliary feature loss"
    )
    loss.add_argument("--aux-dinov2-model", help="MAETok: DINOv2 teacher of the 'dinov2' auxiliary target")
    loss.add_argument("--aux-siglip-model", help="MAETok: SigLIP teacher (its vision tower) of the 'siglip' target")
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--optimizer", choices=["adam", "adamw"])
    optim.add_argument("--lr", type=float, default=1e-4)
    optim.add_argument("--min-lr-ratio", type=float, default=0.1)
    optim.add_argument("--warmup-steps", type=int, default=5000, help="one ImageNet epoch at batch 256")
    optim.add_argument("--weight-decay", type=float)
    optim.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    augment = parser.add_argument_group("augmentation")
    augment.add_argument("--crop-scale", type=float, nargs=2, default=(0.8, 1.0))
    add_gan_arguments(parser)
    add_data_arguments(parser)
    add_training_arguments(parser, max_steps=250_000, batch_size=32, seed=42, grad_clip=1.0)
    parser.set_defaults(**RECIPE_DEFAULTS[family])
    return parser


def build_model(args, family: str):
    config_class, model_class, presets = FAMILIES[family]
    if args.pretrained:
        return model_class.from_pretrained(args.pretrained)
    fields = {}
    if args.preset:
        if args.preset not in presets:
            raise ValueError(f"unknown {family} preset {args.preset!r}; choose from {sorted(presets)}")
        release = presets[args.preset]
        fields.update(
            num_latent_tokens=release.num_latent_tokens,
            latent_channels=release.latent_channels,
            image_size=release.image_size,
        )
    if args.model_config:
        inline = args.model_config.lstrip().startswith("{")
        text = args.model_config if inline else Path(args.model_config).read_text()
        fields.update(json.loads(text))
    if family == "softvq" and args.entropy_loss_ratio is not None:
        fields["entropy_loss_ratio"] = args.entropy_loss_ratio
    if family == "maetok":
        targets = list(fields.get("auxiliary_targets", ["hog"]))
        for name, teacher in (("dinov2", args.aux_dinov2_model), ("siglip", args.aux_siglip_model)):
            if teacher and name not in targets:
                targets.append(name)
        fields["auxiliary_targets"] = targets
    return model_class(config_class(**fields))


def _teacher(name_or_path: str | None, device, vision_only: bool = False):
    """A frozen transformers teacher; ``vision_only`` loads the vision tower of a (full) SigLIP checkpoint."""
    if not name_or_path:
        return None
    from transformers import AutoModel, SiglipVisionModel

    loader = SiglipVisionModel if vision_only else AutoModel
    return loader.from_pretrained(name_or_path).to(device).requires_grad_(False).eval()


def main(argv=None, family: str = "softvq") -> Path:
    args = parse_with_config(build_parser(family), argv)
    trainer = Trainer(args, find_unused_parameters=True)
    device = trainer.device
    model = build_model(args, family)
    config = model.config
    processor = LatentTokenImageProcessor.for_model(config)

    perceptual = None
    if args.perceptual_weight > 0:
        perceptual = LPIPS() if args.lpips == "random" else LPIPS.from_pretrained(args.lpips_vgg, args.lpips_heads)
        perceptual = perceptual.to(device)
    projector, repa_targets = None, None
    if args.repa_weight:
        if not args.repa_model:
            raise ValueError("--repa-weight > 0 needs --repa-model (a DINOv2 folder or Hub id), or --repa-weight 0")
        teacher = _teacher(args.repa_model, device)
        grid = (config.image_size // args.teacher_patch_size,) * 2
        repa_targets = MAETokFeatureTargets(dinov2=teacher, grid_size=grid)
        projector = RepaProjector(config.latent_channels, teacher.config.hidden_size, args.repa_hidden_size)
    auxiliary_targets = None
    if family == "maetok" and config.auxiliary_targets:
        auxiliary_targets = MAETokFeatureTargets.for_config(
            config,
            dinov2=_teacher(args.aux_dinov2_model, device),
            siglip=_teacher(args.aux_siglip_model, device, vision_only=True),
            resize_to_grid=True,
        )

    trained = torch.nn.ModuleDict({"model": model, **({"projector": projector} if projector is not None else {})})
    optimizer = build_optimizer(trained, args.optimizer, args.lr, args.betas, args.weight_decay)
    scheduler = build_scheduler(optimizer, args.max_steps, args.warmup_steps, args.lr * args.min_lr_ratio)
    model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
    if projector is not None:  # prepared models are part of every checkpoint
        projector = trainer.prepare(projector)
    args.min_lr = args.lr * args.min_lr_ratio
    gan = build_adversarial(args, trainer, total_steps=args.max_steps)
    trainer.add_model("model", model, save_extra=processor.save_pretrained)
    last_layer = trainer.accelerator.unwrap_model(model).decoder.output_proj.weight

    def train_step(batch, step):
        accelerator = trainer.accelerator
        pixels = batch["pixel_values"]
        logs = {}
        with accelerator.autocast():
            output = model(pixels, feature_targets=auxiliary_targets) if family == "maetok" else model(pixels)
            reconstruction = output.sample
        rec = F.mse_loss(reconstruction.float(), pixels.float())
        loss = args.reconstruction_weight * rec
        logs["l2"] = rec.detach()
        if perceptual is not None:
            lpips = perceptual(reconstruction.float(), pixels.float()).mean()
            ramp = min(1.0, step / args.perceptual_warmup) if args.perceptual_warmup else 1.0
            loss = loss + ramp * args.perceptual_weight * lpips
            logs["lpips"] = lpips.detach()
        for name, value in (output.losses or {}).items():
            weight = args.auxiliary_weight if family == "maetok" else 1.0  # SoftVQ: the entropy term is pre-weighted
            loss = loss + weight * value
            logs[f"{name}_loss"] = value.detach()
        if projector is not None:
            features = repa_targets(pixels)["dinov2"]
            with accelerator.autocast():
                alignment = repa_loss(projector(output.latents), features)
            loss = loss + args.repa_weight * alignment
            logs["repa"] = alignment.detach()
        if gan is not None:
            loss = loss + gan.generator_loss(reconstruction, loss, last_layer, step, logs)
        parameters = list(model.parameters()) + (list(projector.parameters()) if projector is not None else [])
        logs.update(trainer.optimizer_step(loss, optimizer, scheduler, parameters), loss=loss.detach())
        if gan is not None:
            gan.discriminator_step(pixels, reconstruction, step, logs)
        return logs

    def transform(image, rng):
        image = random_resized_crop(image, config.image_size, rng, scale=tuple(args.crop_scale))
        return {"pixel_values": to_pixel_values(horizontal_flip(image, rng))}

    return trainer.fit(train_step, build_image_dataset(args, transform))


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
