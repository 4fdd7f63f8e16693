"""LoRA fine-tuning of a tokenizer's decoder on a folder of images (peft), saving only the adapter.

    accelerate launch training_scripts/finetune_lora.py --model vitok-350M-f16x64 --train-data my_photos/ \\
        --output-dir runs/vitok-lora --max-steps 2000 --batch-size 8 --lora-rank 16 --save-merged

Any hf_vtok tokenizer with a deterministic decoder (ViTok-v2, SoftVQ-VAE, MAETok): the encoder is frozen
and runs without gradients; LoRA adapters go on the decoder's ``nn.Linear`` layers named by the model's
``lora_target_modules`` (the fused attention ``qkv_proj`` / ``out_proj`` and the MLP ``fc1`` / ``fc2``: stock
recipes' ``to_q`` / ``q_proj`` names match nothing in hf_vtok); ``--target-modules`` names other suffixes.
Each image is randomly cropped to ``--crop-size`` (fixed-size models: their ``image_size``), flipped, and
encoded by the model's own image processor; a photo smaller than the crop is first scaled up (bicubic, aspect
kept) until its shorter side is the crop size, so every crop of a batch has one size. The loss
is the Charbonnier reconstruction loss (+ ``--ssim-weight`` x (1 - SSIM) on images of fixed-size models).
The training loop is ``hf_vtok.training.Trainer``: resumable checkpoints (``--resume``), loss curves, DDP
with ``accelerate launch``.

Output: ``<output-dir>/adapter`` (``adapter_config.json`` + ``adapter_model.safetensors``, the LoRA weights
only, and a README.md card whose ``base_model`` is a Hub id or omitted, never a local path) and, with
``--save-merged``, ``<output-dir>/merged``, a plain hf_vtok folder of the merged model.
Load the adapter with ``peft.PeftModel.from_pretrained(AutoModel.from_pretrained(base), "<output-dir>/adapter")``.
"""

import argparse
import copy
import inspect
import sys
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from hf_vtok.commands.reconstruct import processor_for_any_size
from hf_vtok.hub.push import write_adapter_card
from hf_vtok.losses import charbonnier_loss, ssim_loss
from hf_vtok.training import (
    Trainer,
    add_data_arguments,
    add_training_arguments,
    build_image_dataset,
    build_scheduler,
    collate_samples,
    horizontal_flip,
    parse_with_config,
    random_crop,
)
from hf_vtok.utils.errors import ArgumentParser, run_script

ADAPTER_FOLDER = "adapter"
MERGED_FOLDER = "merged"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model and adapter")
    model.add_argument("--model", required=True, help="hf_vtok tokenizer folder or Hub id (the base model)")
    model.add_argument("--lora-rank", type=int, default=16)
    model.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale numerator (default: the rank)")
    model.add_argument("--lora-dropout", type=float, default=0.0)
    model.add_argument(
        "--target-modules",
        nargs="+",
        help="decoder Linear layers whose names end with these (default: the model's lora_target_modules)",
    )
    model.add_argument("--save-merged", action="store_true", help="also save the merged model (merge_and_unload)")
    data = parser.add_argument_group("augmentation")
    data.add_argument(
        "--crop-size",
        type=int,
        default=256,
        help="random crop side (any-size models such as ViTok); smaller photos are scaled up to it first",
    )
    data.add_argument("--flip", type=float, default=0.5, help="horizontal flip probability")
    loss = parser.add_argument_group("loss and optimizer")
    loss.add_argument("--charbonnier-eps", type=float, default=1e-3)
    loss.add_argument("--ssim-weight", type=float, default=0.0, help="weight of 1 - SSIM (fixed-size models)")
    loss.add_argument("--lr", type=float, default=1e-4)
    loss.add_argument("--min-lr", type=float, default=1e-6)
    loss.add_argument("--warmup-steps", type=int, default=0)
    loss.add_argument("--weight-decay", type=float, default=0.0)
    add_data_arguments(parser)
    add_training_arguments(parser, max_steps=1000, batch_size=8, ema_decay=0.0, checkpoint_every=500)
    return parser


def decoder_linear_layers(model: nn.Module, suffixes: list[str] | None = None) -> list[str]:
    """Names of the decoder's ``nn.Linear`` layers (``decoder.*``), optionally only those ending in ``suffixes``."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no `decoder` module to put LoRA adapters on")
    names = [
        f"decoder.{name}"
        for name, module in decoder.named_modules()
        if isinstance(module, nn.Linear) and (not suffixes or any(name.endswith(suffix) for suffix in suffixes))
    ]
    if not names:
        raise ValueError(f"no decoder Linear layer of {type(model).__name__} matches --target-modules {suffixes}")
    return names


def lora_model(model: nn.Module, args) -> nn.Module:
    """The base model frozen, with trainable LoRA adapters on its decoder (a ``peft.PeftModel``)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha if args.lora_alpha is not None else args.lora_rank,
        lora_dropout=args.lora_dropout,
        target_modules=decoder_linear_layers(model, args.target_modules or list(model.lora_target_modules)),
    )
    return get_peft_model(model, config)


