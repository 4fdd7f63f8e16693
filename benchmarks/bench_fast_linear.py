"""The default path (oneDNN linears, ``hf_vtok.utils.prepack.enable_fast_linear``) against plain ``F.linear``
on the same model, in ONE process, calls interleaved (A B A B ...), so that load from other jobs hits both alike.

    python benchmarks/bench_fast_linear.py --match vitok-v2-350m-f16x64-encode-b1-fp32 sit-xl-1 --repeats 7

Rows are ``run_all.py`` keys (``run_all.py --list``). Prints, per row, the median s/call of each path, their
ratio (plain / fast: > 1 means the default path is faster) and the process CPU seconds per call of each; writes
``--json``.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import run_all


def _timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(case, repeats: int, threads: int) -> dict:
    import torch

    from hf_vtok.utils.prepack import disable_fast_linear, enable_fast_linear

    common.set_threads(threads)
    torch.manual_seed(0)
    samples = {"fast": [], "plain": []}
    with torch.inference_mode():
        bench = run_all.BUILDERS[case.family](case, common.DTYPES[case.dtype], torch.device("cpu"))
        bench.call()  # warm-up, both paths
        for module in bench.modules:
            disable_fast_linear(module)
        bench.call()
        for _ in range(repeats):
            for name in ("fast", "plain"):
                for module in bench.modules:
                    (enable_fast_linear if name == "fast" else disable_fast_linear)(module)
                samples[name].append(_timed(bench.call))
    row = {"key": case.key, "threads": threads, "load_average": common.load_average()}
    for name, values in samples.items():
        row[f"{name}_s"] = statistics.median(wall for wall, _ in values)
        row[f"{name}_cpu_s"] = statistics.median(cpu for _, cpu in values)
    row["plain_over_fast"] = statistics.median(plain[0] / fast[0] for fast, plain in zip(*samples.values()))
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--match", nargs="+", required=True, help="run_all.py row keys containing one of these")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rows = []
    for case in run_all.CASES:
        if any(text in case.key for text in args.match):
            row = measure(case, args.repeats, args.threads)
            rows.append(row)
            print(
                f"{row['key']}: fast {row['fast_s']:.3f} s ({row['fast_cpu_s']:.2f} CPU s), plain {row['plain_s']:.3f}"
                f" s ({row['plain_cpu_s']:.2f} CPU s), plain/fast {row['plain_over_fast']:.2f}; load "
                f"{row['load_average']}",
                flush=True,
            )
    common.write_json(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
