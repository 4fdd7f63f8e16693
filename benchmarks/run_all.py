"""Speed and memory of every hf_vtok family on the configurations of ../shared/BASELINES.md.

    python benchmarks/run_all.py                     # every row, fp32 and bf16, one table
    python benchmarks/run_all.py --quick             # a few rows, to check the setup (~3 min on 2 cores)
    python benchmarks/run_all.py --families vitok sit --json out.json
    python benchmarks/run_all.py --compile           # also torch.compile(fullgraph=True) speedups
    python benchmarks/run_all.py --device cuda       # the same rows on a GPU
    python benchmarks/run_all.py --families vitok --original-json ../shared/perf/results/RUN.json

Protocol (that of BASELINES.md): random weights built in the measured dtype, eval mode,
``torch.inference_mode``, ``--threads`` torch threads (2 by default, as the baselines), eager,
the median of several calls after a warm-up, every configuration in a fresh process, the whole
suite ``--rounds`` times with the lower median kept. GFLOP per call are counted with
``FlopCounterMode`` (matmul, convolution and attention). The matmul peak (2048² ``torch.mm``) is
measured in each worker before and after its configuration; "% peak" divides by the better of
the two, so load from other processes shifts both alike.

Every figure is this machine's: s/call, img/s, GFLOP/s, % of this machine's matmul peak, peak memory (RSS
on CPU, allocated on CUDA). Fractions of peak do not transfer between CPUs (bf16 runs at half the fp32
rate on some, the same on others), so no ratio to BASELINES.md's figures is printed. The ratio to the
original comes only from a side-by-side run of both codes on this machine (../shared/perf/run.py, whose
JSON ``--original-json`` reads): its ``orig s``, ``orig/port`` (median of the per-round ratios, min-max)
and the original's peak RSS are added to the matching rows (matched by the harness's ``port_case``).

On a quiet 2-core machine the full set takes about 25 minutes with ``--rounds 1`` (the default)
and ``--compile`` adds about 10.
"""

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import common

from hf_vtok import registry


@dataclass(frozen=True)
class Case:
    family: str
    stage: str
    label: str
    batch: int
    dtype: str
    baselines: tuple[str, ...] = ()  # BASELINES.md row names to look the original up under
    part: int = 0  # which value of an "encode / decode" cell
    quick: bool = False
    extra: bool = False  # not in BASELINES.md: only with --extra
    single_call: bool = False  # minutes per call: one timed call, FLOPs counted by parts
    options: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.label.lower().replace("²", "")).strip("-")
        return f"{slug}-b{self.batch}-{self.dtype}"


def _cases() -> list[Case]:
    cases = []
    for dtype in ("fp32", "bf16"):
        for batch in (1, 4):
            for stage in ("encode", "decode"):
                label = f"ViTok-v2 350M-f16x64 {stage}"
                cases.append(
                    Case("vitok", stage, label, batch, dtype, (label,), quick=batch == 1 and stage == "encode")
                )
    for variant, label, stem in (
        ("small", "FlowMo-small", "FlowMo-small (p8, w4)"),
        ("lo", "FlowMo-Lo", "FlowMo-Lo (p4, w6)"),
    ):
        for dtype in ("fp32", "bf16"):
            cases.append(
                Case(
                    "flowmo",
                    "encode",
                    f"{label} encode+quantize",
                    1,
                    dtype,
                    (f"{stem} encode+quantize", f"{label} encode+quantize"),
                    options={"variant": variant},
                )
            )
            cases.append(
                Case(
                    "flowmo",
                    "decoder_call",
                    f"{label} one decoder call",
                    1,
                    dtype,
                    (f"{label} one decoder call",),
                    quick=variant == "small" and dtype == "bf16",
                    options={"variant": variant},
                )
            )
            if variant == "small":
                cases.append(
                    Case(
                        "flowmo",
                        "reconstruct",
                        f"{label} full reconstruct",
                        1,
                        dtype,
                        (f"{label} full reconstruct (25 steps, 31 decoder calls)", f"{label} full reconstruct"),
                        single_call=True,
                        options={"variant": variant},
                    )
                )
    for name, label in (("softvq-l-64", "SoftVQ-L-64"), ("maetok-b-128", "MAETok-B-128")):
        for dtype in ("fp32", "bf16"):
            for batch in (1, 4):
                for part, stage in enumerate(("encode", "decode")):
                    cases.append(
                        Case(
                            "continuous",
                            stage,
                            f"{label} {stage}",
                            batch,
                            dtype,
                            (f"{label} encode / decode",),
                            part=part,
                            quick=name == "maetok-b-128" and batch == 1 and dtype == "fp32",
                            extra=dtype == "bf16" and batch == 4,
                            options={"model": name},
                        )
                    )
    for dtype in ("fp32", "bf16"):
        cases.append(
            Case(
                "sit",
                "forward",
                "SiT-XL/1 forward of the CFG pair",
                2,
                dtype,
                ("SiT-XL/1 one forward of the CFG pair (64 tokens × 32)", "SiT-XL/1 one forward of the CFG pair"),
                quick=dtype == "bf16",
                options={"model": "sit"},
            )
        )
        cases.append(
            Case("sit", "forward", "DiT-XL/1 forward of the CFG pair", 2, dtype, extra=True, options={"model": "dit"})
        )
    for dtype in ("fp32", "bf16"):
        for stage, label, baseline in (
            ("tokenize", "V2Flow base 512² tokenize", "V²Flow base 512² tokenize (vocab 32000×4096)"),
            (
                "reconstruct",
                "V2Flow base 512² tokenize + detokenize",
                "V²Flow base 512² tokenize + detokenize (4 AR steps, DPM 20, cfg 2.9)",
            ),
            (
                "detokenize",
                "V2Flow base 512² detokenize",
                "V²Flow base 512² detokenize only (the difference of the two)",
            ),
        ):
            cases.append(Case("v2flow", stage, label, 1, dtype, (baseline,), single_call=stage != "tokenize"))
    return cases


