"""V²Flow tokenize / detokenize throughput and peak memory (random weights).

    python benchmarks/bench_v2flow.py                                   # v2flow_base_512, fp32 + bf16
    python benchmarks/bench_v2flow.py --device cuda --batch-size 8 --with-dcae --json bench.json

Tokenize = ``encode`` (DC-AE latents -> ids), detokenize = ``decode`` (ids -> latents; masked-AR
transformer + flow head), timed separately; the decode time is split between the MAR transformer
and the flow head. ``--with-dcae`` adds a random DC-AE f32c32 (the sana architecture) for the
pixel side. Peak memory: CUDA's max allocated bytes; on CPU the process's peak resident size
(weights included; run one dtype per process for separate CPU numbers).
"""

import argparse
import json
import resource
import sys
import time
from contextlib import contextmanager

import torch

from hf_vtok import V2FlowConfig, V2FlowModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# the DC-AE f32c32 architecture of mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers (random weights here)
DCAE_F32C32 = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"),
    decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"),
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024), decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)), decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    upsample_block_type="interpolate", downsample_block_type="Conv",
    decoder_norm_types=("batch_norm", "batch_norm", "batch_norm", "rms_norm", "rms_norm", "rms_norm"),
    decoder_act_fns=("relu", "relu", "relu", "silu", "silu", "silu"), scaling_factor=0.41407,
)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class PhaseTimer:
    """Accumulates wall time of the model's MAR transformer and flow-head calls during decode."""

    def __init__(self, model, device):
        self.device, self.totals = device, {"mar": 0.0, "flow_head": 0.0}
        for name, method in (("mar", "masked_transformer"), ("flow_head", "sample_flow_tokens")):
            setattr(model, method, self._timed(name, getattr(model, method)))

    def _timed(self, name, function):
        def wrapper(*args, **kwargs):
            synchronize(self.device)
            start = time.perf_counter()
            result = function(*args, **kwargs)
            synchronize(self.device)
            self.totals[name] += time.perf_counter() - start
            return result

        return wrapper


@contextmanager
def timed(device, results, key):
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    results[key] = time.perf_counter() - start


@torch.no_grad()
def bench(args, dtype_name) -> list[dict]:
    device, dtype = torch.device(args.device), DTYPES[dtype_name]
    overrides = {"flow_method": args.flow_method}
    for field in ("llm_vocab_size", "llm_embed_dim", "codebook_size"):
        if getattr(args, field) is not None:
            overrides[field] = getattr(args, field)
    config = V2FlowConfig.from_preset(args.preset, **overrides)
    torch.manual_seed(0)
    with torch.device(device):
        model = V2FlowModel._from_config(config, dtype=dtype).eval()  # built in dtype: no float32 copy
    timer = PhaseTimer(model, device)
    batch = args.batch_size
    latents = torch.randn(batch, config.latent_channels, config.sample_size, config.sample_size, device=device)
    vae = None
    if args.with_dcae:
        from diffusers import AutoencoderDC

        with torch.device(device):
            vae = AutoencoderDC(**DCAE_F32C32).to(dtype).eval()
        pixels = torch.rand(batch, 3, config.image_size, config.image_size, device=device, dtype=dtype) * 2 - 1

    rows = []
    for repeat in range(args.warmup + args.repeats):
        generator = torch.Generator(device).manual_seed(repeat)
        times = {}
        reset_peak(device)
        if vae is not None:
            with timed(device, times, "dcae_encode"):
                latents = vae.encode(pixels).latent.float() * config.scaling_factor
        with timed(device, times, "tokenize"):
            tokens = model.encode(latents, generator=generator).image_tokens
        tokenize_peak = peak_memory_mb(device)
        reset_peak(device)
        timer.totals = {"mar": 0.0, "flow_head": 0.0}
        with timed(device, times, "detokenize"):
            decoded = model.decode(image_tokens=tokens, generator=generator).sample
        detokenize_peak = peak_memory_mb(device)
        if vae is not None:
            with timed(device, times, "dcae_decode"):
                vae.decode((decoded / config.scaling_factor).to(dtype))
        if repeat >= args.warmup:
            rows.append({**times, **{f"decode_{k}": v for k, v in timer.totals.items()},
                         "tokenize_peak_mb": tokenize_peak, "detokenize_peak_mb": detokenize_peak})
    summary = {key: min(row[key] for row in rows) for key in rows[0] if not key.endswith("_mb")}
    summary.update({key: max(row[key] for row in rows) for key in rows[0] if key.endswith("_mb")})
    summary.update(preset=args.preset, dtype=dtype_name, batch=batch, tokens=config.num_tokens,
                   flow_method=config.flow_method, device=str(device),
                   parameters_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 1))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="v2flow_base_512")
    parser.add_argument("--flow-method", default="linear_flow", choices=["linear_flow", "CondOT"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--with-dcae", action="store_true", help="also time a random DC-AE f32c32 on pixels")
    parser.add_argument("--llm-vocab-size", type=int, help="override the LLaMA-2 vocabulary size (32000)")
    parser.add_argument("--llm-embed-dim", type=int, help="override the LLM width (4096)")
    parser.add_argument("--codebook-size", type=int, help="override the codebook size (16384)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    results = [bench(args, dtype) for dtype in args.dtypes]
    header = ("dtype", "tokenize img/s", "detokenize img/s", "MAR s/img", "flow head s/img", "tok. peak MB", "detok. peak MB")
    print(f"V2Flow {args.preset} ({results[0]['tokens']} tokens, {results[0]['flow_method']}, "
          f"{results[0]['parameters_m']}M parameters) on {args.device}, batch {args.batch_size}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        batch = r["batch"]
        print(f"| {r['dtype']} | {batch / r['tokenize']:.2f} | {batch / r['detokenize']:.3f} | "
              f"{r['decode_mar'] / batch:.3f} | {r['decode_flow_head'] / batch:.3f} | "
              f"{r['tokenize_peak_mb']:.0f} | {r['detokenize_peak_mb']:.0f} |")
        if "dcae_encode" in r:
            print(f"|   + DC-AE | encode {batch / r['dcae_encode']:.2f} img/s | decode {batch / r['dcae_decode']:.2f} img/s |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
