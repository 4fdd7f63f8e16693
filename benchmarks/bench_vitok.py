"""ViTok-v2 encode / decode speed and memory on a 350M-sized config (random weights), 256x256.

    python benchmarks/bench_vitok.py [--quick] [--json results.json]

Prints images/s, GFLOP per call, achieved GFLOP/s, the fraction of this machine's matmul peak
(measured in the same run) and, when ../shared/BASELINES.md is beside the checkout, the fraction the
original code reached on the same configuration.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

VARIANT = "350M-f16x64"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def worker(args) -> dict:
    import numpy as np
    import torch

    from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel

    common.set_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    torch.manual_seed(0)
    config = ViTokConfig.from_variant(VARIANT)
    model = ViTokModel(config).eval().to(dtype)
    processor = ViTokImageProcessor(
        patch_size=config.patch_size, max_num_patches=(args.resolution // config.patch_size) ** 2
    )
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.resolution, args.resolution, 3), dtype=np.uint8) for _ in range(args.batch)]
    inputs = processor(images, return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    with torch.inference_mode():
        encoded = model.encode(**inputs)
        calls = {"encode": lambda: model.encode(**inputs), "decode": lambda: model.decode(encoded)}
        fn = calls[args.stage]
        flops = common.count_flops(fn)
        seconds = common.median_seconds(fn, warmup=2, repeats=args.repeats, min_seconds=args.min_seconds)
    return {"seconds": seconds, "flops": flops, "rss_gb": common.peak_memory_gb()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 only, fewer repeats")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=["encode", "decode"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=sorted(DTYPES), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    import torch

    threads = common.set_threads(args.threads)
    peaks = {name: common.matmul_peak(getattr(torch, dtype)) for name, dtype in DTYPES.items()}
    print(f"matmul peak ({threads} threads): {common.format_peaks(peaks)}")
    batches = [1] if args.quick else [1, 4]
    repeats = 2 if args.quick else args.repeats
    rows = []
    for dtype in DTYPES:
        for batch in batches:
            for stage in ("encode", "decode"):
                extra = [
                    "--stage",
                    stage,
                    "--dtype",
                    dtype,
                    "--batch",
                    str(batch),
                    "--resolution",
                    str(args.resolution),
                    "--repeats",
                    str(repeats),
                    "--min-seconds",
                    str(args.min_seconds),
                ]
                if args.threads:
                    extra += ["--threads", str(args.threads)]
                result = common.run_worker(__file__, extra)
                name = f"ViTok-v2 {VARIANT} {stage}"
                rows.append({
                    "config": name, "batch": batch, "dtype": dtype, "rss_gb": result["rss_gb"],
                    **common.rate_figures(result["flops"], result["seconds"], batch, peaks[dtype]),
                    **common.original_columns(common.baseline_figures(name, batch, dtype)),
                })  # fmt: skip
                print(f"  done: {rows[-1]['config']} batch {batch} {dtype}", file=sys.stderr)
    common.print_table(
        rows,
        [
            ("config", "config", ""),
            ("batch", "batch", "d"),
            ("dtype", "dtype", ""),
            ("seconds", "s/call", ".3f"),
            ("images_per_s", "img/s", ".2f"),
            ("gflop", "GFLOP/call", ".1f"),
            ("gflop_per_s", "GFLOP/s", ".0f"),
            ("peak_fraction", "% peak", ".0%"),
            ("original_peak_fraction", "original % peak", ".0%"),
            ("rss_gb", "RSS GB", ".2f"),
        ],
    )
    common.write_json(
        args.json, {"threads": threads, "matmul_peak_flops": peaks, "resolution": args.resolution, "rows": rows}
    )


if __name__ == "__main__":
    main()
