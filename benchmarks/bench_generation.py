"""Generation speed and peak memory of the SiT-XL / DiT-XL pipelines on 1D latents (random weights).

    python benchmarks/bench_generation.py                       # full table (a GPU is advised)
    python benchmarks/bench_generation.py --steps 2 --batch-sizes 1 --dtypes float32 --json out.json

Each row: one pipeline call generating ``batch`` images (``--steps`` sampler steps with
classifier-free guidance, i.e. a doubled batch through the transformer at every step, then one
decode through a MAETok-B-128-sized tokenizer), after one warm-up call. SiT runs the Euler ODE,
DiT runs DDIM (its deterministic ODE sampler). Peak memory is the CUDA allocator's peak on GPU and
the process's peak resident set size on CPU (which includes everything loaded before).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hf_vtok import (  # noqa: E402
    DiT1DPipeline,
    DiTTransformer1DModel,
    GaussianDiffusionScheduler,
    MAETokConfig,
    MAETokModel,
    SiTFlowScheduler,
    SiTPipeline,
    SiTTransformer1DModel,
)

XL = dict(hidden_size=1152, num_layers=28, num_attention_heads=16, mlp_ratio=4.0, num_classes=1000)


def build_pipeline(name: str, tokens: int, channels: int, device: str, dtype: torch.dtype):
    tokenizer = MAETokModel(MAETokConfig(num_latent_tokens=tokens, latent_channels=channels)).eval()
    if name == "sit-xl":
        transformer = SiTTransformer1DModel(in_channels=channels, num_tokens=tokens, **XL)
        pipe = SiTPipeline(tokenizer, transformer, SiTFlowScheduler(sampler="ode"))
    else:
        transformer = DiTTransformer1DModel(in_channels=channels, num_tokens=tokens, **XL)
        pipe = DiT1DPipeline(tokenizer, transformer, GaussianDiffusionScheduler(beta_schedule="cosine", sampler="ddim"))
    pipe.transformer.to(device=device, dtype=dtype).eval()
    pipe.tokenizer.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_once(pipe, batch: int, steps: int, guidance_scale: float, device: str) -> float:
    labels = torch.arange(batch) % 1000
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe(labels, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt",
         generator=torch.Generator().manual_seed(0))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["sit-xl", "dit-xl"], choices=["sit-xl", "dit-xl"])
    parser.add_argument("--tokens", type=int, default=128, help="latent tokens per image (MAETok-B-128: 128)")
    parser.add_argument("--channels", type=int, default=32, help="channels per latent token")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=1.75)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    diffusers_logging.set_verbosity_error()  # diffusers warns on every dtype cast of a ModelMixin
    rows = []
    for name in args.models:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            pipe = build_pipeline(name, args.tokens, args.channels, args.device, dtype)
            parameters = pipe.transformer.num_parameters() / 1e6
            run_once(pipe, 1, 1, args.guidance_scale, args.device)  # warm-up
            for batch in args.batch_sizes:
                if args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                seconds = run_once(pipe, batch, args.steps, args.guidance_scale, args.device)
                rows.append({
                    "model": name, "params_M": round(parameters, 1), "dtype": dtype_name, "batch": batch,
                    "steps": args.steps, "device": args.device, "seconds": round(seconds, 3),
                    "images_per_s": round(batch / seconds, 3), "peak_memory_GiB": round(peak_memory_gib(args.device), 2),
                })  # fmt: skip
            del pipe
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.tokens} tokens x {args.channels} channels, {args.steps} steps, CFG {args.guidance_scale}, {device_name}")
    print("| model | params (M) | dtype | batch | images/s | s / call | peak memory (GiB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['params_M']} | {row['dtype']} | {row['batch']} | {row['images_per_s']} | "
            f"{row['seconds']} | {row['peak_memory_GiB']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