class DecoderFineTuning(nn.Module):
    """Encode with the frozen encoder (no gradients), decode through the LoRA-wrapped decoder: the module the
    trainer prepares, so that under DDP the forward goes through the wrapper and the adapter gradients sync."""

    def __init__(self, peft_model: nn.Module):
        super().__init__()
        self.peft_model = peft_model
        tokenizer = peft_model.get_base_model()
        self.encode_arguments = set(inspect.signature(tokenizer.encode).parameters)

    def forward(self, batch: dict) -> torch.Tensor:
        tokenizer = self.peft_model.get_base_model()
        inputs = {key: value for key, value in batch.items() if key in self.encode_arguments}  # not the labels
        with torch.no_grad():
            encoded = tokenizer.encode(**inputs)
        return tokenizer.decode(encoded).sample


def scale_up_to(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled up (bicubic, aspect kept) so that its shorter side is at least ``size``."""
    shorter = min(image.width, image.height)
    if shorter >= size:
        return image
    scale = size / shorter
    target = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    return image.resize(target, Image.Resampling.BICUBIC)


def make_transform(processor, crop_size: int, flip: float):
    """PIL image + generator -> the processor's inputs for one random ``crop_size`` crop (tensors without the batch
    axis); smaller images are scaled up to the crop first (a batch stacks crops of one size)."""

    def transform(image, rng):
        image = scale_up_to(image.convert("RGB"), crop_size)
        image = horizontal_flip(random_crop(image, crop_size, crop_size, rng), rng, flip)
        return {
            key: value[0] for key, value in processor(image, return_tensors="pt").items() if torch.is_tensor(value)
        }

    return transform


def finetune(args: argparse.Namespace):
    """Run the fine-tuning; returns the output folder and the fine-tuned ``PeftModel``."""
    from transformers import AutoImageProcessor, AutoModel

    import hf_vtok  # noqa: F401  (registers the Auto classes)

    trainer = Trainer(args)
    base = AutoModel.from_pretrained(args.model)
    if "generator" in inspect.signature(base.decode).parameters:
        raise ValueError(
            f"{type(base).__name__} decodes by sampling (a flow decoder); this script fine-tunes deterministic "
            "decoders"
        )
    processor = AutoImageProcessor.from_pretrained(args.model)
    fixed_size = getattr(base.config, "image_size", None) if not hasattr(processor, "max_num_patches") else None
    if hasattr(processor, "max_num_patches"):  # NaFlex: crops go in whole, padded to the longest in a batch
        processor.do_resize = False
        processor = processor_for_any_size(processor)
    crop_size = fixed_size or args.crop_size
    tuned = lora_model(base, args)
    model = DecoderFineTuning(tuned)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = build_scheduler(optimizer, args.max_steps, args.warmup_steps, args.min_lr, 0.0)
    model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
    layers = len(tuned.peft_config["default"].target_modules)
    trainer.print(f"LoRA on {layers} decoder layers: {sum(p.numel() for p in trainable)} trainable parameters")

    def train_step(batch, step):
        accelerator = trainer.accelerator
        with accelerator.autocast():
            sample = model(batch)
        target = batch["pixel_values"]
        mask = batch.get("patch_mask")
        reconstruction = charbonnier_loss(sample.float(), target, mask, args.charbonnier_eps)
        loss = reconstruction
        logs = {"charbonnier": reconstruction.detach()}
        if args.ssim_weight > 0 and mask is None:
            structural = ssim_loss(sample.float(), target)
            loss = loss + args.ssim_weight * structural
            logs["ssim_loss"] = structural.detach()
        logs.update(trainer.optimizer_step(loss, optimizer, scheduler, trainable), loss=loss.detach())
        return logs

    pad_keys = tuple(
        key for key in ("pixel_values", "patch_mask", "row_idx", "col_idx", "time_idx") if fixed_size is None
    )
    # the frozen network runs as at inference (no stochastic depth, no masking); only LoRA's dropout trains
    model.eval()
    for name, module in model.named_modules():
        if name.endswith("lora_dropout"):
            module.train()
    output = trainer.fit(
        train_step,
        build_image_dataset(args, make_transform(processor, crop_size, args.flip)),
        collate_fn=partial(collate_samples, pad_keys=pad_keys),
    )
    tuned.eval()
    if trainer.accelerator.is_main_process:
        tuned.save_pretrained(output / ADAPTER_FOLDER)  # adapter_config.json + adapter_model.safetensors only
        write_adapter_card(output / ADAPTER_FOLDER, args.model)  # peft's card names the local base path
        if args.save_merged:
            # merge into a copy: the adapter model stays as trained
            merged = copy.deepcopy(tuned).merge_and_unload()
            merged.save_pretrained(output / MERGED_FOLDER)
            processor.save_pretrained(output / MERGED_FOLDER)
    trainer.accelerator.wait_for_everyone()
    return output, tuned


def main(argv=None) -> Path:
    return finetune(parse_with_config(build_parser(), argv))[0]


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
