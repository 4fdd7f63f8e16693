"""Benchmark plumbing: timing, FLOP counting, matmul peak, memory, baselines, table and JSON.

Every benchmark (``run_all.py`` and the per-family wrappers) goes through this module. Protocol,
as in ../shared/BASELINES.md: random weights, eval mode, inference mode, a fixed number of torch
threads, eager (unless compiled rows are asked for), the median of several calls after a warm-up,
each configuration in a fresh process. FLOPs are counted with torch's ``FlopCounterMode`` (matmul,
convolution and SDPA only, the CPU flash kernel included). The matmul peak is measured in the
same process around each configuration, so that the fraction of peak stays meaningful when other
work shares the machine.
"""

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

BASELINES = Path(__file__).resolve().parents[1].parent / "shared" / "BASELINES.md"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the dtypes of BASELINES.md
TORCH_DTYPES = {**DTYPES, "fp16": torch.float16}
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def dtype_name(text: str) -> str:
    """The short name of a dtype flag: ``bf16`` and ``bfloat16`` both give ``bf16`` (an argparse ``type``)."""
    return DTYPE_ALIASES.get(text, text)


def dtype_choices(names=TORCH_DTYPES) -> list[str]:
    """Short names and their aliases, for argparse ``choices`` (after ``type=dtype_name``, short names match)."""
    return [*names, *(alias for alias, name in DTYPE_ALIASES.items() if name in names)]


def parse_overrides(items: Sequence[str] | None) -> dict:
    """``["num_layers=1", "mlp_ratio=2.0", "flow_method=CondOT"]`` -> config overrides (values JSON, else text)."""
    overrides = {}
    for item in items or ():
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def set_threads(threads: int | None) -> int:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return threads


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, repeats: int, min_seconds: float = 0.0, device="cpu") -> list[float]:
    """Wall times of ``fn()``: at least ``repeats`` calls, more until ``min_seconds`` of samples are collected."""
    samples = []
    while len(samples) < repeats or sum(samples) < min_seconds:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return samples


def median_seconds(fn, warmup: int = 1, repeats: int = 3, min_seconds: float = 0.0, device="cpu") -> float:
    """Median wall time of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(time_calls(fn, repeats, min_seconds, device))


def interleaved_medians(functions: dict, repeats: int, device="cpu") -> dict[str, float]:
    """Median time of each function, calling them in turn (A B A B ...) so that load changes hit all alike."""
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            samples[name] += time_calls(fn, 1, device=device)
    return {name: statistics.median(values) for name, values in samples.items()}


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # torch's counter knows the CUDA SDPA kernels but not the CPU flash kernel; same formula
    # (the counter hands formulas tensor shapes, not tensors)
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _prepacked_linear_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # oneDNN's linear on prepacked weights (hf_vtok.prepack_linear_weights): a [rows, in] x [in, out] matmul
    rows = 1
    for size in input_shape[:-1]:
        rows *= size
    return 2 * rows * weight_shape[0] * weight_shape[1]


_EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
    torch.ops.mkldnn._linear_pointwise: _prepacked_linear_flops,
}


class _TotalsOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: only the total is read here, and the tracker's
    hooks fail on module inputs that require grad but have no graph (parameter views in inference mode)."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def count_flops(fn) -> float:
    """FLOPs of one call: matmuls, convolutions and attention (every SDPA kernel counted)."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    counter.mod_tracker = _TotalsOnly()
    with counter:
        fn()
    return float(counter.get_total_flops())


