"""Benchmark plumbing shared by every benchmark script.

Each configuration runs in a fresh process (so peak RSS is that configuration's own), timings are
medians over repeated calls after warm-up, FLOPs are counted with torch's FlopCounterMode (matmul,
conv and SDPA, as in ../shared/BASELINES.md), and the machine's matmul peak is measured in the same
run so that "fraction of peak" compares like with like.
"""

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

BASELINES = Path(__file__).resolve().parents[1].parent / "shared" / "BASELINES.md"


def set_threads(threads: int | None) -> int:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def median_seconds(fn, warmup: int = 1, repeats: int = 3, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()``; keeps repeating until ``min_seconds`` of samples are collected."""
    for _ in range(warmup):
        fn()
    samples = []
    while len(samples) < repeats or sum(samples) < min_seconds:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch's counter knows the CUDA SDPA kernels but not the CPU flash kernel; same formula
    # (the counter hands formulas tensor shapes, not tensors)
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def count_flops(fn) -> float:
    """FLOPs of one call: matmuls, convolutions and attention (every SDPA kernel counted)."""
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square ``torch.mm`` of ``size`` in ``dtype`` on this machine."""
    left, right = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    seconds = median_seconds(lambda: torch.mm(left, right), warmup=2, repeats=repeats)
    return 2 * size**3 / seconds


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def run_worker(script: str, arguments: list[str]) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter; it prints one JSON object on its last line."""
    result = subprocess.run([sys.executable, script, "--worker", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark worker {arguments} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def baseline_fraction(row_label: str, batch: int, dtype: str) -> float | None:
    """The original code's '% peak' for a row of ../shared/BASELINES.md, when that file is beside the checkout."""
    if not BASELINES.is_file():
        return None
    for line in BASELINES.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0] == row_label and cells[1] == str(batch) and cells[2] == dtype:
            match = re.match(r"(\d+(?:\.\d+)?)", cells[7])
            return float(match.group(1)) / 100 if match else None
    return None


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """``columns``: (key, header, format spec); missing values print as '-'."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([
            "-" if row.get(key) is None else format(row[key], spec) for key, _, spec in columns
        ])
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    for number, line in enumerate(cells):
        print("| " + " | ".join(cell.rjust(width) for cell, width in zip(line, widths)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2))
        print(f"wrote {path}")
