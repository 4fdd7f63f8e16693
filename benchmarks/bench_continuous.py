"""Encode / decode throughput and peak memory of the 1D continuous tokenizers (SoftVQ-VAE, MAETok).

    python benchmarks/bench_continuous.py                       # SoftVQ-L-64 and MAETok-B-128, fp32 + bf16
    python benchmarks/bench_continuous.py --batch-size 16 --iterations 20 --json bench.json

Random weights (the architecture decides the cost), 256x256 images. Peak memory is the CUDA peak
allocated during each measurement on GPU, and the peak resident set size of the process during each
measurement on CPU (weights included; sampled from /proc, else the process high-water mark).
"""

import argparse
import json
import multiprocessing
import os
import resource
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from hf_vtok import MAETokConfig, MAETokModel, SoftVQConfig, SoftVQModel

VIT_L = dict(hidden_size=1024, num_layers=24, num_heads=16)
VIT_B = dict(hidden_size=768, num_layers=12, num_heads=12)


def _stacks(encoder: dict, decoder: dict) -> dict:
    return {f"{role}_{key}": value for role, sizes in (("encoder", encoder), ("decoder", decoder)) for key, value in sizes.items()}


# the released architectures (ViT-L/16 encoder + decoder with 64 tokens; ViT-B/16 with 128 tokens)
MODELS = {
    "softvq-l-64": lambda: SoftVQModel(SoftVQConfig(num_latent_tokens=64, latent_channels=32, **_stacks(VIT_L, VIT_L))),
    "maetok-b-128": lambda: MAETokModel(MAETokConfig(num_latent_tokens=128, latent_channels=32, **_stacks(VIT_B, VIT_B))),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ResidentSetSampler:
    """Peak resident set size of this process while active, sampled from /proc every 2 ms (Linux)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def current_bytes() -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # no /proc (macOS): the process high-water mark instead
            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return maxrss if sys.platform == "darwin" else maxrss * 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current_bytes())
            self._stop.wait(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current_bytes())


def _measure(function, device: torch.device, warmup: int, iterations: int) -> tuple[float, float]:
    """Seconds per call and peak memory (MiB) of ``function``: CUDA peak allocated, or process peak RSS on CPU."""
    for _ in range(warmup):
        function()
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with _ResidentSetSampler() as sampler:
        start = time.perf_counter()
        for _ in range(iterations):
            function()
        _synchronize(device)
        seconds = (time.perf_counter() - start) / iterations
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else sampler.peak
    return seconds, peak / 2**20


@torch.inference_mode()
def benchmark(name: str, dtype: torch.dtype, device: torch.device, batch_size: int, warmup: int, iterations: int) -> list[dict]:
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # build the weights in the measured dtype (runs in its own process)
    model = MODELS[name]().to(device).eval()
    size = model.config.image_size
    images = torch.rand(batch_size, 3, size, size, device=device, dtype=dtype) * 2 - 1
    latents = model.encode(images).latents
    rows = []
    for stage, function in (("encode", lambda: model.encode(images)), ("decode", lambda: model.decode(latents))):
        seconds, peak = _measure(function, device, warmup, iterations)
        rows.append({
            "model": name, "dtype": str(dtype).removeprefix("torch."), "stage": stage, "batch_size": batch_size,
            "resolution": size, "images_per_s": batch_size / seconds, "ms_per_batch": seconds * 1e3, "peak_mib": peak,
        })  # fmt: skip
    return rows


def format_table(rows: list[dict], device: torch.device) -> str:
    peak = "peak MiB (CUDA allocated)" if device.type == "cuda" else "peak MiB (process RSS)"
    lines = [
        f"| model | dtype | stage | batch | images/s | ms/batch | {peak} |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['dtype']} | {row['stage']} | {row['batch_size']} | {row['images_per_s']:.2f} | "
            f"{row['ms_per_batch']:.1f} | {row['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS, reverse=True))
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8 if torch.cuda.is_available() else 1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10 if torch.cuda.is_available() else 2)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name in args.models:
        for dtype_name in args.dtypes:
            # a fresh process per row: memory peaks and allocator caches do not carry over
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                job = pool.submit(benchmark, name, DTYPES[dtype_name], device, args.batch_size, args.warmup, args.iterations)
                rows += job.result()
    header = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{header}, torch {torch.__version__}, 256x256, random weights\n")
    print(format_table(rows, device))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return rows


if __name__ == "__main__":
    main()
