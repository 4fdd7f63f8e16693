"""FlowMo reconstruction speed and memory (random weights, 256x256): FlowMo-Lo and the patch-8 option.

    python benchmarks/bench_flowmo.py [--quick] [--full-lo] [--device cuda] [--json results.json]

Rows per config and dtype (fp32, bf16): encode+quantize, one decoder call (the velocity of one
noisy image), and the full reconstruction (encode + the 25-step sampler with interval CFG, 31
decoder evaluations). On CPU the full FlowMo-Lo reconstruction takes minutes per image, so it is
estimated from its parts (marked "est.") unless ``--full-lo``. Prints images/s, GFLOP per call,
achieved GFLOP/s, the fraction of this machine's matmul peak (measured in the same run), peak
memory (RSS on CPU, ``max_memory_allocated`` on CUDA) and, when ../shared/BASELINES.md is beside
the checkout, the fraction of peak the original code reached on the same row.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

CONFIGS = {"small": ("flowmo-p8", "FlowMo-small"), "lo": ("flowmo-lo", "FlowMo-Lo")}
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
STAGES = {"encode": "encode+quantize", "decoder_call": "one decoder call", "reconstruct": "full reconstruct"}


def worker(args) -> dict:
    import torch

    from hf_vtok import FlowMoConfig, FlowMoModel

    common.set_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = FlowMoConfig.from_preset(CONFIGS[args.config][0], image_size=args.resolution)
    model = FlowMoModel(config).eval().to(device=device, dtype=dtype)
    pixels = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device) * 2 - 1
    noise = torch.randn_like(pixels)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        encoded = model.encode(pixels)
        times = torch.full((args.batch,), 0.5, device=device)
        calls = {
            "encode": lambda: model.encode(pixels),
            "decoder_call": lambda: model.velocity(noise, times, latents=encoded.latents),
            "reconstruct": lambda: model(pixels, noise=noise),
        }
        fn = calls[args.stage]

        def timed():
            fn()
            synchronize()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = common.median_seconds(timed, warmup=args.warmup, repeats=args.repeats, min_seconds=args.min_seconds)
        memory = torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else common.peak_memory_gb()
        if args.stage == "reconstruct":  # encode + one FLOP count per decoder evaluation
            decoded = model.decode(encoded, noise=noise)
            evaluations = decoded.guidance_steps.numel() + int(decoded.guidance_steps.sum())
            flops = common.count_flops(calls["encode"]) + evaluations * common.count_flops(calls["decoder_call"])
        else:
            flops = common.count_flops(fn)
    return {"seconds": seconds, "flops": flops, "memory_gb": memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the patch-8 config, one repeat")
    parser.add_argument(
        "--full-lo", action="store_true", help="run the full FlowMo-Lo reconstruction instead of estimating it"
    )
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), help="configs to run (default: small and lo)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=sorted(DTYPES), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import torch

    threads = common.set_threads(args.threads)
    peaks = {}
    if args.device == "cpu":
        peaks = {name: common.matmul_peak(getattr(torch, dtype)) for name, dtype in DTYPES.items()}
        print(f"matmul peak ({threads} threads): {common.format_peaks(peaks)}")
    configs = args.configs or (["small"] if args.quick else ["small", "lo"])
    repeats = 1 if args.quick else args.repeats
    rows = []
    for config in configs:
        label = CONFIGS[config][1]
        for dtype in DTYPES:
            parts = {}
            for stage in ("encode", "decoder_call", "reconstruct"):
                row = {"config": f"{label} {STAGES[stage]}", "batch": args.batch, "dtype": dtype}
                if stage == "reconstruct" and config == "lo" and args.device == "cpu" and not args.full_lo:
                    evaluations = 31  # 25 steps, CFG on 6 of them
                    row.update(
                        estimated=True,
                        seconds=parts["encode"]["seconds"] + evaluations * parts["decoder_call"]["seconds"],
                        flops=parts["encode"]["flops"] + evaluations * parts["decoder_call"]["flops"],
                        memory_gb=parts["decoder_call"]["memory_gb"],
                    )
                else:
                    slow = stage == "reconstruct"
                    extra = [
                        "--config",
                        config,
                        "--stage",
                        stage,
                        "--dtype",
                        dtype,
                        "--batch",
                        str(args.batch),
                        "--resolution",
                        str(args.resolution),
                        "--device",
                        args.device,
                        "--repeats",
                        str(1 if slow else repeats),
                        "--min-seconds",
                        str(0 if slow else args.min_seconds),
                        "--warmup",
                        str(0 if slow and args.device == "cpu" else 1),
                    ]
                    if args.threads:
                        extra += ["--threads", str(args.threads)]
                    row.update(common.run_worker(__file__, extra))
                parts[stage] = row
                achieved = row["flops"] / row["seconds"]
                row.update(
                    label=row["config"] + (" (est.)" if row.get("estimated") else ""),
                    images_per_s=args.batch / row["seconds"],
                    gflop=row["flops"] / 1e9,
                    gflop_per_s=achieved / 1e9,
                    peak_fraction=achieved / peaks[dtype] if peaks else None,
                    original_peak_fraction=_baseline_fraction(label, stage, args.batch, dtype),
                )
                rows.append(row)
                print(f"  done: {row['label']} {dtype}", file=sys.stderr)
    common.print_table(
        rows,
        [
            ("label", "config", ""),
            ("batch", "batch", "d"),
            ("dtype", "dtype", ""),
            ("seconds", "s/call", ".3f"),
            ("images_per_s", "img/s", ".3f"),
            ("gflop", "GFLOP/call", ".0f"),
            ("gflop_per_s", "GFLOP/s", ".0f"),
            ("peak_fraction", "% peak", ".0%"),
            ("original_peak_fraction", "original % peak", ".0%"),
            ("memory_gb", "peak mem GB", ".2f"),
        ],
    )
    common.write_json(
        args.json,
        {
            "threads": threads,
            "device": args.device,
            "matmul_peak_flops": peaks,
            "resolution": args.resolution,
            "rows": rows,
        },
    )


def _baseline_fraction(label: str, stage: str, batch: int, dtype: str) -> float | None:
    """The original's fraction of peak for the same measurement (row names of ../shared/BASELINES.md)."""
    names = {
        "encode": [
            f"{label} encode+quantize",
            "FlowMo-small (p8, w4) encode+quantize",
            "FlowMo-Lo (p4, w6) encode+quantize",
        ],
        "decoder_call": [f"{label} one decoder call"],
        "reconstruct": [f"{label} full reconstruct", f"{label} full reconstruct (25 steps, 31 decoder calls)"],
    }[stage]
    original = common.baseline_figures([name for name in names if name.startswith(label)], batch, dtype)
    return original and original["peak_fraction"]


if __name__ == "__main__":
    main()