CASES = _cases()
# the benchmark groups of hf_vtok's families (``FamilySpec.benchmark`` in hf_vtok.registry: data only, no torch)
FAMILIES = sorted({spec.benchmark for spec in registry.families() if spec.benchmark})


# --------------------------------------------------------------------------------------------------
# building one configuration (in the worker process)
@dataclass
class Bench:
    """What a worker measures: ``call`` (timed), optional ``flops`` (FLOP count without timing it), and
    ``compile`` (installs ``torch.compile(..., fullgraph=True)`` on the parts ``call`` runs)."""

    call: object
    flops: object = None
    compile: object = None
    modules: tuple = ()  # the models ``call`` runs (for ``--prepack``)


def _build(model_class, config, dtype, device):
    """A transformers model with random weights, created directly in ``dtype`` (no float32 copy)."""
    return model_class._from_config(config, dtype=dtype).to(device).eval()


class _default_dtype:
    """Build diffusers models in ``dtype`` (``torch_dtype`` of from_pretrained does the same for checkpoints)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        self.previous = common.torch.get_default_dtype()
        common.torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        common.torch.set_default_dtype(self.previous)


def _compiled(function):
    import torch

    return torch.compile(function, fullgraph=True, dynamic=False)


def build_vitok(case: Case, dtype, device) -> Bench:
    import numpy as np

    from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel

    config = ViTokConfig.from_variant("350M-f16x64")
    model = _build(ViTokModel, config, dtype, device)
    processor = ViTokImageProcessor(patch_size=config.patch_size, max_num_patches=(256 // config.patch_size) ** 2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(case.batch)]
    inputs = {key: value.to(device) for key, value in processor(images, return_tensors="pt").items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)  # the original converts model and inputs
    encoded = model.encode(**inputs)
    functions = {"encode": model.encode, "decode": model.decode}

    def compile_():
        functions["encode"], functions["decode"] = _compiled(model.encode), _compiled(model.decode)

    if case.stage == "encode":
        return Bench(lambda: functions["encode"](**inputs), compile=compile_, modules=(model,))
    return Bench(lambda: functions["decode"](encoded), compile=compile_, modules=(model,))


def build_flowmo(case: Case, dtype, device) -> Bench:
    import torch

    from hf_vtok import FlowMoConfig, FlowMoModel
    from hf_vtok.models.flowmo.sampling_flowmo import (
        flowmo_time_grid,
        guidance_interval_in_flow_time,
    )

    preset = {"small": "flowmo-p8", "lo": "flowmo-lo"}[case.options["variant"]]
    model = _build(FlowMoModel, FlowMoConfig.from_preset(preset), dtype, device)
    size = model.config.image_size
    pixels = torch.rand(case.batch, 3, size, size, device=device) * 2 - 1
    noise = torch.randn_like(pixels)
    encoded = model.encode(pixels)
    times = torch.full((case.batch,), 0.5, device=device)

    def compile_():
        model.encoder.forward = _compiled(model.encoder.forward)
        model.decoder.forward = _compiled(model.decoder.forward)

    def encode():
        return model.encode(pixels)

    def decoder_call():
        return model.velocity(noise, times, latents=encoded.latents)

    if case.stage == "encode":
        return Bench(encode, compile=compile_, modules=(model,))
    if case.stage == "decoder_call":
        return Bench(decoder_call, compile=compile_, modules=(model,))

    def flops():  # encode + one decoder call per evaluation (a CFG pair counts twice)
        config = model.config
        grid, _ = flowmo_time_grid(config.num_inference_steps, config.sampling_schedule)
        interval = guidance_interval_in_flow_time(config.guidance_interval)
        grid = grid.double()  # the sampler compares python floats
        guided = grid >= 0 if interval is None else (grid >= interval[0]) & (grid <= interval[1])
        evaluations = len(grid) + (int(guided.sum()) if config.guidance_scale != 1.0 else 0)
        return common.count_flops(encode) + evaluations * common.count_flops(decoder_call)

    return Bench(lambda: model(pixels, noise=noise), flops=flops, compile=compile_, modules=(model,))


def build_continuous(case: Case, dtype, device) -> Bench:
    import torch
    from bench_continuous import build_model

    model = build_model(case.options["model"], dtype, device)
    config = model.config
    images = torch.rand(case.batch, 3, config.image_size, config.image_size, device=device, dtype=dtype) * 2 - 1
    latents = model.encode(images).latents
    functions = {"encode": model.encode, "decode": model.decode}

    def compile_():
        functions["encode"], functions["decode"] = _compiled(model.encode), _compiled(model.decode)

    if case.stage == "encode":
        return Bench(lambda: functions["encode"](images), compile=compile_, modules=(model,))
    return Bench(lambda: functions["decode"](latents), compile=compile_, modules=(model,))


def build_sit(case: Case, dtype, device) -> Bench:
    import torch

    from hf_vtok import DiTTransformer1DModel, SiTTransformer1DModel

    model_class = SiTTransformer1DModel if case.options["model"] == "sit" else DiTTransformer1DModel
    with _default_dtype(dtype):  # SiT-XL/1 of the SoftVQ-64 generator
        model = (
            model_class(
                in_channels=32,
                num_tokens=64,
                hidden_size=1152,
                num_layers=28,
                num_attention_heads=16,
                num_classes=1000,
            )
            .to(device)
            .eval()
        )
    latents = torch.randn(1, 64, 32, device=device, dtype=dtype)
    pair = torch.cat([latents, latents])
    labels = torch.tensor([207, model.null_class_label], device=device)
    timestep = torch.full((2,), 0.5 if case.options["model"] == "sit" else 500, device=device)
    functions = {"forward": model}

    def compile_():
        functions["forward"] = _compiled(model)

    return Bench(lambda: functions["forward"](pair, timestep, labels), compile=compile_, modules=(model,))


def build_v2flow(case: Case, dtype, device) -> Bench:
    import torch

    from hf_vtok import V2FlowConfig, V2FlowModel

    config = V2FlowConfig.from_preset("v2flow_base_512")
    model = _build(V2FlowModel, config, dtype, device)
    latents = torch.randn(case.batch, config.latent_channels, config.sample_size, config.sample_size, device=device)

    def tokenize():
        return model.encode(latents, generator=torch.Generator(device).manual_seed(0)).image_tokens

    tokens = tokenize()

    def detokenize(image_tokens):  # the baseline's settings: 4 AR steps, DPM-Solver 20 steps, MAR CFG 2.9
        return model.decode(
            image_tokens=image_tokens, guidance_scale=2.9, generator=torch.Generator(device).manual_seed(0)
        )

    def compile_():
        model.flow_head.forward = _compiled(model.flow_head.forward)

    if case.stage == "tokenize":
        return Bench(tokenize, modules=(model,))
    if case.stage == "detokenize":
        return Bench(lambda: detokenize(tokens), compile=compile_, modules=(model,))
    return Bench(lambda: detokenize(tokenize()), compile=compile_, modules=(model,))


BUILDERS = {
    "vitok": build_vitok,
    "flowmo": build_flowmo,
    "continuous": build_continuous,
    "sit": build_sit,
    "v2flow": build_v2flow,
}
if set(BUILDERS) != set(FAMILIES) or {case.family for case in CASES} != set(FAMILIES):
    raise RuntimeError(
        f"benchmark groups of the registry {FAMILIES}, builders {sorted(BUILDERS)} and cases "
        f"{sorted({case.family for case in CASES})} differ: a family needs all three"
    )


def worker(args) -> dict:
    import torch

    common.set_threads(args.threads)
    case = next(case for case in CASES if case.key == args.case)
    dtype, device = common.DTYPES[case.dtype], torch.device(args.device)
    peaks = [common.matmul_peak(dtype, device)]
    torch.manual_seed(0)
    result = {}
    with torch.inference_mode():
        bench = BUILDERS[case.family](case, dtype, device)
        if args.prepack:
            from hf_vtok import prepack_linear_weights

            result["prepacked_layers"] = sum(prepack_linear_weights(module) for module in bench.modules)
        if case.single_call:  # warm-up and FLOPs on the parts; one timed call
            result["flops"] = bench.flops() if bench.flops else common.count_flops(bench.call)
            samples = common.time_calls(bench.call, 1, device=device)
        else:
            result["flops"] = common.count_flops(bench.call)  # doubles as the first warm-up call
            samples = [common.median_seconds(bench.call, args.warmup - 1, 1, 0.0, device)]
            samples += common.time_calls(bench.call, args.repeats - 1, args.min_seconds, device)
        result.update(seconds=statistics.median(samples), samples=samples)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                bench.call()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
        if args.compile and bench.compile is not None:
            eager = bench.call
            bench.compile()
            start = time.perf_counter()
            bench.call()
            result["compile_seconds"] = time.perf_counter() - start
            if case.single_call:
                result["compiled_seconds"] = common.time_calls(bench.call, 1, device=device)[0]
            else:
                medians = common.interleaved_medians({"eager": eager, "compiled": bench.call}, args.repeats, device)
                result.update(seconds=min(result["seconds"], medians["eager"]), compiled_seconds=medians["compiled"])
            result["compile_speedup"] = result["seconds"] / result["compiled_seconds"]
    peaks.append(common.matmul_peak(dtype, device))
    result.update(peak_flops=max(peaks), memory_gb=common.peak_memory_gb(device))
    return result


# --------------------------------------------------------------------------------------------------
# the parent: runs the workers, prints the table
def side_by_side(paths) -> dict[str, dict]:
    """The side-by-side harness's results (../shared/perf/run.py JSON files), by this suite's row key: the
    original's and the port's s/call (medians over rounds), ``orig/port`` (median of the per-round ratios, with
    min and max), both peak RSS and the highest load average seen. A later file overrides an earlier one."""
    found = {}
    for path in paths or ():
        data = json.loads(Path(path).read_text())
        rows = {row["case"]: row for row in data.get("rows", [])}
        for item in data.get("raw", []):
            port_case = next(
                (r["port"]["port_case"] for r in item["rounds"] if "port_case" in r.get("port", {})), None
            )
            row = rows.get(item["case"])
            if port_case is None or row is None or not row.get("ratio_port"):
                continue
            found[port_case] = {
                "side_by_side_case": item["case"], "orig_seconds": row["orig"]["seconds"],
                "port_seconds": row["port"]["seconds"], "orig_rss_gb": row["orig"]["rss_gb"],
                "port_rss_gb": row["port"]["rss_gb"], "load1_max": row.get("load1_max"),
                "ratio": row["ratio_port"]["median"], "ratio_min": row["ratio_port"]["min"],
                "ratio_max": row["ratio_port"]["max"], "rounds": row["port"]["n"], "source": str(path),
            }  # fmt: skip
    return found


def _row(case: Case, result: dict, original: dict | None = None) -> dict:
    """One table row: this machine's figures, and ``original`` (a ``side_by_side`` entry) where given."""
    achieved = result["flops"] / result["seconds"]
    row = {
        "key": case.key, "config": case.label, "family": case.family, "batch": case.batch, "dtype": case.dtype,
        **{key: value for key, value in result.items() if key != "samples"},
        "images_per_s": case.batch / result["seconds"], "gflop": result["flops"] / 1e9,
        "gflop_per_s": achieved / 1e9, "peak_fraction": achieved / result["peak_flops"],
    }  # fmt: skip
    if original:
        row["side_by_side"] = original
        row["orig_seconds"] = original["orig_seconds"]
        row["orig_rss_gb"] = original["orig_rss_gb"]
        row["orig_over_port"] = f"{original['ratio']:.2f} ({original['ratio_min']:.2f}-{original['ratio_max']:.2f})"
    return row


