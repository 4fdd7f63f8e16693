"""Train a FlowMo tokenizer (``FlowMoModel``) with accelerate: stage 1 (pre-training) or stage 2 (post-training).

The recipe of ``kylesargent/FlowMo`` (``flowmo/train.py``, ``models.rf_loss``, ``configs/base.yaml``, README):

Stage 1, ``--stage pretrain``: resize the shorter side to the model's image size and crop a random square (no
flip); flow times from ``config.timestep_sampling`` (fat-lognormal: sigmoid(N(0, 1)), uniform for 10%); loss =
rectified-flow loss ``mean((noise - v - x)^2)`` + the quantizer terms of the model (LFQ entropy 0.0025 and
commitment 0.000625, or the KL) + 0.1 * LPIPS-VGG between the image and the one-step estimate ``x_t - t v``. Each
batch is split into ``--grad-accumulation`` chunks (each loss divided by their number). Adam (0.9, 0.95), lr 1e-4,
no weight decay, warmup, schedule or clipping. After every step each Linear weight inside the transformer blocks
is rescaled to the Frobenius norm it had at the start (``--fix-initial-norms``). From ``--freeze-encoder-after``
(200k) the encoder is frozen and the Adam state is reset (the original rebuilds its optimizer there). EMA 0.9999
per step, updated every 10 steps with ``0.9999 ** 10``.

Stage 2, ``--stage posttrain`` (``--pretrained`` a stage-1 folder): the encoder is frozen from the start, the lr is
5e-5, and the perceptual term compares the image with a sample drawn through ``--posttrain-steps`` (8) Euler steps
on random per-sample time grids, backpropagating through the whole chain; the perceptual loss is the MSE of
ResNet-50 ImageNet logits (``--lpips-mode resnet``, weight 0.01). Each sampler step's decoder call is recomputed in
the backward pass (``--checkpoint-sampler-steps``, on by default here; ``--gradient-checkpointing`` also keeps only
block inputs during that recomputation). Post-training over-optimises its perceptual loss ("reward hacking"), so
``--eval-data`` held-out images are reconstructed every ``--eval-every`` steps: the best weights (EMA when kept) are
saved as ``model_best`` and ``--early-stopping-patience`` evaluations without improvement end the run.

    accelerate launch training_scripts/train_flowmo.py --stage pretrain --preset flowmo-lo \\
        --train-data /data/imagenet/train --output-dir runs/flowmo-lo --mixed-precision bf16
    accelerate launch training_scripts/train_flowmo.py --stage posttrain --pretrained runs/flowmo-lo/model \\
        --train-data /data/imagenet/train --eval-data /data/imagenet/val_subset --output-dir runs/flowmo-lo-post \\
        --mixed-precision bf16 --resnet-weights resnet50-0676ba61.pth
"""

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_vtok import FlowMoConfig, FlowMoImageProcessor, FlowMoModel
from hf_vtok.losses import LPIPS, ResNetLogitPerceptualLoss
from hf_vtok.models.flowmo.image_processing_flowmo import shorter_side_size
from hf_vtok.training import (
    EarlyStopping,
    Trainer,
    add_data_arguments,
    add_training_arguments,
    build_image_dataset,
    build_optimizer,
    parse_with_config,
    to_pixel_values,
)
from hf_vtok.training.early_stopping import HIGHER_IS_BETTER
from hf_vtok.training.trainer import fresh_copy_with_state
from hf_vtok.utils.errors import ArgumentParser, run_script

STAGE_DEFAULTS = {
    # configs/base.yaml (opt, trainer, model.ema_decay) and the README's post-training overrides
    "pretrain": dict(
        lr=1e-4, lpips_mode="vgg", lpips_weight=0.1, batch_size=16, freeze_encoder_after=200_000, posttrain_steps=0
    ),
    "posttrain": dict(
        lr=5e-5, lpips_mode="resnet", lpips_weight=0.01, batch_size=8, freeze_encoder_after=0, posttrain_steps=8
    ),
}


