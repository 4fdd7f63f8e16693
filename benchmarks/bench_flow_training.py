"""Step time and peak memory of the flow-decoder training steps: FlowMo stage 1, FlowMo stage 2 with K sampler
steps (with and without step-wise recomputation), and V²Flow, at the test sizes (random weights).

    python benchmarks/bench_flow_training.py                       # test sizes, K = 1 2 4 8, CPU
    python benchmarks/bench_flow_training.py --size small --json flow_training.json
    python benchmarks/bench_flow_training.py --device cuda --size small

One training step = what the training scripts do per optimizer step: forward with the losses (stage 1: the
rectified-flow loss, quantizer terms and LPIPS on the one-step estimate; stage 2: the same plus the sampler chain
and the ResNet-logit loss on its sample; V²Flow: the masked flow loss and commitment with the EMA codebook update),
backward, Adam(W) step. ``saved activations`` are the bytes autograd keeps for the backward pass of the tokenizer
(an exact activation-memory figure, parameters excluded; what recomputation saves). Each configuration runs in a
fresh process, so the peak memory is its own: on CUDA the peak allocated bytes, on CPU the process's peak resident
size and its growth over the resident size before the first step (``peak_rss_mib`` / ``step_rss_mib``; the growth
is the activation and optimizer memory); ``--in-process`` measures every configuration in this one process instead
(quicker, but the memory figures then carry over). Times
are the median of ``--repeats`` steps after two warm-up steps, the first of which counts the FLOPs of a step
(forward, backward and the perceptual network, ``FlopCounterMode``): GFLOP/s and the fraction of this machine's
fp32 matmul peak (measured at the start of the run).
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import common
import torch

FLOWMO_SIZES = {
    # the sizes of tests/training/test_flow_training.py, and a larger one to see the scaling
    "test": {
        "image_size": 16,
        "patch_size": 4,
        "code_length": 4,
        "context_dim": 6,
        "bits_per_token": 3,
        "mup_width": 2,
        "enc_mup_width": 2,
        "encoder_depth": 1,
        "decoder_depth": 2,
        "base_hidden_size": 64,
        "num_attention_heads": 2,
        "base_axes_dim": (8, 12, 12),
    },
    "small": {
        "image_size": 64,
        "patch_size": 4,
        "code_length": 32,
        "context_dim": 18,
        "bits_per_token": 9,
        "mup_width": 2,
        "enc_mup_width": 2,
        "encoder_depth": 2,
        "decoder_depth": 4,
        "base_hidden_size": 64,
        "num_attention_heads": 2,
        "base_axes_dim": (8, 12, 12),
    },
}
V2FLOW_SIZES = {
    "test": {
        "latent_channels": 4, "sample_size": 4, "vae_downsample_factor": 2, "connector_hidden_size": 8,
        "connector_depth": 1, "llm_vocab_size": 20, "llm_embed_dim": 12, "codebook_size": 16, "hidden_size": 16,
        "encoder_num_layers": 1, "decoder_num_layers": 1, "num_attention_heads": 2, "flow_head_width": 16,
        "flow_head_depth": 1,
    },
    "small": {
        "latent_channels": 32, "sample_size": 8, "vae_downsample_factor": 32, "connector_hidden_size": 64,
        "connector_depth": 1, "llm_vocab_size": 256, "llm_embed_dim": 64, "codebook_size": 256, "hidden_size": 128,
        "encoder_num_layers": 2, "decoder_num_layers": 2, "num_attention_heads": 4, "flow_head_width": 128,
        "flow_head_depth": 2,
    },
}  # fmt: skip
TINY_RESNET = {"depths": [1, 1], "hidden_sizes": [8, 16], "embedding_size": 8, "num_labels": 10}


def saved_activation_mib(step, model_parameters) -> float:
    """MiB of the distinct tensors autograd keeps for the backward pass of the tokenizer's forward in one step
    (parameters and the perceptual network excluded):
    the activation memory, exactly and independently of the allocator. Tensors kept inside a recomputed
    (checkpointed) region are not kept, so they are not counted."""
    parameter_storages = {parameter.untyped_storage().data_ptr() for parameter in model_parameters}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    step(lambda: torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor))
    return sum(storages.values()) / 2**20


def build_step(case: dict, device: torch.device):
    """A closure running one optimizer step of ``case`` (model, losses, backward, optimizer)."""
    size, batch = case["size"], case["batch_size"]
    if case["family"] == "v2flow":
        from hf_vtok import V2FlowConfig, V2FlowModel

        fields = V2FLOW_SIZES[size]
        model = V2FlowModel(V2FlowConfig(**fields, flow_method=case["flow_method"])).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.02)
        latents = torch.randn(
            batch, fields["latent_channels"], fields["sample_size"], fields["sample_size"], device=device
        )

        def step(context=contextlib.nullcontext):
            with context():
                loss = model(latents, return_loss=True).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            optimizer.step()

        return step, list(model.parameters())

    from transformers import ResNetConfig

    from hf_vtok import FlowMoConfig, FlowMoModel
    from hf_vtok.losses import LPIPS, ResNetLogitPerceptualLoss

    fields = FLOWMO_SIZES[size]
    model = FlowMoModel(FlowMoConfig(**fields)).to(device).train()
    stage2 = case["stage"] == "posttrain"
    if stage2:
        model.encoder.requires_grad_(False)
        perceptual, weight = ResNetLogitPerceptualLoss(ResNetConfig(**TINY_RESNET)).to(device), 0.01
    else:
        perceptual, weight = LPIPS().to(device), 0.1
    if case.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    pixels = torch.rand(batch, 3, fields["image_size"], fields["image_size"], device=device) * 2 - 1

    def step(context=contextlib.nullcontext):
        with context():
            output = model(
                pixels,
                return_loss=True,
                posttrain_steps=case["sampler_steps"] if stage2 else None,
                checkpoint_posttrain_steps=case.get("checkpoint_steps", False),
            )
        estimate = output.posttrain_sample if stage2 else output.sample
        loss = output.loss + weight * perceptual(pixels, estimate).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, list(model.parameters())


def measure(case: dict) -> dict:
    device = torch.device(case["device"])
    common.set_threads(case["threads"])
    torch.manual_seed(0)
    step, parameters = build_step(case, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = common.resident_set_bytes() / 2**20
    flops = common.count_flops(step)  # also the first warm-up step (allocator, optimizer state)
    seconds = common.median_seconds(step, warmup=1, repeats=case["repeats"], device=device)
    result = {**case, "step_ms": 1000 * seconds, "flops": flops,
              "saved_activations_mib": saved_activation_mib(step, parameters)}  # fmt: skip
    peak_mib = common.peak_memory_gb(device) * 1024
    if device.type == "cuda":
        result["peak_allocated_mib"] = peak_mib
    else:
        result.update(peak_rss_mib=peak_mib, step_rss_mib=max(0.0, peak_mib - rss_before))
    return result


def cases(args) -> list[dict]:
    common = {
        "size": args.size,
        "batch_size": args.batch_size,
        "device": args.device,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    rows = [dict(common, family="flowmo", stage="pretrain", name="flowmo stage 1")]
    for steps in args.sampler_steps:
        for checkpointed in (False, True):
            rows.append(
                dict(common, family="flowmo", stage="posttrain", sampler_steps=steps, checkpoint_steps=checkpointed,
                     name=f"flowmo stage 2, K={steps}{', step recompute' if checkpointed else ''}")
            )  # fmt: skip
    for method in ("linear_flow", "CondOT"):
        rows.append(dict(common, family="v2flow", flow_method=method, name=f"v2flow {method}"))
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(FLOWMO_SIZES), default="test")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--sampler-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--match", help="only the configurations whose name contains this text")
    parser.add_argument("--in-process", action="store_true", help="measure in this process, not a fresh one per row")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one configuration, in this process (JSON)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(json.loads(args.case))))
        return []
    threads = common.set_threads(args.threads)
    peaks = common.measure_peaks(["fp32"], args.device)
    results = []
    for case in cases(args):
        if args.match and args.match not in case["name"]:
            continue
        result = measure(case) if args.in_process else common.run_worker(__file__, ["--case", json.dumps(case)])
        seconds = result["step_ms"] / 1000
        results.append({**result, **common.rate_figures(result["flops"], seconds, case["batch_size"], peaks["fp32"])})
        print(f"  done: {case['name']}", file=sys.stderr)
    print(f"{common.machine_line(args.device, threads, peaks)}; {args.size} sizes, batch {args.batch_size}\n")
    memory = (
        [("peak_allocated_mib", "peak allocated MiB", ".1f")]
        if args.device.startswith("cuda")
        else [("step_rss_mib", "step RSS MiB", ".1f"), ("peak_rss_mib", "peak RSS MiB", ".1f")]
    )
    common.print_table(results, [
        ("name", "configuration", ""), ("step_ms", "step ms", ".1f"), ("gflop", "GFLOP/step", ".3f"),
        ("gflop_per_s", "GFLOP/s", ".1f"), ("peak_fraction", "% peak", ".1%"),
        ("saved_activations_mib", "saved activations MiB", ".3f"), *memory,
    ])  # fmt: skip
    common.write_json(args.json, {"device": args.device, "threads": threads, "matmul_peak_flops": peaks,
                                  "size": args.size, "rows": results})  # fmt: skip
    return results


if __name__ == "__main__":
    main()