COLUMNS = [
    ("config", "config", ""), ("batch", "batch", "d"), ("dtype", "dtype", ""), ("seconds", "s/call", ".3f"),
    ("images_per_s", "img/s", ".3f"), ("gflop", "GFLOP/call", ".1f"), ("gflop_per_s", "GFLOP/s", ".0f"),
    ("peak_fraction", "% peak", ".0%"), ("memory_gb", "mem GB", ".2f"),
]  # fmt: skip
SIDE_BY_SIDE_COLUMNS = [
    ("orig_seconds", "orig s (side by side)", ".3f"), ("orig_over_port", "orig/port (side by side)", ""),
    ("orig_rss_gb", "orig RSS GB", ".2f"),
]  # fmt: skip


def table_columns(compile_: bool, original: bool) -> list[tuple[str, str, str]]:
    """The printed columns: this machine's figures, then compile and side-by-side ones where measured/given."""
    columns = list(COLUMNS)
    if compile_:
        columns += [("compile_seconds", "compile s", ".0f"), ("compile_speedup", "compiled x", ".2f")]
    return columns + (SIDE_BY_SIDE_COLUMNS if original else [])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a few rows (one per family), fewer repeats")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, help="only these families")
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(common.DTYPES), default=sorted(common.DTYPES, reverse=True)
    )
    parser.add_argument("--match", help="only rows whose key contains this text")
    parser.add_argument("--extra", action="store_true", help="also the rows BASELINES.md has no original for")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile(fullgraph=True), interleaved with eager"
    )
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler op table per row (stderr)")
    parser.add_argument(
        "--prepack",
        action="store_true",
        help="prepack linear weights for oneDNN first (hf_vtok.prepack_linear_weights; CPU only)",
    )
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument(
        "--original-json",
        nargs="+",
        metavar="PATH",
        help="side-by-side results of ../shared/perf/run.py (JSON): adds the original's s/call, orig/port, RSS",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as BASELINES.md)")
    parser.add_argument("--rounds", type=int, default=1, help="run the suite this many times, keep the lower median")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per row (at least)")
    parser.add_argument(
        "--min-seconds", type=float, default=3.0, help="keep timing a row until this much is collected"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return None

    cases = [
        case for case in CASES
        if (not args.families or case.family in args.families) and case.dtype in args.dtypes
        and (not case.extra or args.extra) and (not args.quick or case.quick)
        and (not args.match or args.match in case.key)
    ]  # fmt: skip
    if args.list:
        print("\n".join(case.key for case in cases))
        return None
    if args.quick:
        args.repeats, args.min_seconds, args.warmup = min(args.repeats, 3), min(args.min_seconds, 1.0), 1
    forwarded = [
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--min-seconds",
        str(args.min_seconds),
        "--warmup",
        str(args.warmup),
    ]
    if args.prepack and args.compile:
        parser.error("--prepack and --compile exclude each other: inductor's freezing prepacks compiled graphs itself")
    forwarded += ["--compile"] * args.compile + ["--profile"] * args.profile + ["--prepack"] * args.prepack
    started, load_before = time.time(), common.load_average()
    results: dict[str, dict] = {}
    for round_index in range(args.rounds):
        for case in cases:
            result = common.run_worker(__file__, ["--case", case.key, *forwarded])
            kept = results.get(case.key)
            if kept is None or result["seconds"] < kept["seconds"]:
                results[case.key] = result
            print(
                f"  [{round_index + 1}/{args.rounds}] {case.key}: {result['seconds']:.3f} s "
                f"(load {common.load_average()})",
                file=sys.stderr,
                flush=True,
            )
    originals = side_by_side(args.original_json)
    rows = [_row(case, results[case.key], originals.get(case.key)) for case in cases]
    columns = table_columns(args.compile, bool(originals))
    peaks = {
        dtype: max(row["peak_flops"] for row in rows if row["dtype"] == dtype)
        for dtype in {row["dtype"] for row in rows}
    }
    minutes = (time.time() - started) / 60
    print(
        f"\n{args.device}, {args.threads} threads, torch {common.torch.__version__}"
        + ("; linear weights prepacked (oneDNN)" if args.prepack else "")
        + "; matmul peak "
        + ", ".join(f"{dtype} {peak / 1e9:.0f} GFLOP/s" for dtype, peak in sorted(peaks.items()))
        + f"; load {load_before} -> {common.load_average()}; {minutes:.1f} min\n"
    )
    common.print_table(rows, columns)
    common.write_json(args.json, {
        "device": args.device, "threads": args.threads, "torch": common.torch.__version__, "rounds": args.rounds,
        "prepacked": args.prepack, "original_json": args.original_json,
        "matmul_peak_flops": peaks, "load_average": [load_before, common.load_average()], "minutes": minutes,
        "cases": [asdict(case) for case in cases], "rows": rows,
    })  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