def build_parser(stage: str | None = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=sorted(STAGE_DEFAULTS), default="pretrain")
    model = parser.add_argument_group("model")
    model.add_argument("--preset", help="sizes of a release (flowmo-lo, flowmo-hi, flowmo-p8), randomly initialised")
    model.add_argument("--model-config", help="JSON file (or inline JSON) of config fields, applied after --preset")
    model.add_argument("--pretrained", help="start from this hf_vtok FlowMo folder (stage 2: the stage-1 model)")
    loss = parser.add_argument_group("losses")
    loss.add_argument("--lpips-mode", choices=["vgg", "resnet"], help="perceptual loss: LPIPS-VGG or ResNet-50 logits")
    loss.add_argument("--lpips-weight", type=float, help="0 disables the perceptual term")
    loss.add_argument(
        "--lpips",
        choices=["pretrained", "random"],
        default="pretrained",
        help="random: untrained networks (tests only)",
    )
    loss.add_argument("--lpips-vgg", help="torchvision vgg16 weights of LPIPS (path, URL or hf://)")
    loss.add_argument("--lpips-heads", help="LPIPS v0.1 vgg.pth heads (default: the copy inside torchmetrics)")
    loss.add_argument("--resnet-weights", help="torchvision resnet50 weights or a transformers ResNet (resnet mode)")
    loss.add_argument("--resnet-config", help="JSON of a transformers ResNetConfig for --lpips random (tests)")
    train = parser.add_argument_group("FlowMo recipe")
    train.add_argument("--grad-accumulation", type=int, default=2, help="chunks each batch is split into (n_grad_acc)")
    train.add_argument("--freeze-encoder-after", type=int, help="step from which the encoder is frozen")
    train.add_argument(
        "--fix-initial-norms",
        choices=["l2", "channel", "none"],
        default="l2",
        help="rescale block Linear weights after each step to their initial Frobenius (l2) or per-row norms",
    )
    train.add_argument("--posttrain-steps", type=int, help="sampler steps backpropagated through (stage 2: 8)")
    train.add_argument(
        "--checkpoint-sampler-steps",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute each sampler step's decoder call in the backward pass (default: on in stage 2)",
    )
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--lr", type=float)
    optim.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    optim.add_argument("--weight-decay", type=float, default=0.0)
    evaluation = parser.add_argument_group("held-out evaluation and early stopping")
    evaluation.add_argument("--eval-data", help="held-out images (folder, shards or datasets id), center-cropped")
    evaluation.add_argument("--eval-images", type=int, default=64, help="how many of them to reconstruct")
    evaluation.add_argument("--eval-every", type=int, default=1000, help="steps between evaluations (0: never)")
    evaluation.add_argument("--eval-metric", choices=["psnr", "lpips"], default="psnr")
    evaluation.add_argument("--eval-batch-size", type=int, default=8)
    evaluation.add_argument(
        "--eval-sampler-steps", type=int, help="sampler steps of the reconstruction (model default)"
    )
    evaluation.add_argument("--eval-weights", choices=["ema", "online"], default="ema")
    evaluation.add_argument("--early-stopping-patience", type=int, default=0, help="0: only track the best weights")
    evaluation.add_argument("--early-stopping-min-delta", type=float, default=0.0)
    add_data_arguments(parser)
    add_training_arguments(parser, max_steps=1_300_000, seed=0, ema_decay=0.9999, ema_update_every=10)
    parser.set_defaults(**STAGE_DEFAULTS[stage or "pretrain"])
    return parser


def parse_arguments(argv=None) -> argparse.Namespace:
    """Stage defaults depend on ``--stage``: read it first, then parse with that stage's defaults."""
    stage, _ = build_parser().parse_known_args(argv)
    args = parse_with_config(build_parser(stage.stage), argv)
    if args.checkpoint_sampler_steps is None:
        args.checkpoint_sampler_steps = args.stage == "posttrain"
    if args.stage == "posttrain" and args.posttrain_steps < 1:
        raise ValueError(
            f"stage 2 backpropagates through the sampler: --posttrain-steps must be >= 1, got {args.posttrain_steps}"
        )
    if args.grad_accumulation < 1 or args.batch_size % args.grad_accumulation:
        raise ValueError(
            f"--batch-size {args.batch_size} must split into --grad-accumulation {args.grad_accumulation} equal chunks"
        )
    return args


def build_model(args) -> FlowMoModel:
    if args.pretrained:
        return FlowMoModel.from_pretrained(args.pretrained)
    fields = {}
    if args.model_config:
        inline = args.model_config.lstrip().startswith("{")
        fields = json.loads(args.model_config if inline else Path(args.model_config).read_text())
    config = FlowMoConfig.from_preset(args.preset, **fields) if args.preset else FlowMoConfig(**fields)
    return FlowMoModel(config)


