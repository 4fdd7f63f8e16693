"""Train a ViTok-v2 autoencoder (``ViTokModel``) with accelerate.

The recipe of ``scripts/train_vae.py`` (ViTok-v2): NaFlex patch sequences from
``random_choice([random_resized_crop(S), identity], [0.25, 0.75]) | flip | resize_to_token_budget | patchify``;
loss = Charbonnier (weight 1, eps 1e-3, masked per token) + 0.1 * (1 - SSIM) + 500 * DINO perceptual, the
last two on one random ``--tile-size`` tile per image (canvas padded with -1); AdamW (0.9, 0.99), weight
decay 0.01 on matrices, lr 3e-4 with 5% linear warmup from 1e-7 and cosine decay to 1e-5, no gradient
clipping. An optional GAN (DINO discriminator, hinge + LeCAM, as the SoftVQ recipe) is off by default, as
in the original. ``--crop random`` trains on random crops at native resolution instead (the embedded
default model). The DINO perceptual loss needs a local or Hub DINO model (``--dino-model``).

    accelerate launch training_scripts/train_vitok.py --variant Ld4-Ld24/1x16x64 \\
        --train-data /data/imagenet/train --output-dir runs/vitok --mixed-precision bf16 \\
        --dino-model facebook/dinov3-vits16-pretrain-lvd1689m
"""

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel
from hf_vtok.losses import DinoPerceptualLoss, charbonnier_loss, ssim_loss
from hf_vtok.models.vitok.image_processing_vitok import naflex_patches
from hf_vtok.training import (
    Trainer,
    add_data_arguments,
    add_training_arguments,
    build_image_dataset,
    build_optimizer,
    build_scheduler,
    collate_samples,
    horizontal_flip,
    parse_with_config,
    random_crop,
    random_resized_crop,
    to_pixel_values,
)
from hf_vtok.training.adversarial import add_gan_arguments, build_adversarial
from hf_vtok.utils.errors import ArgumentParser, run_script

SEQUENCE_KEYS = ("pixel_values", "patch_mask", "row_idx", "col_idx")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--variant", default="Ld4-Ld24/1x16x64", help="ViTok variant string or release name")
    model.add_argument("--pretrained", help="start from this hf_vtok ViTok folder instead of a random initialisation")
    model.add_argument(
        "--mask-padding",
        action="store_true",
        help="mask padding tokens out of attention (the original lets them attend)",
    )
    model.add_argument("--drop-path-rate", type=float, default=0.0)
    augment = parser.add_argument_group("augmentation")
    augment.add_argument(
        "--crop",
        choices=["vitok", "random"],
        default="vitok",
        help="vitok: the original random_choice(random_resized_crop, identity) | flip; "
        "random: random crops of --crop-min..--crop-max pixels at native resolution | flip",
    )
    augment.add_argument("--image-size", type=int, default=256, help="random_resized_crop size (vitok crop)")
    augment.add_argument("--crop-probability", type=float, default=0.25, help="probability of random_resized_crop")
    augment.add_argument("--crop-min", type=int, default=64)
    augment.add_argument("--crop-max", type=int, default=256)
    augment.add_argument(
        "--max-tokens",
        type=int,
        default=256,
        help="token budget per image (resize_to_token_budget); batches are padded to their longest sequence",
    )
    loss = parser.add_argument_group("losses")
    loss.add_argument("--charbonnier-weight", type=float, default=1.0)
    loss.add_argument("--charbonnier-eps", type=float, default=1e-3)
    loss.add_argument("--ssim-weight", type=float, default=0.1)
    loss.add_argument("--dino-weight", type=float, default=500.0, help="DINO perceptual weight (needs --dino-model)")
    loss.add_argument("--dino-model", help="DINO backbone folder or Hub id (facebook/dinov3-vits16-pretrain-lvd1689m)")
    loss.add_argument("--dino-size", type=int, default=256, help="DINO perceptual input size limit")
    loss.add_argument("--tile-size", type=int, default=256, help="tile side for the SSIM / DINO losses")
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--lr", type=float, default=3e-4)
    optim.add_argument("--min-lr", type=float, default=1e-5)
    optim.add_argument("--warmup-start-lr", type=float, default=1e-7)
    optim.add_argument("--warmup-ratio", type=float, default=0.05)
    optim.add_argument("--weight-decay", type=float, default=0.01)
    optim.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.99))
    add_gan_arguments(parser, gan_weight=0.0)
    add_data_arguments(parser)
    add_training_arguments(parser, max_steps=100_000, batch_size=32, seed=42, grad_clip=0.0)
    return parser


def naflex_sample(pixels: torch.Tensor, patch_size: int, max_tokens: int) -> dict:
    """``[3, H, W]`` in [-1, 1] -> one unpadded NaFlex sample, as ``ViTokImageProcessor(do_resize=True,
    resize_mode="token_budget", padding="longest")`` makes it (its per-image step, without the per-call overhead)."""
    return naflex_patches(pixels, patch_size, token_budget=max_tokens)


