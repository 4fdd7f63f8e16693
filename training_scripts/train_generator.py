"""Train a class-conditional generator on cached tokenizer latents (``hf-vtok cache-latents``) with accelerate.

``--model sit``: SiT velocity model (``SiTTransformer1DModel``, continuous_tokenizer ``train_sit.py``):
``x_t = alpha_t x + sigma_t eps`` on the linear (or cosine) path, target the velocity
``alpha'_t x + sigma'_t eps`` (``eps - x`` on the linear path, diffusers' sign), t from the lognormal
(``sigma = exp(N(0, 1))``, ``t = sigma / (1 + sigma)``) or uniform; MSE. AdamW lr 1e-4, betas (0.9, 0.999),
no weight decay, clipping 1.0, EMA 0.9999, label dropout 0.1 (in the model).

``--model dit``: DiT with ADM Gaussian diffusion (``DiTTransformer1DModel``, ``train_dit.py``): integer t
uniform in 0..999, ``eps`` MSE plus the variational bound of the learned-range variance (ADM's ``MSE`` +
``vb`` with the mean frozen), linear or cosine betas; AdamW lr 1e-4, no decay, clipping 5.0, EMA 0.9999.

``--model vitok-dit``: ViTok-v2's DiT (``ViTokDiTTransformerModel``, ``scripts/train_dit.py``): sigma from
the 1000 training sigmas of FlowUniPC, ``x_t = (1 - sigma) z + sigma eps``, target ``eps - z``, fed
``timestep = sigma * 1000`` (the pipeline's convention); class dropout 0.1 to the null id; AdamW lr 1e-4,
betas (0.9, 0.95), 5% warmup then cosine to 0.1x, clipping 1.0, EMA 0.9999 from step 5000.

Latents are normalised with the cache's ``(z - shift_factor) * scaling_factor``; a cache made with
``--flip`` gives the flipped latents half of the time.

    hf-vtok cache-latents --model softvq-l-64 --images imagenet/train --output cache/softvq --resolution 256 --flip
    accelerate launch training_scripts/train_generator.py --model sit --latents cache/softvq \\
        --model-config '{"hidden_size": 1152, "num_layers": 28, "num_attention_heads": 16}' --output-dir runs/sit
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hf_vtok import DiTTransformer1DModel, GaussianDiffusionScheduler, SiTTransformer1DModel, ViTokDiTTransformerModel
from hf_vtok.data import load_latent_cache
from hf_vtok.schedulers.scheduling_sit_flow import path_coefficients
from hf_vtok.training import (
    NO_LABEL,
    CachedLatents,
    Trainer,
    add_training_arguments,
    build_optimizer,
    build_scheduler,
    parse_with_config,
)
from hf_vtok.utils.errors import ArgumentParser, run_script

MODELS = {"sit": SiTTransformer1DModel, "dit": DiTTransformer1DModel, "vitok-dit": ViTokDiTTransformerModel}
RECIPES = {
    "sit": dict(lr=1e-4, betas=(0.9, 0.999), grad_clip=1.0, warmup_ratio=0.0, min_lr_ratio=1.0, ema_start=0),
    "dit": dict(lr=1e-4, betas=(0.9, 0.999), grad_clip=5.0, warmup_ratio=0.0, min_lr_ratio=1.0, ema_start=0),
    "vitok-dit": dict(lr=1e-4, betas=(0.9, 0.95), grad_clip=1.0, warmup_ratio=0.05, min_lr_ratio=0.1, ema_start=5000),
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(MODELS), required=True)
    model.add_argument("--model-config", help="JSON file or inline JSON of the model's arguments (sizes)")
    model.add_argument("--pretrained", help="start from this saved transformer folder")
    model.add_argument("--class-dropout", type=float, default=0.1, help="label dropout to the null class")
    objective = parser.add_argument_group("objective")
    objective.add_argument(
        "--path-type", choices=["linear", "cosine"], default="linear", help="SiT interpolation path"
    )
    objective.add_argument(
        "--time-sampling", choices=["lognormal", "uniform"], default="lognormal", help="SiT flow times"
    )
    objective.add_argument(
        "--beta-schedule", choices=["linear", "cosine"], default="cosine", help="DiT noise schedule"
    )
    data = parser.add_argument_group("data")
    data.add_argument("--latents", required=True, help="a cache folder written by `hf-vtok cache-latents`")
    data.add_argument("--unconditional", action="store_true", help="ignore labels: one class (id 0) for every latent")
    optim = parser.add_argument_group("optimizer")
    optim.add_argument("--lr", type=float)
    optim.add_argument("--betas", type=float, nargs=2)
    optim.add_argument("--weight-decay", type=float, default=0.0)
    optim.add_argument("--warmup-ratio", type=float)
    optim.add_argument("--min-lr-ratio", type=float, help="final lr / lr of the cosine decay (1: constant)")
    add_training_arguments(parser, max_steps=400_000, batch_size=32, seed=0)
    return parser


def build_model(args, tokens: int, channels: int, num_classes: int):
    model_class = MODELS[args.model]
    if args.pretrained:
        return model_class.from_pretrained(args.pretrained)
    fields = {}
    if args.model_config:
        inline = args.model_config.lstrip().startswith("{")
        fields = json.loads(args.model_config if inline else Path(args.model_config).read_text())
    fields.setdefault("in_channels", channels)
    fields.setdefault("num_classes", num_classes)
    fields.setdefault("num_tokens", tokens)
    if args.model in ("sit", "dit"):
        fields.setdefault("class_dropout_prob", args.class_dropout)
    return model_class(**fields)


def sit_loss(model, latents, labels, args) -> torch.Tensor:
    batch = latents.shape[0]
    if args.time_sampling == "lognormal":
        sigma = torch.randn(batch, device=latents.device).exp()
        time = sigma / (1 + sigma) if args.path_type == "linear" else 2 / math.pi * torch.atan(sigma)
    else:
        time = torch.rand(batch, device=latents.device)
    noise = torch.randn_like(latents)
    alpha, d_alpha, sigma_t, d_sigma = path_coefficients(time, args.path_type, latents)
    noisy = alpha * latents + sigma_t * noise
    target = d_alpha * latents + d_sigma * noise
    prediction = model(noisy, time, labels).sample
    return F.mse_loss(prediction.float(), target.float())


def _normal_kl(mean1, logvar1, mean2, logvar2):
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2).square() * torch.exp(-logvar2)
    )


def _discretized_gaussian_log_likelihood(x, means, log_scales):
    """ADM's decoder likelihood of data in [-1, 1] quantised to 256 levels."""

    def cdf(values):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (values + 0.044715 * values.pow(3))))

    centered = x - means
    inverse_std = torch.exp(-log_scales)
    cdf_plus = cdf(inverse_std * (centered + 1.0 / 255.0))
    cdf_min = cdf(inverse_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def dit_loss(model, latents, labels, scheduler: GaussianDiffusionScheduler) -> torch.Tensor:
    """ADM ``training_losses`` with ``LossType.MSE`` and learned-range variance: eps MSE + the VB term (frozen
    mean)."""
    batch = latents.shape[0]
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=latents.device)
    noise = torch.randn_like(latents)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    output = model(noisy, timesteps, labels).sample.float()
    epsilon, variance_values = scheduler.split_model_output(output, latents)
    loss = (epsilon - noise).square().flatten(1).mean(1)
    if variance_values is not None:
        frozen = torch.cat([epsilon.detach(), variance_values], dim=-1)
        predicted = scheduler.model_mean_variance(frozen, timesteps, noisy)
        indices = predicted["indices"]
        true_mean = (
            scheduler._extract("posterior_mean_coef1", indices, latents) * latents
            + scheduler._extract("posterior_mean_coef2", indices, latents) * noisy
        )
        true_log_variance = scheduler._extract("posterior_log_variance_clipped", indices, latents)
        kl = _normal_kl(true_mean, true_log_variance, predicted["mean"], predicted["log_variance"]).flatten(1).mean(1)
        nll = -_discretized_gaussian_log_likelihood(latents, predicted["mean"], 0.5 * predicted["log_variance"])
        nll = nll.flatten(1).mean(1)
        loss = loss + torch.where(timesteps == 0, nll, kl) / math.log(2.0)
    return loss.mean()


