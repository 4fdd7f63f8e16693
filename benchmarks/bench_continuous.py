"""Encode / decode throughput, FLOP/s and peak memory of the 1D continuous tokenizers (SoftVQ-VAE, MAETok).

    python benchmarks/bench_continuous.py                       # SoftVQ-L-64 and MAETok-B-128, fp32 + bf16
    python benchmarks/bench_continuous.py --batch-size 4 --iterations 20 --json bench.json
    python benchmarks/bench_continuous.py --models maetok-b-128 --dtypes fp32 --set image_size=64 encoder_num_layers=1

Random weights built in the measured dtype (the architecture decides the cost), 256x256 images,
each model and dtype in a fresh process (``--in-process``: all in this one). Per row: images/s,
GFLOP per call (``FlopCounterMode`` on the first warm-up call), achieved GFLOP/s, the fraction of
this machine's matmul peak for the row's dtype (measured at the start of the run) and, where
../shared/BASELINES.md has the same row, the original's s/call and fraction of peak. Peak memory:
CUDA's peak allocated bytes on GPU; on CPU the peak resident set size during the measurement,
sampled by a thread (weights included).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import common

VIT_L = {"hidden_size": 1024, "num_layers": 24, "num_heads": 16}
VIT_B = {"hidden_size": 768, "num_layers": 12, "num_heads": 12}
# the released architectures (ViT-L/16 encoder + decoder with 64 tokens; ViT-B/16 with 128 tokens):
# name -> (hf_vtok class prefix, encoder and decoder sizes, latent tokens, BASELINES.md row)
MODELS = {
    "softvq-l-64": ("SoftVQ", VIT_L, 64, "SoftVQ-L-64 encode / decode"),
    "maetok-b-128": ("MAETok", VIT_B, 128, "MAETok-B-128 encode / decode"),
}
STAGES = ("encode", "decode")  # the order of the "encode / decode" cells of BASELINES.md


def build_model(name: str, dtype, device="cpu", **overrides):
    """A released SoftVQ / MAETok architecture with random weights, created directly in ``dtype``."""
    import hf_vtok

    prefix, sizes, tokens, _ = MODELS[name]
    fields = {f"{role}_{key}": value for role in ("encoder", "decoder") for key, value in sizes.items()}
    fields.update(num_latent_tokens=tokens, latent_channels=32, **overrides)
    config = getattr(hf_vtok, f"{prefix}Config")(**fields)
    return getattr(hf_vtok, f"{prefix}Model")._from_config(config, dtype=dtype).to(device).eval()


def measure(case: dict) -> list[dict]:
    """Encode and decode figures of one model and dtype (``case``: the parent's JSON)."""
    import torch

    common.set_threads(case["threads"])
    device, dtype = torch.device(case["device"]), common.TORCH_DTYPES[case["dtype"]]
    torch.manual_seed(0)
    model = build_model(case["model"], dtype, device, **case["overrides"])
    size, batch = model.config.image_size, case["batch_size"]
    results = []
    with torch.inference_mode():
        images = torch.rand(batch, 3, size, size, device=device, dtype=dtype) * 2 - 1
        latents = model.encode(images).latents
        for stage, function in zip(STAGES, (lambda: model.encode(images), lambda: model.decode(latents))):
            flops = common.count_flops(function)  # also the first warm-up call
            with common.PeakMemory(device) as memory:
                seconds = common.median_seconds(function, case["warmup"] - 1, case["iterations"], device=device)
            results.append(
                {"stage": stage, "resolution": size, "flops": flops, "seconds": seconds, "memory_gb": memory.gb}
            )
    return results


def main(argv=None) -> list[dict]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS, reverse=True))
    parser.add_argument("--dtypes", nargs="+", type=common.dtype_name, choices=common.dtype_choices(common.DTYPES),
                        default=["fp32", "bf16"], help="fp32 / float32, bf16 / bfloat16")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=8 if torch.cuda.is_available() else 1)
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls (at least 1: the FLOP count)")
    parser.add_argument("--iterations", type=int, default=10 if torch.cuda.is_available() else 2, help="timed calls")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides (e.g. image_size=64 encoder_num_layers=2); no BASELINES.md figures then",
    )
    parser.add_argument("--in-process", action="store_true", help="measure in this process, not a fresh one per row")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one model and dtype (JSON), in this process
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.case))))
        return []

    threads = common.set_threads(args.threads)
    overrides = common.parse_overrides(args.set)
    peaks = common.measure_peaks(args.dtypes, args.device)
    rows = []
    for name in args.models:
        for dtype in args.dtypes:
            case = {"model": name, "dtype": dtype, "device": args.device, "batch_size": args.batch_size,
                    "warmup": max(1, args.warmup), "iterations": args.iterations, "threads": threads,
                    "overrides": overrides}  # fmt: skip
            results = measure(case) if args.in_process else common.run_worker(__file__, ["--case", json.dumps(case)])
            for part, result in enumerate(results):
                original = (
                    None if overrides else common.baseline_figures(MODELS[name][3], args.batch_size, dtype, part)
                )
                rows.append({
                    "model": name, "dtype": dtype, "stage": result["stage"], "batch": args.batch_size,
                    "resolution": result["resolution"], "memory_gb": result["memory_gb"],
                    **common.rate_figures(result["flops"], result["seconds"], args.batch_size, peaks[dtype]),
                    **common.original_columns(original),
                })  # fmt: skip
            print(f"  done: {name} {dtype}", file=sys.stderr)
    memory = "peak GB (CUDA allocated)" if args.device.startswith("cuda") else "peak GB (RSS)"
    print(
        f"{common.machine_line(args.device, threads, peaks)}; {rows[0]['resolution']}x{rows[0]['resolution']}, "
        f"random weights\n"
    )
    common.print_table(rows, [
        ("model", "model", ""), ("dtype", "dtype", ""), ("stage", "stage", ""), ("batch", "batch", "d"),
        *common.RATE_COLUMNS, *common.ORIGINAL_COLUMNS, ("memory_gb", memory, ".2f"),
    ])  # fmt: skip
    common.write_json(args.json, {"device": args.device, "threads": threads, "matmul_peak_flops": peaks,
                                  "overrides": overrides, "rows": rows})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
