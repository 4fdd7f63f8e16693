"""Step time and peak memory of the flow-decoder training steps: FlowMo stage 1, FlowMo stage 2 with K sampler
steps (with and without step-wise recomputation), and V²Flow, at the test sizes (random weights).

    python benchmarks/bench_flow_training.py                       # test sizes, K = 1 2 4 8, CPU
    python benchmarks/bench_flow_training.py --size small --json flow_training.json
    python benchmarks/bench_flow_training.py --device cuda --size small

One training step = what the training scripts do per optimizer step: forward with the losses (stage 1: the
rectified-flow loss, quantizer terms and LPIPS on the one-step estimate; stage 2: the same plus the sampler chain
and the ResNet-logit loss on its sample; V²Flow: the masked flow loss and commitment with the EMA codebook update),
backward, Adam(W) step. ``saved activations`` are the bytes autograd keeps for the backward pass of the tokenizer (an exact
activation-memory figure, parameters excluded; what recomputation saves). Each configuration runs in a fresh process, so the peak memory is its own: on CUDA the
peak allocated bytes, on CPU the process's peak resident size and its growth over the resident size before the
first step (``peak_rss_mib`` / ``step_rss_mib``; the growth is the activation and optimizer memory). Times are
the median of ``--repeats`` steps after two warm-up steps.
"""

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

FLOWMO_SIZES = {
    # the sizes of tests/test_flow_training.py, and a larger one to see the scaling
    "test": dict(
        image_size=16, patch_size=4, code_length=4, context_dim=6, bits_per_token=3, mup_width=2, enc_mup_width=2,
        encoder_depth=1, decoder_depth=2, base_hidden_size=64, num_attention_heads=2, base_axes_dim=(8, 12, 12),
    ),
    "small": dict(
        image_size=64, patch_size=4, code_length=32, context_dim=18, bits_per_token=9, mup_width=2, enc_mup_width=2,
        encoder_depth=2, decoder_depth=4, base_hidden_size=64, num_attention_heads=2, base_axes_dim=(8, 12, 12),
    ),
}
V2FLOW_SIZES = {
    "test": dict(
        latent_channels=4, sample_size=4, vae_downsample_factor=2, connector_hidden_size=8, connector_depth=1,
        llm_vocab_size=20, llm_embed_dim=12, codebook_size=16, hidden_size=16, encoder_num_layers=1,
        decoder_num_layers=1, num_attention_heads=2, flow_head_width=16, flow_head_depth=1,
    ),
    "small": dict(
        latent_channels=32, sample_size=8, vae_downsample_factor=32, connector_hidden_size=64, connector_depth=1,
        llm_vocab_size=256, llm_embed_dim=64, codebook_size=256, hidden_size=128, encoder_num_layers=2,
        decoder_num_layers=2, num_attention_heads=4, flow_head_width=128, flow_head_depth=2,
    ),
}  # fmt: skip
TINY_RESNET = dict(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8, num_labels=10)


def _rss_mib() -> float:
    """Current resident size (Linux /proc), MiB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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
        latents = torch.randn(batch, fields["latent_channels"], fields["sample_size"], fields["sample_size"], device=device)

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
    torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    step, parameters = build_step(case, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_mib()
    for _ in range(2):  # warm-up (allocator, optimizer state)
        step()
    times = []
    for _ in range(case["repeats"]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {**case, "step_ms": 1000 * statistics.median(times), "saved_activations_mib": saved_activation_mib(step, parameters)}
    if device.type == "cuda":
        result["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mib"] = _peak_rss_mib()
        result["step_rss_mib"] = max(0.0, _peak_rss_mib() - rss_before)
    return result


def cases(args) -> list[dict]:
    common = dict(size=args.size, batch_size=args.batch_size, device=args.device, threads=args.threads, repeats=args.repeats)
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
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one configuration, in this process (JSON)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(measure(json.loads(args.case))))
        return []
    results = []
    for case in cases(args):
        completed = subprocess.run(
            [sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True, check=False
        )
        if completed.returncode:
            raise RuntimeError(f"{case['name']} failed:\n{completed.stderr[-3000:]}")
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    memory_key = "peak_allocated_mib" if args.device.startswith("cuda") else "step_rss_mib"
    header = f"{'configuration':42s} {'step ms':>9s} {'saved activations MiB':>22s} {memory_key:>18s}"
    print(header + ("" if memory_key != "step_rss_mib" else f" {'peak_rss_mib':>13s}"))
    for row in results:
        extra = f" {row['peak_rss_mib']:13.1f}" if "peak_rss_mib" in row else ""
        print(f"{row['name']:42s} {row['step_ms']:9.1f} {row['saved_activations_mib']:22.3f} {row[memory_key]:18.1f}{extra}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


if __name__ == "__main__":
    main()