def vitok_dit_loss(model, latents, labels, train_sigmas: torch.Tensor) -> torch.Tensor:
    batch = latents.shape[0]
    sigma = train_sigmas.to(latents.device)[torch.randint(0, len(train_sigmas), (batch,), device=latents.device)]
    noise = torch.randn_like(latents)
    noisy = (1 - sigma.view(-1, 1, 1)) * latents + sigma.view(-1, 1, 1) * noise
    prediction = model(noisy, sigma * 1000, labels).sample
    return F.mse_loss(prediction.float(), (noise - latents).float())


def main(argv=None) -> Path:
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    parser.set_defaults(
        **RECIPES[known.model]
    )  # the recipe's values; a --config file and the command line override them
    args = parse_with_config(parser, argv)
    trainer = Trainer(args)
    rows = load_latent_cache(args.latents)
    labels = torch.tensor(rows.data.column("label").to_numpy())
    if not args.unconditional and bool((labels == NO_LABEL).any()):
        raise ValueError(f"the latent cache {args.latents} has images without labels: pass --unconditional")
    num_classes = 1 if args.unconditional else int(labels.max()) + 1
    dataset = CachedLatents(rows, args.seed, unconditional=args.unconditional)
    sample = dataset[(0, 0)]["latents"]
    model = build_model(args, sample.shape[0], sample.shape[1], num_classes)
    optimizer = build_optimizer(model, "adamw", args.lr, args.betas, args.weight_decay)
    warmup = int(args.warmup_ratio * args.max_steps)
    scheduler = build_scheduler(
        optimizer,
        args.max_steps,
        warmup,
        args.lr * args.min_lr_ratio,
        schedule="cosine" if args.min_lr_ratio < 1 or warmup else "constant",
    )
    model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
    trainer.add_model("transformer", model)
    diffusion = GaussianDiffusionScheduler(beta_schedule=args.beta_schedule) if args.model == "dit" else None
    train_sigmas = torch.from_numpy(1.0 - np.linspace(1, 1 / 1000, 1000)[::-1].copy()).float()
    null_class = trainer.accelerator.unwrap_model(model).config.num_classes

    def train_step(batch, step):
        latents, labels = batch["latents"], batch["label"]
        with trainer.accelerator.autocast():
            if args.model == "sit":
                loss = sit_loss(model, latents, labels, args)
            elif args.model == "dit":
                loss = dit_loss(model, latents, labels, diffusion)
            else:
                drop = torch.rand(labels.shape, device=labels.device) < args.class_dropout
                loss = vitok_dit_loss(model, latents, torch.where(drop, null_class, labels), train_sigmas)
        return {"loss": loss.detach(), **trainer.optimizer_step(loss, optimizer, scheduler, model.parameters())}

    return trainer.fit(train_step, dataset)


if __name__ == "__main__":
    sys.exit(run_script(main, Path(__file__).name))