def make_transform(args, patch_size: int):
    """PIL image + generator -> a NaFlex sample of the original's training pre-processing (or random crops)."""

    def transform(image, rng):
        if args.crop == "random":
            image = random_crop(image, args.crop_min, args.crop_max, rng, multiple=patch_size)
        elif rng.random() < args.crop_probability:
            image = random_resized_crop(
                image, args.image_size, rng, scale=(0.8, 1.0), resample=Image.Resampling.LANCZOS
            )
        image = horizontal_flip(image, rng)
        return naflex_sample(to_pixel_values(image), patch_size, args.max_tokens)

    return transform


def random_tiles(processor, prediction, batch, tile: int, generator=None):
    """One random ``tile`` x ``tile`` crop per image of the decoded and the input patch canvases, outside the
    valid region filled with -1 (ViTok's tile loss inputs). Returns ``(prediction_tiles, target_tiles)``."""
    layout = {key: batch[key] for key in ("patch_mask", "row_idx", "col_idx")}
    rows = int(batch["row_idx"][batch["patch_mask"]].max()) + 1
    cols = int(batch["col_idx"][batch["patch_mask"]].max()) + 1
    patch = processor.patch_size
    side = max(tile // patch, rows, cols)
    canvases = []
    for sample in (prediction, batch["pixel_values"]):
        canvas = processor.to_canvas(sample, grid_size=(side, side), **layout)
        canvases.append(canvas)
    height = torch.arange(side * patch, device=prediction.device)
    valid = (height.view(1, -1, 1) < batch["orig_height"].view(-1, 1, 1)) & (
        height.view(1, 1, -1) < batch["orig_width"].view(-1, 1, 1)
    )
    canvases = [torch.where(valid.unsqueeze(1), canvas, torch.full_like(canvas, -1.0)) for canvas in canvases]
    tiles = ([], [])
    for index in range(prediction.shape[0]):
        limit_h = max(0, int(batch["orig_height"][index]) - tile)
        limit_w = max(0, int(batch["orig_width"][index]) - tile)
        top = int(torch.randint(0, limit_h + 1, (), generator=generator))
        left = int(torch.randint(0, limit_w + 1, (), generator=generator))
        for output, canvas in zip(tiles, canvases):
            output.append(canvas[index, :, top : top + tile, left : left + tile])
    return torch.stack(tiles[0]), torch.stack(tiles[1])


def main(argv=None) -> Path:
    args = parse_with_config(build_parser(), argv)
    trainer = Trainer(args)
    if args.pretrained:
        model = ViTokModel.from_pretrained(args.pretrained)
    else:
        model = ViTokModel(
            ViTokConfig.from_variant(args.variant, mask_padding=args.mask_padding, drop_path_rate=args.drop_path_rate)
        )
    patch = model.config.patch_size
    # saved with the model: the original's inference pre-processing (no resize, the same token budget)
    processor = ViTokImageProcessor(patch_size=patch, max_num_patches=args.max_tokens)
    dino = None
    if args.dino_weight > 0 and args.dino_model:
        dino = DinoPerceptualLoss.from_pretrained(args.dino_model, target_size=args.dino_size).to(trainer.device)
    elif args.dino_weight > 0:
        trainer.print("no --dino-model given: training without the DINO perceptual loss")
    optimizer = build_optimizer(model, "adamw", args.lr, args.betas, args.weight_decay)
    warmup = int(args.warmup_ratio * args.max_steps)
    scheduler = build_scheduler(optimizer, args.max_steps, warmup, args.min_lr, args.warmup_start_lr)
    model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
    gan = build_adversarial(args, trainer, total_steps=args.max_steps)
    trainer.add_model("model", model, save_extra=processor.save_pretrained)
    last_layer = trainer.accelerator.unwrap_model(model).decoder.patch_proj.weight

    def train_step(batch, step):
        accelerator = trainer.accelerator
        inputs = {key: batch[key] for key in ("pixel_values", "patch_mask", "row_idx", "col_idx")}
        with accelerator.autocast():
            prediction = model(**inputs).sample
        logs = {}
        rec = charbonnier_loss(prediction, batch["pixel_values"], batch["patch_mask"], args.charbonnier_eps)
        loss = args.charbonnier_weight * rec
        logs["charbonnier"] = rec.detach()
        tiles = None
        if args.ssim_weight > 0 or dino is not None or gan is not None:
            tiles = random_tiles(processor, prediction.float(), batch, args.tile_size)
        if args.ssim_weight > 0:
            ssim = ssim_loss(*tiles)
            loss = loss + args.ssim_weight * ssim
            logs["ssim_loss"] = ssim.detach()
        if dino is not None:
            with accelerator.autocast():
                perceptual = dino(*tiles)
            loss = loss + args.dino_weight * perceptual
            logs["dino_perceptual"] = perceptual.detach()
        if gan is not None:
            loss = loss + gan.generator_loss(tiles[0], loss, last_layer, step, logs)
        logs.update(trainer.optimizer_step(loss, optimizer, scheduler, model.parameters()), loss=loss.detach())
        if gan is not None:
            gan.discriminator_step(tiles[1], tiles[0], step, logs)
        return logs

    collate = partial(collate_samples, pad_keys=SEQUENCE_KEYS)
    return trainer.fit(train_step, build_image_dataset(args, make_transform(args, patch)), collate_fn=collate)


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
