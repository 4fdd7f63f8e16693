"""V²Flow against the original code's golden outputs (../shared/parity/v2flow, see its FIXTURE.md).

Every size, name and number (seeds, guidance, heads of the stand-in architecture) is read from the
fixture files; fixture sets with the same layout but other sizes and seeds are run against these
tests. The fixtures were made with one CPU thread; the module runs with one thread too, so the
convolutions sum in the same order.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_vtok import V2FlowModel
from hf_vtok.flow import flow_dpm_solver_timesteps
from hf_vtok.models.v2flow.convert_v2flow_original_to_hf import convert_v2flow_checkpoint, load_v2flow_checkpoint
from hf_vtok.models.v2flow.llm_vocabulary import extract_llm_vocabulary, load_llm_vocabulary
from hf_vtok.modules import patchify, unpatchify

pytestmark = pytest.mark.parity
ATOL = 1e-5
ERRORS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_errors(one_thread):
    yield
    if ERRORS:  # shown with `pytest -s`
        print("\nV2Flow parity, max abs error per tensor:")
        for name, error in sorted(ERRORS.items()):
            print(f"  {name:60s} {error:.3g}")


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    root = family_parity_dir("v2flow")
    meta = json.loads((root / "original_args.json").read_text())
    tiny_arch = next(value for key, value in meta.items() if key.startswith("tiny_arch"))
    return {
        "root": root,
        "args": meta["argparse"],
        "seeds": meta["seeds"],
        "heads": tiny_arch["encoder_num_heads"],
        "outputs": load_file(root / "outputs.safetensors"),
    }


@pytest.fixture(scope="module")
def models(fixture):
    """The checkpoint as saved (its own flow method) and the same weights with the other method."""
    root, heads = fixture["root"], fixture["heads"]
    converted, _ = convert_v2flow_checkpoint(root / "checkpoint-last.pth", num_attention_heads=heads)
    methods = {converted.config.flow_method: converted}
    other = "CondOT" if converted.config.flow_method == "linear_flow" else "linear_flow"
    methods[other], _ = convert_v2flow_checkpoint(
        root / "checkpoint-last.pth", num_attention_heads=heads, args_override={"flow_method": other}
    )
    return methods


def _close(actual, expected, name):
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    )
    if not expected.is_floating_point():
        assert torch.equal(actual.to(expected.dtype), expected), f"{name}: values differ"
        return
    error = (actual.detach().float() - expected.float()).abs().max().item() if expected.numel() else 0.0
    ERRORS[name] = max(error, ERRORS.get(name, 0.0))
    assert error <= ATOL, f"{name}: max abs error {error:.3g} > {ATOL}"


@torch.no_grad()
def test_tokenizer_every_tensor(fixture, models):
    out, model = fixture["outputs"], models["linear_flow"]
    latents = out["input_latents"]
    captured = {}
    hooks = [
        getattr(model.connector, name).register_forward_hook(lambda m, a, o, name=name: captured.update({name: o}))
        for name in ("s1", "sampler", "s2")
    ]
    try:
        generator = torch.Generator().manual_seed(fixture["seeds"]["SEED_ENC"])
        encoded = model.encode(latents, generator=generator)
    finally:
        for hook in hooks:
            hook.remove()
    _close(captured["s1"], out["enc_stc_s1_out"], "enc_stc_s1_out")
    _close(captured["sampler"].unsqueeze(2), out["enc_stc_sampler_out"], "enc_stc_sampler_out")  # [B, C, t=1, h, w]
    _close(captured["s2"], out["enc_stc_s2_out"], "enc_stc_s2_out")
    _close(encoded.logits, out["enc_logits"], "enc_logits")
    _close(encoded.mixture_weights, out["enc_soft_one_hot"], "enc_soft_one_hot")
    _close(encoded.pre_quantized, out["pre_quant"], "pre_quant")
    _close(encoded.image_tokens, out["code_indices"], "code_indices")
    _close(encoded.latents, out["quantized"], "quantized")

    # the seeded generator drew exactly the reference's Gumbel noise; passing it explicitly agrees
    explicit = model.encode(latents, gumbel_noise=out["enc_gumbel_noise"])
    _close(explicit.mixture_weights, out["enc_soft_one_hot"], "enc_soft_one_hot (given enc_gumbel_noise)")
    _close(explicit.image_tokens, out["code_indices"], "code_indices (given enc_gumbel_noise)")

    quantized = model.quantizer(out["pre_quant"])
    _close(quantized.normalized, out["pre_quant_l2norm"], "pre_quant_l2norm")
    _close(quantized.indices, out["code_indices"], "code_indices (quantizer)")
    _close(quantized.quantized, out["quantized"], "quantized (quantizer)")
    _close(quantized.loss.reshape(out["quantizer_eval_loss"].shape), out["quantizer_eval_loss"], "quantizer_eval_loss")
    _close(
        model.quantizer.get_codebook_entry(out["code_indices"]), out["codebook_lookup_check"], "codebook_lookup_check"
    )
    _close(model.conditions_from_latents(out["quantized"]), out["post_quant"], "post_quant")


@torch.no_grad()
def test_masked_encoder_decoder(fixture, models):
    out, model = fixture["outputs"], models["linear_flow"]
    encoded = model.encoder(out["mae_tokens"], out["mae_mask"], out["post_quant"])
    _close(encoded, out["mae_encoder_out"], "mae_encoder_out")
    _close(model.decoder(out["mae_encoder_out"], out["mae_mask"]), out["mae_decoder_out"], "mae_decoder_out")
    config = model.config
    tokens = patchify(out["input_latents"], config.patch_size)
    _close(tokens, out["patchify_check"], "patchify_check")
    grid = (config.grid_size, config.grid_size)
    _close(unpatchify(tokens, grid, config.patch_size, config.latent_channels), out["input_latents"], "unpatchify")


@torch.no_grad()
def test_flow_head(fixture, models):
    out, head = fixture["outputs"], models["linear_flow"].flow_head
    _close(head(out["head_x"], out["head_t_1000"], out["head_c"]), out["head_out_t_1000"], "head_out_t_1000")
    _close(head(out["head_x"], out["head_t_01"], out["head_c"]), out["head_out_t_01"], "head_out_t_01")
    half = out["head_x"].shape[0] // 2
    # FIXTURE.md: forward_with_cfg(head_x, t=0.3, head_c, cfg); cfg is the run's --cfg
    guided = head.guided_velocity(out["head_x"][:half], torch.tensor(0.3), out["head_c"], fixture["args"]["cfg"])
    _close(torch.cat([guided, guided]), out["head_out_with_cfg"], "head_out_with_cfg")  # the original duplicates it


@torch.no_grad()
def test_linear_flow_dpm_solver(fixture, models):
    out, model = fixture["outputs"], models["linear_flow"]
    config = model.config
    _close(
        flow_dpm_solver_timesteps(config.flow_num_inference_steps, config.flow_shift),
        out["dpm_timesteps"],
        "dpm_timesteps",
    )
    _close(model.unconditional_embedding.expand_as(out["dpm_uncond"]), out["dpm_uncond"], "dpm_uncond")
    generator = torch.Generator().manual_seed(fixture["seeds"]["SEED_DPM"])
    noise = torch.randn(out["dpm_noise"].shape, generator=generator)
    _close(noise, out["dpm_noise"], "dpm_noise")
    calls = []
    hook = model.flow_head.register_forward_hook(
        lambda m, args, kwargs, output: calls.append((args[0], args[1], kwargs["projected_condition"], output)),
        with_kwargs=True,
    )
    try:
        sample = model.sample_flow_tokens(out["dpm_z"], noise)
    finally:
        hook.remove()
    _close(sample, out["dpm_out"], "dpm_out")
    assert len(calls) == out["dpm_call_x"].shape[0], (
        f"{len(calls)} head calls, the reference made {out['dpm_call_x'].shape[0]}"
    )
    # the sampler hands the head one time for all rows and the condition projected once for all steps
    rows = out["dpm_call_t"].shape[1]
    _close(torch.stack([call[1].expand(rows) for call in calls]), out["dpm_call_t"], "dpm_call_t")
    projected = torch.stack([model.flow_head.project_condition(condition) for condition in out["dpm_call_c"]])
    _close(torch.stack([call[2].expand(rows, -1) for call in calls]), projected, "dpm_call_c (projected)")
    for name, index in (("dpm_call_x", 0), ("dpm_call_out", 3)):
        _close(torch.stack([call[index] for call in calls]), out[name], name)


@torch.no_grad()
def test_condot_ode_solver(fixture, models):
    out, model = fixture["outputs"], models["CondOT"]
    generator = torch.Generator().manual_seed(fixture["seeds"]["SEED_ODE"])
    noise = torch.randn(out["condot_noise"].shape, generator=generator)
    _close(noise, out["condot_noise"], "condot_noise")
    sample = model.sample_flow_tokens(out["condot_z"], noise, guidance_scale=fixture["args"]["cfg"])
    _close(sample, out["condot_out"], "condot_out")


@torch.no_grad()
def test_training_loss_kernels(fixture, models):
    out = fixture["outputs"]
    linear, condot = models["linear_flow"], models["CondOT"]
    alpha, sigma, model_time = linear.linear_flow_schedule(out["trainloss_lf_t_index"])
    _close(sigma, out["trainloss_lf_sigma"], "trainloss_lf_sigma")
    _close(model_time, out["trainloss_lf_t_model"], "trainloss_lf_t_model")
    loss = linear.flow_loss_per_row(
        out["trainloss_target"],
        out["trainloss_z"],
        noise=out["trainloss_noise"],
        timesteps=out["trainloss_lf_t_index"],
    )
    _close(loss, out["trainloss_lf_loss"], "trainloss_lf_loss")
    x_t, dx_t = condot.condot_path(out["trainloss_target"], out["trainloss_noise"], out["trainloss_condot_t"])
    _close(x_t, out["trainloss_condot_xt"], "trainloss_condot_xt")
    _close(dx_t, out["trainloss_condot_dxt"], "trainloss_condot_dxt")
    loss = condot.flow_loss_per_row(
        out["trainloss_target"], out["trainloss_z"], noise=out["trainloss_noise"], timesteps=out["trainloss_condot_t"]
    )
    _close(loss, out["trainloss_condot_loss_per_row"], "trainloss_condot_loss_per_row")


def _check_steps(decoded, out, prefix):
    _close(decoded.orders, out[f"{prefix}_orders"], f"{prefix}_orders")
    assert len(decoded.steps) == out[f"{prefix}_mask_after_step"].shape[0]
    for index, step in enumerate(decoded.steps):
        _close(step.mask, out[f"{prefix}_mask_after_step"][index], f"{prefix}_mask_after_step[{index}]")
        _close(step.predicted, out[f"{prefix}_mask_to_pred"][index], f"{prefix}_mask_to_pred[{index}]")
        _close(
            step.decoder_hidden_states, out[f"{prefix}_step{index}_decoder_out"], f"{prefix}_step{index}_decoder_out"
        )
        _close(step.flow_condition, out[f"{prefix}_step{index}_flow_z"], f"{prefix}_step{index}_flow_z")
        _close(step.flow_noise, out[f"{prefix}_step{index}_flow_noise"], f"{prefix}_step{index}_flow_noise")
        _close(step.flow_samples, out[f"{prefix}_step{index}_flow_out"], f"{prefix}_step{index}_flow_out")


def _reference_call(fixture, model, seed_generator=True, **kwargs):
    """FIXTURE.md steps 9-10: seeded tokenization, then the masked-AR loop with the reference's orders."""
    out, seeds, args = fixture["outputs"], fixture["seeds"], fixture["args"]
    generator = torch.Generator().manual_seed(seeds["SEED_ENC"]) if seed_generator else None
    encoded = model.encode(
        out["input_latents"], generator=generator, gumbel_noise=None if seed_generator else out["enc_gumbel_noise"]
    )
    kwargs.setdefault("guidance_scale", args["cfg"])
    return model.decode(
        image_tokens=encoded.image_tokens,
        num_ar_steps=args["num_iter"],
        guidance_schedule=args["cfg_schedule"],
        generator=generator,
        orders=out["recon_lf_orders" if model.config.flow_method == "linear_flow" else "recon_condot_orders"],
        return_intermediates=True,
        **kwargs,
    )


