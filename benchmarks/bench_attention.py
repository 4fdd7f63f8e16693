"""Attention kernels at the models' shapes: torch's SDPA (the CPU flash kernel), SDPA's math path, and hf_vtok's
blocked kernel (``hf_vtok.modules.attention._blocked_attention``, the default for bfloat16 CPU inference) at several
score block sizes, called in turn (A B C ...) in one process.

    python benchmarks/bench_attention.py                      # the families' bfloat16 shapes, 2 threads
    python benchmarks/bench_attention.py --dtype fp32 --shapes 1x12x1280x64 --json attention.json

Prints, per shape and kernel, the median ms/call, GFLOP/s, % of this machine's matmul peak in that dtype, and the
relative error (Frobenius) against float64; writes ``--json``.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# [batch, heads, tokens, head_dim] and softmax scale of the side-by-side cases (../shared/perf/cases.py)
MODEL_SHAPES = {
    "flowmo-small p8": ("1x12x1280x64", 0.125),
    "vitok-v2 350M 256px": ("1x16x256x64", None),
    "vitok-v2 350M 256px b4": ("4x16x256x64", None),
    "sit-xl/1 cfg pair": ("2x16x64x72", None),
    "softvq-l-64": ("1x16x321x64", None),
    "maetok-b-128": ("1x12x385x64", None),
}
BLOCK_BYTES = (2**20, 4 * 2**20, 16 * 2**20)


def _shape(text: str) -> tuple[int, ...]:
    parts = tuple(int(part) for part in text.lower().split("x"))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected BATCHxHEADSxTOKENSxHEAD_DIM, e.g. 1x12x1280x64")
    return parts


def _math_sdpa(query, key, value, scale):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(query, key, value, scale=scale)


def _blocked(query, key, value, scale, block_bytes):
    from hf_vtok.modules.attention import _blocked_attention

    return _blocked_attention(query, key, value, None, scale, block_bytes)


def measure(name: str, shape, scale, dtype: torch.dtype, repeats: int, peak: float) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(shape, generator=generator).to(dtype) for _ in range(3))
    reference = F.scaled_dot_product_attention(query.double(), key.double(), value.double(), scale=scale)
    kernels = {
        "sdpa (flash)": lambda: F.scaled_dot_product_attention(query, key, value, scale=scale),
        "sdpa math": lambda: _math_sdpa(query, key, value, scale),
    }
    for block_bytes in BLOCK_BYTES:
        kernels[f"hf_vtok blocked {block_bytes >> 20} MiB"] = lambda block_bytes=block_bytes: _blocked(
            query, key, value, scale, block_bytes
        )
    flops = 4 * shape[0] * shape[1] * shape[2] * shape[2] * shape[3]
    with torch.inference_mode():
        for kernel in kernels.values():
            kernel()
        seconds = common.interleaved_medians(kernels, repeats)
        rows = []
        for kernel_name, kernel in kernels.items():
            error = (kernel().double() - reference).norm() / reference.norm()
            rows.append(
                {
                    "case": name,
                    "shape": "x".join(map(str, shape)),
                    "kernel": kernel_name,
                    "ms": seconds[kernel_name] * 1e3,
                    "gflops": flops / seconds[kernel_name] / 1e9,
                    "peak_fraction": flops / seconds[kernel_name] / peak,
                    "relative_error": float(error),
                }
            )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", type=common.dtype_name, default="bf16", choices=common.dtype_choices(common.DTYPES))
    parser.add_argument("--shapes", nargs="+", type=_shape, help="BATCHxHEADSxTOKENSxHEAD_DIM (default: the models')")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    threads = common.set_threads(args.threads)
    dtype = common.DTYPES[args.dtype]
    peaks = common.measure_peaks([args.dtype])
    print(common.machine_line("cpu", threads, peaks))
    cases = (
        {"x".join(map(str, shape)): (shape, None) for shape in args.shapes}
        if args.shapes
        else {name: (_shape(text), scale) for name, (text, scale) in MODEL_SHAPES.items()}
    )
    rows = []
    for name, (shape, scale) in cases.items():
        rows += measure(name, shape, scale, dtype, args.repeats, peaks[args.dtype])
    common.print_table(
        rows,
        [
            ("case", "case", "s"),
            ("shape", "shape", "s"),
            ("kernel", "kernel", "s"),
            ("ms", "ms/call", ".2f"),
            ("gflops", "GFLOP/s", ".0f"),
            ("peak_fraction", "% peak", ".0%"),
            ("relative_error", "rel. error vs fp64", ".1e"),
        ],
    )
    common.write_json(args.json, {"dtype": args.dtype, "threads": threads, "peaks": peaks, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
