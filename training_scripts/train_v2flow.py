"""Train a V²Flow tokenizer (``V2FlowModel``) with accelerate on cached DC-AE latents.

The recipe of ``zhangguiwei610/V2Flow`` (``main_v2flow.py``, ``engine_v2flow.py``, ``models/V2Flow.py``): the
model's training step (``V2FlowModel.forward`` in training mode) tokenizes the latents (Gumbel-soft resampling
onto the frozen LLM vocabulary, cosine VQ whose codebook follows an EMA of its assignments, gradients through
the rotation trick), masks a share of the tokens drawn from a normal(1, 0.25) truncated to
``[mask_ratio_min, 1]``, replaces a sample's whole condition by the learned null condition with probability
``label_drop_prob``, and regresses the per-token flow head on the masked tokens ``diffusion_batch_mul`` times,
with the ``--flow-method`` objective (``linear_flow``: shifted discrete sigmas, target noise - x; ``CondOT``:
uniform t, target x - noise); loss = flow + commitment. AdamW (0.9, 0.95), lr = blr * global batch / 256 with
blr 1e-4, weight decay 0.02 on every parameter but 1-D ones and biases, linear warmup (the default run is
warmup throughout: 100 of 100 epochs) then constant or cosine, gradient clipping 3.0, non-finite losses skipped,
EMA 0.9999 of the parameters every step (buffers, the codebook included, are the live values).

The latents come from ``hf_vtok cache-latents`` with the DC-AE (``mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers``):
the cache stores raw latents and its ``scaling_factor`` (0.41407), which they are multiplied by here, as the
model expects. The LLM vocabulary is the ``embed_tokens`` matrix file of ``hf_vtok cache-llm-vocabulary``.

    hf_vtok cache-latents --model mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers --images /data/imagenet/train \\
        --resolution 1024 --output latents/imagenet-1024
    accelerate launch training_scripts/train_v2flow.py --latents latents/imagenet-1024 \\
        --llm-vocabulary llama2_vocab.safetensors --flow-method linear_flow --output-dir runs/v2flow \\
        --mixed-precision fp16
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from hf_vtok import V2FlowConfig, V2FlowModel
from hf_vtok.data import load_latent_cache
from hf_vtok.training import (
    CachedLatents,
    Trainer,
    add_training_arguments,
    build_scheduler,
    parse_with_config,
)
from hf_vtok.utils.errors import ArgumentParser, run_script

FLOW_METHODS = ("linear_flow", "CondOT")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--latents", required=True, help="a latent cache folder (hf_vtok cache-latents) of DC-AE latents"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--preset", help="sizes of a release (see hf_vtok.V2FLOW_PRESETS), randomly initialised")
    model.add_argument("--model-config", help="JSON file (or inline JSON) of config fields, applied after --preset")
    model.add_argument("--pretrained", help="continue from this hf_vtok V2Flow folder")
    model.add_argument("--llm-vocabulary", help="LLM embed_tokens file (hf_vtok cache-llm-vocabulary) for a new model")
    model.add_argument(
        "--flow-method",
        "--flow_method",
        choices=FLOW_METHODS,
        help="flow objective of the head (the original's argparse default is CondOT, its docs use linear_flow)",
    )
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--lr", type=float, help="absolute learning rate (default: --blr * global batch / 256)")
    optim.add_argument("--blr", type=float, default=1e-4, help="base learning rate per 256 images")
    optim.add_argument("--min-lr", type=float, default=0.0)
    optim.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    optim.add_argument(
        "--warmup-steps", type=int, help="linear warmup steps (default: the whole run, as the original)"
    )
    optim.add_argument("--weight-decay", type=float, default=0.02)
    optim.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95))
    add_training_arguments(parser, max_steps=100_000, batch_size=16, seed=1, grad_clip=3.0, ema_decay=0.9999)
    return parser


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The original's rule: no decay on 1-D parameters and biases, ``weight_decay`` on everything else."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim == 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_model(args, cache_info: dict, sample: torch.Tensor) -> V2FlowModel:
    overrides = {"flow_method": args.flow_method} if args.flow_method else {}
    if args.pretrained:
        model = V2FlowModel.from_pretrained(args.pretrained, **overrides)
    else:
        from hf_vtok import V2FLOW_PRESETS

        fields = {}
        if args.preset:
            if args.preset not in V2FLOW_PRESETS:
                raise ValueError(f"unknown V2Flow preset {args.preset!r}; choose from {sorted(V2FLOW_PRESETS)}")
            fields.update(V2FLOW_PRESETS[args.preset])
        if args.model_config:
            inline = args.model_config.lstrip().startswith("{")
            fields.update(json.loads(args.model_config if inline else Path(args.model_config).read_text()))
        # the grid and the scaling follow the cache
        fields.update(latent_channels=sample.shape[0], sample_size=sample.shape[-1], **overrides)
        fields["scaling_factor"] = cache_info["scaling_factor"]
        model = V2FlowModel(V2FlowConfig(**fields))
        if model.config.use_llm_vocabulary:
            if not args.llm_vocabulary:
                raise ValueError(
                    "a new V2Flow model with use_llm_vocabulary=True needs --llm-vocabulary (an LLM embed_tokens file "
                    "from hf_vtok cache-llm-vocabulary), or use_llm_vocabulary=false in --model-config"
                )
            model.load_llm_vocabulary(args.llm_vocabulary)
    config = model.config
    if abs(float(config.scaling_factor) - float(cache_info["scaling_factor"])) > 1e-6:
        raise ValueError(
            f"the latent cache {args.latents} scales latents by {cache_info['scaling_factor']} but the model expects "
            f"{config.scaling_factor}: cache the latents with the model's DC-AE"
        )
    if tuple(sample.shape) != (config.latent_channels, config.sample_size, config.sample_size):
        raise ValueError(
            f"the latent cache {args.latents} holds latents of shape {tuple(sample.shape)}, but the model takes "
            f"{(config.latent_channels, config.sample_size, config.sample_size)}"
        )
    return model


def main(argv=None) -> Path:
    args = parse_with_config(build_parser(), argv)
    # with several processes some parameters (the unused buffer slots, the dropped-condition path) may get no gradient
    trainer = Trainer(args, find_unused_parameters=True)
    accelerator = trainer.accelerator
    rows = load_latent_cache(args.latents)
    dataset = CachedLatents(rows, args.seed, layout="grid", unconditional=True)
    if not rows.cache_info.get("shift_factor", 0.0) == 0.0:
        raise ValueError(f"the latent cache {args.latents} has a shift_factor; V2Flow's DC-AE latents have none")
    model = build_model(args, rows.cache_info, dataset[(0, 0)]["latents"])
    if model.config.resampler_sampling != "gumbel" and model.config.use_llm_vocabulary:
        trainer.print(
            f"note: resampler_sampling={model.config.resampler_sampling!r} (the original trains with gumbel)"
        )

    global_batch = args.batch_size * accelerator.num_processes
    args.lr = args.lr if args.lr is not None else args.blr * global_batch / 256
    warmup = args.max_steps if args.warmup_steps is None else args.warmup_steps
    optimizer = torch.optim.AdamW(decay_groups(model, args.weight_decay), lr=args.lr, betas=tuple(args.betas))
    scheduler = build_scheduler(optimizer, args.max_steps, warmup, args.min_lr, schedule=args.lr_schedule)
    model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
    trainer.add_model("model", model)
    skipped = {"count": 0}

    def train_step(batch, step):
        with accelerator.autocast():
            output = model(batch["latents"], return_loss=True)
        loss = output.loss
        logs = {name: float(value.detach()) for name, value in output.losses.items()}
        if not math.isfinite(float(loss.detach())):  # the original skips such iterations
            skipped["count"] += 1
            trainer.print(f"step {step + 1}: non-finite loss {float(loss)}, skipped")
            scheduler.step()
            return {**logs, "loss": float(loss.detach()), "skipped_steps": skipped["count"]}
        logs.update(trainer.optimizer_step(loss, optimizer, scheduler, model.parameters()), loss=float(loss.detach()))
        return logs

    return trainer.fit(train_step, dataset)


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