@torch.no_grad()
def test_reconstruction_linear_flow(fixture, models):
    out, model = fixture["outputs"], models["linear_flow"]
    decoded = _reference_call(fixture, model)
    _check_steps(decoded, out, "recon_lf")
    _close(decoded.sample, out["recon_lf_tokens"], "recon_lf_tokens")

    # outer guidance 1: what the config default (None) resolves to for linear_flow
    cfg1 = _reference_call(fixture, model, guidance_scale=None)
    _close(cfg1.sample, out["recon_lf_cfg1_tokens"], "recon_lf_cfg1_tokens")
    difference = (decoded.sample - cfg1.sample).abs().max().reshape(out["recon_lf_vs_cfg1_maxabs"].shape)
    _close(difference, out["recon_lf_vs_cfg1_maxabs"], "recon_lf_vs_cfg1_maxabs")


@torch.no_grad()
def test_reconstruction_condot(fixture, models):
    out, model = fixture["outputs"], models["CondOT"]
    decoded = _reference_call(fixture, model)
    _check_steps(decoded, out, "recon_condot")
    _close(decoded.sample, out["recon_condot_tokens"], "recon_condot_tokens")


@torch.no_grad()
@pytest.mark.parametrize("method,prefix", [("linear_flow", "recon_lf"), ("CondOT", "recon_condot")])
def test_reconstruction_from_given_noise(fixture, models, method, prefix):
    """No RNG equivalence needed: the reference's noise placed on the token grid reproduces the tokens."""
    out, model = fixture["outputs"], models[method]
    config = model.config
    noise = torch.zeros(out["input_latents"].shape[0], config.num_tokens, config.token_dim)
    for index in range(out[f"{prefix}_mask_to_pred"].shape[0]):
        noise[out[f"{prefix}_mask_to_pred"][index].bool()] = out[f"{prefix}_step{index}_flow_noise"]
    decoded = _reference_call(fixture, model, seed_generator=False, noise=noise)
    _close(decoded.sample, out[f"{prefix}_tokens"], f"{prefix}_tokens (given noise)")