def matmul_peak(dtype: torch.dtype, device="cpu", size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square ``torch.mm`` of ``size`` in ``dtype`` on this machine (the best of ``repeats``)."""
    left = torch.randn(size, size, dtype=dtype, device=device)
    right = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        torch.mm(left, right)
    seconds = min(time_calls(lambda: torch.mm(left, right), repeats, device=device))
    return 2 * size**3 / seconds


def peak_memory_gb(device="cpu") -> float:
    """Peak resident set size of this process (CPU) or peak CUDA memory allocated, in GB."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**3
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1024**3


def resident_set_bytes() -> int:
    """Current resident set size of this process (Linux /proc), else its high-water mark."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory:
    """Peak memory while active, in GB: CUDA's peak allocated bytes, or on CPU the resident set size
    sampled every ``interval`` seconds by a thread (weights included; unlike ``peak_memory_gb`` it is
    this block's own peak, not the process's high-water mark)."""

    def __init__(self, device="cpu", interval: float = 0.002):
        self.cuda = torch.device(device).type == "cuda"
        self.interval, self.peak_bytes = interval, 0
        self._stop = threading.Event()
        self._thread = None if self.cuda else threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, resident_set_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peak_bytes = resident_set_bytes()
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, resident_set_bytes())

    @property
    def gb(self) -> float:
        return self.peak_bytes / 1024**3


def run_worker(script: str, arguments: list[str]) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter; it prints one JSON object on its last line.

    Its stderr (progress, ``--profile`` tables, tracebacks) goes straight to ours.
    """
    command = [sys.executable, script, "--worker", *arguments]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"benchmark worker {arguments} failed with exit code {result.returncode} (its stderr is above)"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------
# ../shared/BASELINES.md: the original code's figures on this kind of machine
def _number(cell: str, part: int) -> float | None:
    pieces = [piece.strip().lstrip("~") for piece in cell.split("/")]
    match = re.match(r"(\d+(?:\.\d+)?)", pieces[min(part, len(pieces) - 1)])
    return float(match.group(1)) if match else None


def read_baselines(path: Path = BASELINES) -> tuple[dict, dict]:
    """``(rows, peaks)``: rows keyed by ``(config, batch, dtype)`` -> the raw cells; peaks in FLOP/s by dtype."""
    if not path.is_file():
        return {}, {}
    text = path.read_text()
    peaks = {}
    for name in DTYPES:
        match = re.search(rf"{name} ~(\d+) GFLOP/s", text)
        if match:
            peaks[name] = float(match.group(1)) * 1e9
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and cells[1].isdigit():
            rows[(cells[0], int(cells[1]), cells[2])] = cells
    return rows, peaks


def baseline_figures(row: str | Sequence[str], batch: int, dtype: str, part: int = 0) -> dict | None:
    """The original's seconds per call, GFLOP, fraction of peak and RSS for a row (``part`` picks in "a / b" cells).

    ``row``: its name in BASELINES.md, or several names (the first one found is used).
    """
    rows, peaks = read_baselines()
    names = [row] if isinstance(row, str) else row
    cells = next((rows[key] for name in names if (key := (name, batch, dtype)) in rows), None)
    if cells is None:
        return None
    fraction = _number(cells[7], part)
    return {
        "seconds": _number(cells[3], part),
        "gflop": _number(cells[5], part),
        "peak_fraction": None if fraction is None else fraction / 100,
        "rss_gb": _number(cells[8], part),
        "peak_flops": peaks.get(dtype),
    }


# --------------------------------------------------------------------------------------------------
# output
def rate_figures(flops: float, seconds: float, images: int, peak_flops: float | None) -> dict:
    """The columns every benchmark prints: images/s, GFLOP per call, achieved GFLOP/s, fraction of the matmul peak."""
    achieved = flops / seconds
    return {
        "seconds": seconds, "images_per_s": images / seconds, "gflop": flops / 1e9, "gflop_per_s": achieved / 1e9,
        "peak_fraction": achieved / peak_flops if peak_flops else None,
    }  # fmt: skip


def original_columns(original: dict | None) -> dict:
    """The original's figures for a row (``baseline_figures``) as table columns (``None`` where unknown)."""
    original = original or {}
    return {
        "original_seconds": original.get("seconds"), "original_peak_fraction": original.get("peak_fraction"),
        "original_rss_gb": original.get("rss_gb"),
    }  # fmt: skip


RATE_COLUMNS = [
    ("seconds", "s/call", ".3f"), ("images_per_s", "img/s", ".3f"), ("gflop", "GFLOP/call", ".1f"),
    ("gflop_per_s", "GFLOP/s", ".0f"), ("peak_fraction", "% peak", ".0%"),
]  # fmt: skip
ORIGINAL_COLUMNS = [("original_seconds", "orig s/call", ".3f"), ("original_peak_fraction", "orig % peak", ".0%")]


def measure_peaks(dtype_names, device="cpu") -> dict[str, float]:
    """``matmul_peak`` of each dtype (short names, as ``TORCH_DTYPES``)."""
    return {name: matmul_peak(TORCH_DTYPES[name], device) for name in dtype_names}


def format_peaks(peaks: dict[str, float]) -> str:
    """``{"fp32": 1.9e11}`` -> ``"fp32 190 GFLOP/s"``."""
    return ", ".join(f"{dtype} {peak / 1e9:.0f} GFLOP/s" for dtype, peak in peaks.items())


def machine_line(device, threads: int, peaks: dict[str, float]) -> str:
    """The header line of a table: the device, torch threads and version, and the matmul peaks."""
    if torch.device(device).type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {threads} threads"
    return f"{where}, torch {torch.__version__}; matmul peak {format_peaks(peaks)}"


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """``columns``: (key, header, format spec); missing values print as '-'."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else format(row[key], spec) for key, _, spec in columns])
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    for number, line in enumerate(cells):
        print(
            "| "
            + " | ".join(
                cell.ljust(width) if index == 0 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(line, widths))
            )
            + " |"
        )
        if number == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2))
        print(f"wrote {path}")
