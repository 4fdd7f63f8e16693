"""Generation speed, FLOP/s and peak memory of the SiT-XL / DiT-XL pipelines on 1D latents (random weights).

    python benchmarks/bench_generation.py                       # full table (a GPU is advised)
    python benchmarks/bench_generation.py --steps 2 --batch-sizes 1 --dtypes fp32 --json out.json
    python benchmarks/bench_generation.py --set num_layers=2 tokenizer.encoder_num_layers=1  # smaller models

Each row: one pipeline call generating ``batch`` images (``--steps`` sampler steps with
classifier-free guidance, i.e. a doubled batch through the transformer at every step, then one
decode through a MAETok-B-128-sized tokenizer), timed once after the FLOP-counting calls. SiT runs
the Euler ODE, DiT runs DDIM (its deterministic ODE sampler). GFLOP per call (``FlopCounterMode``):
the pipeline counted at 1 and at 2 steps, ``F(1) + (steps - 1) * (F(2) - F(1))`` (exact, as every
step costs the same: one transformer forward of the CFG batch); these two calls are the warm-up.
"% peak" divides the achieved FLOP/s by this machine's matmul peak for the row's dtype, measured at
the start of the run. Peak memory: CUDA's peak allocated bytes on GPU; on CPU the peak resident set
size during the timed call, sampled by a thread (weights included). BASELINES.md has no row for
these pipelines (its SiT row is one forward of 64 tokens: ``run_all.py --families sit``).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import common

XL = {"hidden_size": 1152, "num_layers": 28, "num_attention_heads": 16, "mlp_ratio": 4.0, "num_classes": 1000}
TOKENIZER_PREFIX = "tokenizer."  # --set keys for the tokenizer's config; the others go to the transformer


def build_pipeline(name: str, tokens: int, channels: int, device: str, dtype, overrides: dict | None = None):
    from hf_vtok import (
        DiT1DPipeline,
        DiTTransformer1DModel,
        GaussianDiffusionScheduler,
        MAETokConfig,
        MAETokModel,
        SiTFlowScheduler,
        SiTPipeline,
        SiTTransformer1DModel,
    )

    overrides = overrides or {}
    tokenizer_fields = {
        k.removeprefix(TOKENIZER_PREFIX): v for k, v in overrides.items() if k.startswith(TOKENIZER_PREFIX)
    }
    transformer_fields = {**XL, **{k: v for k, v in overrides.items() if not k.startswith(TOKENIZER_PREFIX)}}
    config = MAETokConfig(num_latent_tokens=tokens, latent_channels=channels, **tokenizer_fields)
    tokenizer = MAETokModel._from_config(config, dtype=dtype).to(device).eval()
    if name == "sit-xl":
        transformer = SiTTransformer1DModel(in_channels=channels, num_tokens=tokens, **transformer_fields)
        pipe = SiTPipeline(tokenizer, transformer, SiTFlowScheduler(sampler="ode"))
    else:
        transformer = DiTTransformer1DModel(in_channels=channels, num_tokens=tokens, **transformer_fields)
        pipe = DiT1DPipeline(
            tokenizer, transformer, GaussianDiffusionScheduler(beta_schedule="cosine", sampler="ddim")
        )
    pipe.transformer.to(device=device, dtype=dtype).eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, batch: int, steps: int, guidance_scale: float):
    import torch

    labels = torch.arange(batch) % 1000
    return pipe(labels, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt",
                generator=torch.Generator().manual_seed(0))  # fmt: skip


def measure(pipe, batch: int, steps: int, guidance_scale: float, device: str) -> dict:
    """FLOPs (counted at 1 and 2 steps, scaled to ``steps``), seconds and peak memory of one pipeline call."""
    one, two = (common.count_flops(lambda n=n: generate(pipe, batch, n, guidance_scale)) for n in (1, 2))
    with common.PeakMemory(device) as memory:
        (seconds,) = common.time_calls(lambda: generate(pipe, batch, steps, guidance_scale), 1, device=device)
    return {"flops": one + (steps - 1) * (two - one), "seconds": seconds, "memory_gb": memory.gb}


def main(argv=None) -> list[dict]:
    import torch
    from diffusers.utils import logging as diffusers_logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["sit-xl", "dit-xl"], choices=["sit-xl", "dit-xl"])
    parser.add_argument("--tokens", type=int, default=128, help="latent tokens per image (MAETok-B-128: 128)")
    parser.add_argument("--channels", type=int, default=32, help="channels per latent token")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=1.75)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", type=common.dtype_name, choices=common.dtype_choices(),
                        default=["fp32", "bf16"], help="fp32 / float32, bf16 / bfloat16, fp16 / float16")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"transformer config overrides (e.g. num_layers=2), {TOKENIZER_PREFIX}KEY=VALUE for the tokenizer",
    )
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)

    diffusers_logging.set_verbosity_error()  # diffusers warns on every dtype cast of a ModelMixin
    threads = common.set_threads(args.threads)
    overrides = common.parse_overrides(args.set)
    peaks = common.measure_peaks(args.dtypes, args.device)
    rows = []
    for name in args.models:
        for dtype in args.dtypes:
            pipe = build_pipeline(name, args.tokens, args.channels, args.device, common.TORCH_DTYPES[dtype], overrides)
            parameters = pipe.transformer.num_parameters() / 1e6
            for batch in args.batch_sizes:
                result = measure(pipe, batch, args.steps, args.guidance_scale, args.device)
                rows.append({
                    "model": name, "params_M": round(parameters, 1), "dtype": dtype, "batch": batch,
                    "steps": args.steps, "memory_gb": result["memory_gb"],
                    **common.rate_figures(result["flops"], result["seconds"], batch, peaks[dtype]),
                })  # fmt: skip
                print(f"  done: {name} {dtype} batch {batch}", file=sys.stderr)
            del pipe
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()

    print(
        f"{common.machine_line(args.device, threads, peaks)}; {args.tokens} tokens x {args.channels} channels, "
        f"{args.steps} steps, CFG {args.guidance_scale}\n"
    )
    memory = "peak GB (CUDA allocated)" if args.device.startswith("cuda") else "peak GB (RSS)"
    common.print_table(rows, [
        ("model", "model", ""), ("params_M", "params (M)", ".1f"), ("dtype", "dtype", ""), ("batch", "batch", "d"),
        *common.RATE_COLUMNS, ("memory_gb", memory, ".2f"),
    ])  # fmt: skip
    common.write_json(args.json, {
        "device": args.device, "threads": threads, "matmul_peak_flops": peaks, "tokens": args.tokens,
        "channels": args.channels, "steps": args.steps, "guidance_scale": args.guidance_scale, "overrides": overrides,
        "rows": rows,
    })  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