def build_perceptual(args, mode: str, device):
    """The frozen perceptual network: ``vgg`` LPIPS or ``resnet`` logit MSE (``random`` weights for tests)."""
    if args.lpips == "random":
        return random_perceptual(mode, args.resnet_config).to(device)
    if mode == "vgg":
        return LPIPS.from_pretrained(args.lpips_vgg, args.lpips_heads).to(device)
    return ResNetLogitPerceptualLoss.from_pretrained(args.resnet_weights).to(device)


def random_perceptual(mode: str, resnet_config: str | None = None):
    """Untrained perceptual network for smoke tests, always the same one (seed 0, the run's streams untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if mode == "vgg":
            return LPIPS()
        config = None
        if resnet_config:
            from transformers import ResNetConfig

            config = ResNetConfig(**json.loads(resnet_config))
        return ResNetLogitPerceptualLoss(config)


# ------------------------------------------------------------------------------------------------------
class InitialNormFix:
    """FlowMo's ``fix_initial_norms``: after each step, every Linear weight in the transformer blocks (the
    original's ``double_blocks``) is rescaled to its norm at the start of the run (the whole matrix, ``l2``, or
    each output row, ``channel``). The norms are checkpointed, so a resumed run keeps the first run's norms."""

    def __init__(self, model: torch.nn.Module, mode: str):
        self.mode = mode
        self.weights = {
            name: module.weight
            for name, module in model.named_modules()
            if ".blocks." in f".{name}" and isinstance(module, torch.nn.Linear)
        }
        self.norms = {name: self._norm(weight).detach().clone() for name, weight in self.weights.items()}

    def _norm(self, weight: torch.Tensor) -> torch.Tensor:
        weight = weight.detach().float()
        return weight.norm(dim=1, keepdim=True) if self.mode == "channel" else weight.norm()

    @torch.no_grad()
    def apply(self) -> None:
        for name, weight in self.weights.items():
            weight.mul_((self.norms[name] / self._norm(weight)).to(weight.dtype))

    def state_dict(self) -> dict:
        return {"mode": self.mode, "norms": dict(self.norms)}

    def load_state_dict(self, state: dict) -> None:
        for name, norm in state["norms"].items():
            self.norms[name].copy_(norm)


