"""V²Flow tokenize / detokenize throughput, FLOP/s and peak memory (random weights).

    python benchmarks/bench_v2flow.py                                   # v2flow_base_512, fp32 + bf16
    python benchmarks/bench_v2flow.py --guidance-scale 2.9 --dtypes fp32   # the BASELINES.md settings
    python benchmarks/bench_v2flow.py --device cuda --batch-size 8 --with-dcae --json bench.json

Tokenize = ``encode`` (DC-AE latents -> ids), detokenize = ``decode`` (ids -> latents; masked-AR
transformer + flow head), timed separately (median of ``--repeats`` calls after ``--warmup``, the
first warm-up call counting FLOPs with ``FlopCounterMode``); the decode time is split between the
MAR transformer and the flow head. ``--with-dcae`` adds a random DC-AE f32c32 (the sana
architecture) for the pixel side, as rows of their own. "% peak" divides the achieved FLOP/s by
this machine's matmul peak for the row's dtype, measured at the start of the run; where
../shared/BASELINES.md has the same row (v2flow_base_512, full vocabulary, batch 1; detokenize
with ``--guidance-scale 2.9``) the original's s/call and % peak stand beside ours. Peak memory:
CUDA's peak allocated bytes; on CPU the peak resident set size during the stage, sampled by a
thread (weights included; the dtypes run one after the other in this process).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import common

# the DC-AE f32c32 architecture of mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers (random weights here)
_DCAE_BLOCKS = ("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock")
DCAE_F32C32 = {
    "in_channels": 3, "latent_channels": 32, "attention_head_dim": 32,
    "encoder_block_types": _DCAE_BLOCKS, "decoder_block_types": _DCAE_BLOCKS,
    "encoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "decoder_block_out_channels": (128, 256, 512, 512, 1024, 1024),
    "encoder_layers_per_block": (2, 2, 2, 3, 3, 3), "decoder_layers_per_block": (3, 3, 3, 3, 3, 3),
    "encoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "decoder_qkv_multiscales": ((), (), (), (5,), (5,), (5,)),
    "upsample_block_type": "interpolate", "downsample_block_type": "Conv",
    "decoder_norm_types": ("batch_norm", "batch_norm", "batch_norm", "rms_norm", "rms_norm", "rms_norm"),
    "decoder_act_fns": ("relu", "relu", "relu", "silu", "silu", "silu"), "scaling_factor": 0.41407,
}  # fmt: skip
BASELINE_ROWS = {
    "tokenize": "V²Flow base 512² tokenize (vocab 32000×4096)",
    "detokenize": "V²Flow base 512² detokenize only (the difference of the two)",
}
BASELINE_GUIDANCE = 2.9  # the MAR guidance of the BASELINES.md detokenize row (4 AR steps, DPM-Solver 20 steps)
VOCABULARY_FLAGS = ("llm_vocab_size", "llm_embed_dim", "codebook_size")


class PhaseTimer:
    """Accumulates wall time of the model's MAR transformer and flow-head calls during decode."""

    def __init__(self, model, device):
        self.device, self.totals = device, {"mar": 0.0, "flow_head": 0.0}
        for name, method in (("mar", "masked_transformer"), ("flow_head", "sample_flow_tokens")):
            setattr(model, method, self._timed(name, getattr(model, method)))

    def reset(self):
        self.totals = dict.fromkeys(self.totals, 0.0)

    def _timed(self, name, function):
        def wrapper(*args, **kwargs):
            common.synchronize(self.device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            common.synchronize(self.device)
            self.totals[name] += time.perf_counter() - start
            return result

        return wrapper


def measure_stage(function, device, warmup: int, repeats: int, timer: PhaseTimer | None = None) -> dict:
    """FLOPs (the first warm-up call), median seconds, peak memory and (with ``timer``) the median decode split."""
    phases = []

    def call():
        if timer is not None:
            timer.reset()
        function()
        if timer is not None:
            phases.append(dict(timer.totals))

    flops = common.count_flops(function)
    with common.PeakMemory(device) as memory:
        for _ in range(warmup - 1):
            function()
        seconds = statistics.median(common.time_calls(call, repeats, device=device))
    result = {"flops": flops, "seconds": seconds, "memory_gb": memory.gb}
    if phases:
        result.update({f"{name}_seconds": statistics.median(p[name] for p in phases) for name in phases[0]})
    return result


def bench(args, dtype_name: str) -> tuple[list[dict], dict]:
    """The stages of one dtype: ``(results, facts about the model)``."""
    import torch

    from hf_vtok import V2FlowConfig, V2FlowModel

    device, dtype = torch.device(args.device), common.TORCH_DTYPES[dtype_name]
    overrides = {"flow_method": args.flow_method, **common.parse_overrides(args.set)}
    for field in VOCABULARY_FLAGS:
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    config = V2FlowConfig.from_preset(args.preset, **overrides)
    torch.manual_seed(0)
    with torch.device(device):
        model = V2FlowModel._from_config(config, dtype=dtype).eval()  # built in dtype: no float32 copy
    timer = PhaseTimer(model, device)
    batch = args.batch_size
    latents = torch.randn(batch, config.latent_channels, config.sample_size, config.sample_size, device=device)

    def generator():
        return torch.Generator(device).manual_seed(0)

    def tokenize():
        return model.encode(latents, generator=generator()).image_tokens

    def detokenize():
        return model.decode(image_tokens=tokens, guidance_scale=args.guidance_scale, generator=generator()).sample

    stages = {}
    if args.with_dcae:
        from diffusers import AutoencoderDC

        with torch.device(device):
            vae = AutoencoderDC(**DCAE_F32C32).to(dtype).eval()
        pixels = torch.rand(batch, 3, config.image_size, config.image_size, device=device, dtype=dtype) * 2 - 1
        stages["DC-AE encode"] = lambda: vae.encode(pixels).latent
    stages["tokenize"] = tokenize
    stages["detokenize"] = detokenize
    if args.with_dcae:
        stages["DC-AE decode"] = lambda: vae.decode(decoded.to(dtype) / config.scaling_factor)

    results = []
    with torch.inference_mode():
        tokens = tokenize()
        decoded = detokenize()
        for stage, function in stages.items():
            split = timer if stage == "detokenize" else None
            results.append({"stage": stage, **measure_stage(function, device, args.warmup, args.repeats, split)})
    facts = {"tokens": config.num_tokens, "flow_method": config.flow_method,
             "guidance_scale": config.resolved_guidance_scale(args.guidance_scale),
             "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
             "baseline_setup": args.preset == "v2flow_base_512" and config.flow_method == "linear_flow"
             and not any(getattr(args, field) is not None for field in VOCABULARY_FLAGS) and not args.set}  # fmt: skip
    return results, facts


def original_figures(stage: str, batch: int, dtype: str, facts: dict) -> dict | None:
    """The BASELINES.md figures of the same row, if this run measures the same setup."""
    if not facts["baseline_setup"] or stage not in BASELINE_ROWS:
        return None
    if stage == "detokenize" and facts["guidance_scale"] != BASELINE_GUIDANCE:
        return None
    return common.baseline_figures(BASELINE_ROWS[stage], batch, dtype)


def main(argv=None) -> list[dict]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="v2flow_base_512")
    parser.add_argument("--flow-method", default="linear_flow", choices=["linear_flow", "CondOT"])
    parser.add_argument("--dtypes", nargs="+", type=common.dtype_name, choices=common.dtype_choices(),
                        default=["fp32", "bf16"], help="fp32 / float32, bf16 / bfloat16, fp16 / float16")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1, help="warm-up calls per stage (at least 1: the FLOP count)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per stage")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help=f"MAR guidance of detokenize (default: the config's; BASELINES.md used {BASELINE_GUIDANCE})",
    )
    parser.add_argument("--with-dcae", action="store_true", help="also time a random DC-AE f32c32 on pixels")
    parser.add_argument("--llm-vocab-size", type=int, help="override the LLaMA-2 vocabulary size (32000)")
    parser.add_argument("--llm-embed-dim", type=int, help="override the LLM width (4096)")
    parser.add_argument("--codebook-size", type=int, help="override the codebook size (16384)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="other config overrides (e.g. hidden_size=64 encoder_num_layers=1)",
    )
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    args = parser.parse_args(argv)
    args.warmup = max(1, args.warmup)

    threads = common.set_threads(args.threads)
    peaks = common.measure_peaks(args.dtypes, args.device)
    rows, facts = [], {}
    for dtype in args.dtypes:
        results, facts = bench(args, dtype)
        for result in results:
            rows.append({
                "stage": result["stage"], "dtype": dtype, "batch": args.batch_size, "memory_gb": result["memory_gb"],
                "mar_seconds": result.get("mar_seconds"), "flow_head_seconds": result.get("flow_head_seconds"),
                **common.rate_figures(result["flops"], result["seconds"], args.batch_size, peaks[dtype]),
                **common.original_columns(original_figures(result["stage"], args.batch_size, dtype, facts)),
            })  # fmt: skip
        print(f"  done: {dtype}", file=sys.stderr)
    print(
        f"{common.machine_line(args.device, threads, peaks)}\nV2Flow {args.preset} ({facts['tokens']} tokens, "
        f"{facts['flow_method']}, MAR guidance {facts['guidance_scale']}, {facts['parameters_m']}M parameters), "
        f"batch {args.batch_size}\n"
    )
    memory = "peak GB (CUDA allocated)" if args.device.startswith("cuda") else "peak GB (RSS)"
    common.print_table(rows, [
        ("stage", "stage", ""), ("dtype", "dtype", ""), *common.RATE_COLUMNS, ("mar_seconds", "MAR s", ".3f"),
        ("flow_head_seconds", "flow head s", ".3f"), *common.ORIGINAL_COLUMNS, ("memory_gb", memory, ".2f"),
    ])  # fmt: skip
    common.write_json(args.json, {"device": args.device, "threads": threads, "matmul_peak_flops": peaks,
                                  "preset": args.preset, **facts, "rows": rows})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