def test_checkpoint_contents(fixture, models):
    """model / model_ema choice, the flow method from the saved args, the codebook size from the weights."""
    root, heads = fixture["root"], fixture["heads"]
    checkpoint = load_v2flow_checkpoint(root / "checkpoint-last.pth")
    model = models[vars(checkpoint["args"])["flow_method"]]
    assert model.config.codebook_size == checkpoint["model"]["quantizer._codebook.embed"].shape[1]
    vocabulary_shape = (model.config.llm_vocab_size, model.config.llm_embed_dim)
    assert vocabulary_shape == tuple(checkpoint["model"]["llm_embed_tokens"].shape)
    ema, dropped = convert_v2flow_checkpoint(root / "checkpoint-last.pth", weights="ema", num_attention_heads=heads)
    assert set(dropped) == {"class_emb.weight", "quantizer._codebook.initted"}
    assert torch.equal(ema.unconditional_embedding, checkpoint["model_ema"]["fake_latent"])
    assert not torch.equal(ema.unconditional_embedding, model.unconditional_embedding)
    assert torch.equal(ema.quantizer.codebook, checkpoint["model_ema"]["quantizer._codebook.embed"][0])


def test_llm_vocabulary_files(fixture, models, tmp_path):
    """The original's tiny_llm.pth and our cache of tiny_llm/ both give the checkpoint's llm_embed_tokens."""
    from hf_vtok.cli import main

    root, model = fixture["root"], models["linear_flow"]
    from_pth = load_llm_vocabulary(root / "tiny_llm.pth")
    main(
        ["cache-llm-vocabulary", "--llm", str(root / "tiny_llm"), "--output", str(tmp_path / "vocabulary.safetensors")]
    )
    cached = load_llm_vocabulary(tmp_path / "vocabulary.safetensors")
    assert torch.equal(cached, extract_llm_vocabulary(root / "tiny_llm"))
    for vocabulary in (from_pth, cached):
        assert torch.equal(vocabulary.float(), model.llm_embed_tokens)
    convert_v2flow_checkpoint(
        root / "checkpoint-last.pth",
        num_attention_heads=fixture["heads"],
        llm_vocabulary=tmp_path / "vocabulary.safetensors",
    )
    torch.save(from_pth[:, :-1].clone(), tmp_path / "narrow.pth")
    with pytest.raises(ValueError, match="shape"):
        convert_v2flow_checkpoint(
            root / "checkpoint-last.pth", num_attention_heads=fixture["heads"], llm_vocabulary=tmp_path / "narrow.pth"
        )


@torch.no_grad()
def test_converted_folder_round_trip(fixture, models, tmp_path):
    """``hf-vtok convert v2flow`` writes a folder AutoModel loads with the same outputs."""
    from transformers import AutoImageProcessor, AutoModel

    from hf_vtok import V2FlowImageProcessor
    from hf_vtok.cli import main

    root, out = fixture["root"], fixture["outputs"]
    main(
        [
            "convert",
            "v2flow",
            "--checkpoint",
            str(root / "checkpoint-last.pth"),
            "--num-attention-heads",
            str(fixture["heads"]),
            "--output",
            str(tmp_path),
        ]
    )
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, V2FlowModel)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), V2FlowImageProcessor)
    decoded = _reference_call(fixture, loaded)
    _close(
        decoded.sample,
        out[f"recon_{'lf' if loaded.config.flow_method == 'linear_flow' else 'condot'}_tokens"],
        "recon tokens (converted folder)",
    )