def resize_and_random_crop(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """The original's training view: shorter side resized to ``size`` (bilinear), then a random square crop."""
    height, width = shorter_side_size(image.height, image.width, size)
    image = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
    return image.crop((left, top, left + size, top + size))


def load_held_out(args, config) -> torch.Tensor:
    """The first ``--eval-images`` held-out images as pixel values (the image processor's resize + center crop)."""
    from hf_vtok.data.sources import open_image_source

    source = open_image_source(args.eval_data)
    count = min(args.eval_images, len(source))
    if count == 0:
        raise ValueError(f"--eval-data {args.eval_data} holds no images")
    processor = FlowMoImageProcessor(image_size=config.image_size)
    images = [source[index][1] for index in range(count)]
    return processor(images, return_tensors="pt")["pixel_values"]


# ------------------------------------------------------------------------------------------------------
def main(argv=None) -> Path:
    args = parse_arguments(argv)
    # the encoder heads the decoder does not read (and the frozen encoder) get no gradient
    trainer = Trainer(args, find_unused_parameters=True)
    accelerator, device = trainer.accelerator, trainer.device
    model = build_model(args)
    config = model.config
    processor = FlowMoImageProcessor(image_size=config.image_size)
    perceptual = build_perceptual(args, args.lpips_mode, device) if args.lpips_weight else None
    norm_fix = InitialNormFix(model, args.fix_initial_norms) if args.fix_initial_norms != "none" else None

    optimizer = build_optimizer(model, "adam", args.lr, args.betas, args.weight_decay)
    model, optimizer = trainer.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    ema = trainer.add_model("model", model, save_extra=processor.save_pretrained)
    if norm_fix is not None:
        trainer.add_state("initial_norms", norm_fix)

    early_stopping, evaluated = None, {}  # evaluated: the copy the last evaluation used
    if args.eval_data:
        held_out = load_held_out(args, config)
        metric = perceptual if args.eval_metric == "lpips" and args.lpips_mode == "vgg" else None
        if args.eval_metric == "lpips" and metric is None:
            metric = build_perceptual(args, "vgg", device)

        def evaluation_model() -> FlowMoModel:
            """An unsharded copy of the EMA (or online) weights; gathering them is collective, so every process
            builds it (the best one is saved from it without gathering again)."""
            state = accelerator.get_state_dict(model)
            if args.eval_weights == "ema" and ema is not None:
                state = ema.averaged_state_dict(state)
            return fresh_copy_with_state(unwrapped, {key: value.cpu() for key, value in state.items()}).to(device)

        @torch.no_grad()
        def evaluate(step: int) -> float:
            network, values = evaluation_model().eval(), []
            evaluated["model"] = network
            generator = torch.Generator(device).manual_seed(args.seed)  # the same sampler noise every time
            for start in range(0, len(held_out), args.eval_batch_size):
                pixels = held_out[start : start + args.eval_batch_size].to(device)
                with accelerator.autocast():
                    sample = network(pixels, generator=generator, num_inference_steps=args.eval_sampler_steps).sample
                if metric is None:
                    from hf_vtok.metrics.image_quality import psnr

                    values.append(psnr(sample.float() / 2 + 0.5, pixels / 2 + 0.5))
                else:
                    values.append(metric(sample.float(), pixels).flatten())
            return float(torch.cat(values).mean())

        def save_best(step: int, value: float) -> None:
            if accelerator.is_main_process:
                evaluated["model"].save_pretrained(trainer.output_dir / "model_best")
                processor.save_pretrained(trainer.output_dir / "model_best")
            accelerator.wait_for_everyone()

        early_stopping = EarlyStopping(
            trainer,
            evaluate,
            args.eval_metric,
            HIGHER_IS_BETTER[args.eval_metric],
            every=args.eval_every,
            patience=args.early_stopping_patience,
            min_delta=args.early_stopping_min_delta,
            on_best=save_best,
        )
        trainer.add_state("early_stopping", early_stopping)

    def freeze_encoder(step: int) -> None:
        """Frozen from ``--freeze-encoder-after`` on; at that very step the Adam state is reset, as the original
        rebuilds its optimizer there (a run resumed later keeps the state it had)."""
        if step < args.freeze_encoder_after or not any(p.requires_grad for p in unwrapped.encoder.parameters()):
            return
        unwrapped.encoder.requires_grad_(False)
        for parameter in unwrapped.encoder.parameters():
            parameter.grad = None
        if step == args.freeze_encoder_after:
            optimizer.optimizer.state.clear()
            trainer.print(f"step {step}: encoder frozen, optimizer state reset")

    chunks = args.grad_accumulation

    def train_step(batch, step):
        freeze_encoder(step)
        pixels = batch["pixel_values"]
        logs: dict[str, float] = {}
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for index, chunk in enumerate(pixels.chunk(chunks)):
            last = index == chunks - 1
            with accelerator.no_sync(model) if not last else contextlib.nullcontext(), accelerator.autocast():
                output = model(
                    chunk,
                    return_loss=True,
                    posttrain_steps=args.posttrain_steps or None,
                    checkpoint_posttrain_steps=args.checkpoint_sampler_steps,
                )
                loss = output.loss
                if perceptual is not None:
                    estimate = output.posttrain_sample if output.posttrain_sample is not None else output.sample
                    perceptual_loss = args.lpips_weight * perceptual(chunk.float(), estimate.float()).mean()
                    loss = loss + perceptual_loss
                    _accumulate(logs, "perceptual_loss", perceptual_loss, chunks)
                for name, value in output.losses.items():
                    _accumulate(logs, name, value, chunks)
                accelerator.backward(loss / chunks)
            total += float(loss.detach()) / chunks
        if not all(math.isfinite(value) for value in logs.values()):
            raise FloatingPointError(f"non-finite loss at step {step + 1}: {logs}")
        optimizer.step()
        if norm_fix is not None:
            norm_fix.apply()
        logs["loss"] = total
        if early_stopping is not None:
            logs.update(early_stopping.maybe_evaluate(step + 1))
            evaluated.clear()
        return logs

    def transform(image, rng):
        return {"pixel_values": to_pixel_values(resize_and_random_crop(image, config.image_size, rng))}

    return trainer.fit(train_step, build_image_dataset(args, transform))


def _accumulate(logs: dict, name: str, value: torch.Tensor, chunks: int) -> None:
    logs[name] = logs.get(name, 0.0) + float(value.detach()) / chunks


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
