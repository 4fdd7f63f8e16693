"""Image tokens per second of a LLaMA generating V²Flow tokens, with and without the KV cache (random weights).

    python benchmarks/bench_v2flow_llama.py                       # 1B-sized LLaMA, 256-token images (a GPU is advised)
    python benchmarks/bench_v2flow_llama.py --quick --json out.json   # CPU: 4 tokens at the image's start
    python benchmarks/bench_v2flow_llama.py --num-layers 4 --batch-sizes 1 --dtypes fp32 --cache on

The default model is 1B-sized (Llama-3.2-1B's shape: width 2048, 16 layers, 32 query / 8 key-value heads, MLP
8192) with LLaMA-2's 32000 text tokens plus the V²Flow vocabulary (16384 image tokens, begin / end of image).
Each row times ``generate()`` with the pipeline's logits processors (image-span mask, seeded sampling; no
guidance unless ``--guidance-scale``) producing ``--new-tokens`` image tokens of a ``--image-tokens``-token image
for ``batch`` prompts (``--start`` image tokens already in the prompt). The rate is
``batch x (new_tokens - 1) / (t(new_tokens) - t(1))``: the prefill (and the first token) is left out. When
fewer tokens than a whole image are measured, the span sits by default in the middle of the image, so that
the rate estimates the whole image's average: without the cache the cost per token grows linearly with the
position (``--quick`` measures at the start, which flatters the no-cache rows). GFLOP/s counts the same
difference, ``F(new_tokens) - F(1)`` (``FlopCounterMode``), against this machine's matmul peak in the row's dtype.
"""

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import common
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from hf_vtok.pipelines.v2flow.language_model import (
    ImageTokenSampling,
    V2FlowVocabulary,
    image_logits_processors,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROMPT_TOKENS = 8  # [BOS] + a short prompt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_argument_group("model size (default: 1B)")
    size.add_argument("--hidden-size", type=int, default=2048)
    size.add_argument("--num-layers", type=int, default=16)
    size.add_argument("--num-heads", type=int, default=32)
    size.add_argument("--num-kv-heads", type=int, default=8)
    size.add_argument("--intermediate-size", type=int, default=8192)
    size.add_argument("--text-vocab-size", type=int, default=32000)
    size.add_argument("--codebook-size", type=int, default=16384)
    run = parser.add_argument_group("runs")
    run.add_argument("--image-tokens", type=int, default=256, help="tokens per image")
    run.add_argument(
        "--new-tokens",
        type=int,
        help="tokens measured per image (default: the whole image)",
    )
    run.add_argument(
        "--start",
        type=int,
        help="image tokens already in the prompt (default: the span is centred in the image)",
    )
    run.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    run.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    run.add_argument("--cache", nargs="+", choices=["on", "off"], default=["on", "off"])
    run.add_argument(
        "--guidance-scale",
        type=float,
        default=1.0,
        help="!= 1 doubles the batch (two streams)",
    )
    run.add_argument("--repeats", type=int, default=2, help="timed calls per row (the best is kept)")
    run.add_argument("--threads", type=int, help="torch threads on CPU (default: torch's)")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument(
        "--quick",
        action="store_true",
        help="--new-tokens 4 --start 0 --repeats 1 (a CPU-sized run; flatters no-cache)",
    )
    run.add_argument("--json", help="write the rows and settings to this file")
    return parser


def build_model(args) -> tuple[LlamaForCausalLM, V2FlowVocabulary]:
    vocabulary = V2FlowVocabulary(
        image_token_offset=args.text_vocab_size,
        num_image_tokens=args.codebook_size,
        begin_of_image_token_id=args.text_vocab_size + args.codebook_size,
        end_of_image_token_id=args.text_vocab_size + args.codebook_size + 1,
    )
    config = LlamaConfig(
        vocab_size=args.text_vocab_size + args.codebook_size + 2,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        max_position_embeddings=max(4096, PROMPT_TOKENS + args.image_tokens + 2),
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), vocabulary


def prompts(args, vocabulary: V2FlowVocabulary, batch: int, start: int) -> torch.Tensor:
    """``[BOS] prompt <begin_of_image>`` + the ``start`` image tokens before the measured span."""
    generator = torch.Generator().manual_seed(batch)
    text = torch.randint(3, args.text_vocab_size, (batch, PROMPT_TOKENS - 1), generator=generator)
    image = torch.randint(0, args.codebook_size, (batch, start), generator=generator) + vocabulary.image_token_offset
    bos = torch.ones(batch, 1, dtype=torch.long)
    begin = torch.full((batch, 1), vocabulary.begin_of_image_token_id)
    return torch.cat([bos, text, begin, image], dim=1)


def time_generate(
    model,
    vocabulary,
    input_ids,
    args,
    new_tokens: int,
    use_cache: bool,
    count_flops=False,
) -> float:
    """Best wall time of ``args.repeats`` ``generate()`` calls, or (``count_flops``) the FLOPs of one call."""
    processors = image_logits_processors(
        vocabulary,
        args.image_tokens,
        ImageTokenSampling(guidance_scale=args.guidance_scale),
        generator=torch.Generator(input_ids.device).manual_seed(0),
    )
    config = GenerationConfig(
        do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=use_cache, pad_token_id=0,
        eos_token_id=None,
    )  # fmt: skip
    if args.guidance_scale != 1.0:
        input_ids = torch.cat([input_ids, input_ids])

    def generate():
        return model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
            logits_processor=processors,
        )  # fmt: skip

    if count_flops:
        return common.count_flops(generate)
    best = float("inf")
    for _ in range(args.repeats):
        if input_ids.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        output = generate()
        if input_ids.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
        assert output.shape[1] == input_ids.shape[1] + new_tokens
    return best


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.new_tokens, args.repeats = args.new_tokens or 4, 1
        args.start = 0 if args.start is None else args.start
    new_tokens = args.new_tokens or args.image_tokens
    if not 2 <= new_tokens <= args.image_tokens:
        raise ValueError(f"--new-tokens must be in [2, --image-tokens={args.image_tokens}], got {new_tokens}")
    start = (args.image_tokens - new_tokens) // 2 if args.start is None else args.start
    if not 0 <= start <= args.image_tokens - new_tokens:
        raise ValueError(f"--start must be in [0, {args.image_tokens - new_tokens}] for {new_tokens} new tokens")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, vocabulary = build_model(args)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"LLaMA with {parameters / 1e9:.2f}B parameters; {new_tokens} of {args.image_tokens} tokens from {start}")
    rows = []
    peaks = {name: common.matmul_peak(DTYPES[name], args.device) for name in args.dtypes}
    print("matmul peak " + ", ".join(f"{name} {peak / 1e9:.0f} GFLOP/s" for name, peak in peaks.items()))
    for dtype_name in args.dtypes:
        model.to(args.device, DTYPES[dtype_name])
        for batch in args.batch_sizes:
            input_ids = prompts(args, vocabulary, batch, start).to(args.device)
            for cache in args.cache:
                use_cache = cache == "on"
                with torch.inference_mode():
                    # the FLOP counts double as warm-up calls
                    flops_first = time_generate(
                        model,
                        vocabulary,
                        input_ids,
                        args,
                        1,
                        use_cache,
                        count_flops=True,
                    )
                    flops_total = time_generate(model, vocabulary, input_ids, args, new_tokens, use_cache, True)
                    first = time_generate(model, vocabulary, input_ids, args, 1, use_cache)
                    total = time_generate(model, vocabulary, input_ids, args, new_tokens, use_cache)
                seconds = max(total - first, 1e-9)
                rate = batch * (new_tokens - 1) / seconds
                achieved = (flops_total - flops_first) / seconds
                row = {
                    "dtype": dtype_name, "batch": batch, "kv_cache": cache, "tokens_per_s": rate, "seconds": total,
                    "gflop_per_token": (flops_total - flops_first) / (batch * (new_tokens - 1)) / 1e9,
                    "gflop_per_s": achieved / 1e9, "peak_fraction": achieved / peaks[dtype_name],
                }  # fmt: skip
                rows.append(row)
                shown = f"{dtype_name:5s} batch {batch:2d} kv-cache {cache:3s}"
                print(f"{shown}: {rate:9.2f} image tokens/s ({total:.2f}s, {achieved / 1e9:.0f} GFLOP/s)")
    print()
    print("| dtype | batch | KV cache | image tokens/s | GFLOP / token | GFLOP/s | % peak |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['dtype']} | {row['batch']} | {row['kv_cache']} | {row['tokens_per_s']:.2f} | "
            f"{row['gflop_per_token']:.2f} | {row['gflop_per_s']:.0f} | {row['peak_fraction']:.0%} |"
        )
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
        info = {
            "settings": settings, "parameters": parameters, "new_tokens": new_tokens, "start": start, "device": device,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "matmul_peak_flops": peaks, "rows": rows,
        }  # fmt: skip
        common.write_json(args.json, info)
    return rows


if __name__ == "__main__":
    main()
