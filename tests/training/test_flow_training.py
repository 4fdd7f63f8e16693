"""Training the flow-decoder tokenizers (train_flowmo.py stage 1 / stage 2, train_v2flow.py) on tiny models and data:
the loss on a fixed batch goes down, stage 2's gradient reaches the decoder through every sampler step, the V²Flow
EMA codebook update follows the original's formula, and a killed run resumes to the uninterrupted result."""

import json
import signal
import sys

import pytest
import torch

from hf_vtok import FlowMoConfig, FlowMoModel, V2FlowConfig, V2FlowModel
from hf_vtok.data import cache_latents
from hf_vtok.modules import AdaLNModulation
from hf_vtok.quantizers import CosineEMAVectorQuantizer
from hf_vtok.training import list_checkpoints
from tests.testing_utils.training import SCRIPTS, metrics, run_script, write_photos
from tests.training.test_training_scripts import _run_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TINY_FLOWMO = dict(
    image_size=16, patch_size=4, code_length=4, context_dim=6, bits_per_token=3, mup_width=2, enc_mup_width=2,
    encoder_depth=1, decoder_depth=2, base_hidden_size=64, num_attention_heads=2, base_axes_dim=(8, 12, 12),
    num_inference_steps=2,
)  # fmt: skip
TINY_RESNET = dict(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8, num_labels=10)
TINY_V2FLOW = dict(
    vae_downsample_factor=2, connector_hidden_size=8, connector_depth=1, llm_vocab_size=20, llm_embed_dim=12,
    codebook_size=16, hidden_size=16, encoder_num_layers=1, decoder_num_layers=1, num_attention_heads=2,
    flow_head_width=16, flow_head_depth=1, flow_num_inference_steps=3, num_ar_steps=3,
)  # fmt: skip
COMMON = ["--log-every", 1, "--lpips", "random", "--resnet-config", json.dumps(TINY_RESNET)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two images of exactly the model size: every batch is the same fixed pair (the crop is the whole image)."""
    return write_photos(tmp_path_factory.mktemp("photos"), count=2, size=(16, 16))


def tiny_flowmo(seed: int = 0) -> FlowMoModel:
    torch.manual_seed(seed)
    model = FlowMoModel(FlowMoConfig(**TINY_FLOWMO))
    with torch.no_grad():  # the gates start at zero; random ones make every block (and sampler step) matter
        for module in model.modules():
            if isinstance(module, AdaLNModulation):
                module.linear.weight.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def flowmo_init(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flowmo_init")
    tiny_flowmo().save_pretrained(folder)
    return folder


def _pixels(photos) -> torch.Tensor:
    from hf_vtok import FlowMoImageProcessor

    images = [__import__("PIL.Image").Image.open(path) for path in sorted(photos.glob("*.png"))]
    return FlowMoImageProcessor(image_size=16)(images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def _fixed_flowmo_loss(folder, pixels, posttrain_steps: int = 0, perceptual=None) -> torch.Tensor:
    """The training objective at fixed flow times, noise and sampler grids (no condition dropout)."""
    model = FlowMoModel.from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(0)
    total = 0.0
    for time in (0.2, 0.5, 0.8):
        output = model(
            pixels,
            return_loss=True,
            timesteps=torch.full((len(pixels),), time),
            condition_dropout=False,
            generator=generator,
            posttrain_steps=posttrain_steps or None,
        )
        total = total + output.loss
        if perceptual is not None:
            total = total + perceptual(pixels, output.posttrain_sample).mean()
    return total / 3


# ------------------------------------------------------------------------------------------------------
def test_flowmo_stage1_lowers_the_loss_and_keeps_block_norms(photos, flowmo_init, tmp_path):
    output = run_script("train_flowmo", [
        "--pretrained", flowmo_init, "--train-data", photos, "--output-dir", tmp_path, "--max-steps", 8,
        "--batch-size", 2, "--grad-accumulation", 2, "--lr", 3e-3, "--checkpoint-every", 0, "--ema-decay", 0.5,
        "--ema-update-every", 2, "--freeze-encoder-after", 5, *COMMON
    ])  # fmt: skip
    rows = metrics(output)
    assert len(rows) == 8 and {"diffusion_loss", "entropy_loss", "commitment_loss", "perceptual_loss"} <= set(rows[0])
    pixels = _pixels(photos)
    before, after = _fixed_flowmo_loss(flowmo_init, pixels), _fixed_flowmo_loss(output / "model", pixels)
    assert after < 0.9 * before, (float(before), float(after))
    initial, trained = FlowMoModel.from_pretrained(flowmo_init), FlowMoModel.from_pretrained(output / "model")
    trained_modules = dict(trained.named_modules())
    for name, module in initial.named_modules():  # fix_initial_norms: every block Linear keeps its Frobenius norm
        if ".blocks." in name and isinstance(module, torch.nn.Linear):
            assert torch.allclose(trained_modules[name].weight.norm(), module.weight.norm(), rtol=1e-5), name
    # the encoder trained until the freeze; the EMA (updated after steps 1, 3, 5, 7) lags the online weights
    ema = FlowMoModel.from_pretrained(output / "model_ema")
    assert not torch.equal(trained.encoder.image_embed.weight, initial.encoder.image_embed.weight)
    assert not torch.equal(ema.decoder.code_embed.weight, trained.decoder.code_embed.weight)
    assert not torch.equal(ema.decoder.code_embed.weight, initial.decoder.code_embed.weight)


def test_flowmo_stage2_lowers_the_loss_with_early_stopping(photos, flowmo_init, tmp_path):
    from hf_vtok.losses import ResNetLogitPerceptualLoss

    output = run_script("train_flowmo", [
        "--stage", "posttrain", "--pretrained", flowmo_init, "--train-data", photos, "--output-dir", tmp_path,
        "--max-steps", 6, "--batch-size", 2, "--grad-accumulation", 1, "--posttrain-steps", 2, "--lr", 2e-3,
        "--lpips-weight", 1.0, "--checkpoint-every", 0, "--ema-decay", 0, "--eval-data", photos, "--eval-every", 2,
        "--eval-images", 2, "--early-stopping-patience", 5, *COMMON
    ])  # fmt: skip
    rows = metrics(output)
    assert len(rows) == 6 and "eval_psnr" in rows[1] and "perceptual_loss" in rows[0]
    with torch.random.fork_rng(devices=[]):  # the script's "random" ResNet: seed 0
        torch.manual_seed(0)
        from transformers import ResNetConfig

        perceptual = ResNetLogitPerceptualLoss(ResNetConfig(**TINY_RESNET))
    pixels = _pixels(photos)
    before = _fixed_flowmo_loss(flowmo_init, pixels, posttrain_steps=2, perceptual=perceptual)
    after = _fixed_flowmo_loss(output / "model", pixels, posttrain_steps=2, perceptual=perceptual)
    assert after < 0.9 * before, (float(before), float(after))
    trained, initial = FlowMoModel.from_pretrained(output / "model"), FlowMoModel.from_pretrained(flowmo_init)
    assert torch.equal(trained.encoder.image_embed.weight, initial.encoder.image_embed.weight)  # frozen in stage 2
    report = json.loads((output / "early_stopping.json").read_text())
    assert [entry["step"] for entry in report["evaluations"]] == [2, 4, 6]
    assert FlowMoModel.from_pretrained(output / "model_best").config.code_length == 4


@pytest.mark.parametrize("checkpointed", [False, True])
def test_stage2_gradient_reaches_the_decoder_through_every_sampler_step(checkpointed):
    """Each of the K decoder evaluations of the sampling chain receives a gradient from the sample-level loss,
    and step-wise recomputation gives the gradient of the plain chain."""
    model = tiny_flowmo().train()
    model.encoder.requires_grad_(False)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    steps = 3
    grid = model.sample_posttrain_timesteps(2, steps, torch.Generator().manual_seed(1))
    gradients_by_time = {}

    def record(module, args, kwargs):
        embedded = args[0]
        if embedded.requires_grad:
            time = round(float(module_times[-1][0]), 6)
            embedded.register_hook(lambda grad: gradients_by_time.setdefault(time, []).append(float(grad.abs().sum())))

    module_times = []  # the flow times of each decoder call, recorded as the decoder embeds them
    embed_time = model.decoder.embed_time

    def recording_embed_time(timesteps):
        module_times.append(timesteps.detach())
        return embed_time(timesteps)

    model.decoder.embed_time = recording_embed_time
    handle = model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    output = model(
        pixels,
        return_loss=True,
        posttrain_timesteps=grid,
        posttrain_noise=noise,
        checkpoint_posttrain_steps=checkpointed,
        condition_dropout=False,
    )
    loss = (output.posttrain_sample - pixels).pow(2).mean()  # the sample-level term only
    decoder_weights = [p for p in model.decoder.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(loss, decoder_weights, allow_unused=True)
    handle.remove()
    step_times = {round(float(time), 6) for time in grid[0, :steps]}
    reached = {time for time, norms in gradients_by_time.items() if any(norm > 0 for norm in norms)}
    assert step_times <= reached, (step_times, gradients_by_time)
    assert sum(float(g.abs().sum()) for g in gradients if g is not None) > 0
    if checkpointed:  # the same gradient as without recomputation
        reference = tiny_flowmo().train()
        reference.encoder.requires_grad_(False)
        output = reference(pixels, return_loss=True, posttrain_timesteps=grid, posttrain_noise=noise,
                           condition_dropout=False)  # fmt: skip
        loss = (output.posttrain_sample - pixels).pow(2).mean()
        expected = torch.autograd.grad(loss, [p for p in reference.decoder.parameters() if p.requires_grad],
                                       allow_unused=True)  # fmt: skip
        for got, want in zip(gradients, expected):
            assert (got is None) == (want is None)
            if got is not None:
                assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------
def test_ema_codebook_update_follows_the_original_formula():
    """lucidrains' CosineSimCodebook (V²Flow's vendored quantizer.py), computed by hand: cluster sizes and
    embedding sums are lerped with decay 0.5, the codes are the l2-normalised Laplace-smoothed averages."""
    quantizer = CosineEMAVectorQuantizer(2, 3, decay=0.5, eps=0.1, commitment_weight=1.0).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        quantizer.ema_embed_sum.copy_(quantizer.codebook)
        quantizer.ema_cluster_size.fill_(1.0)
    inputs = torch.tensor([[2.0, 0.0], [3.0, 4.0], [-4.0, -3.0], [4.0, 3.0]], requires_grad=True)
    result = quantizer(inputs)
    # unit inputs (1, 0), (.6, .8), (-.8, -.6), (.8, .6) go to codes 0, 1, 2, 0
    assert result.indices.tolist() == [0, 1, 2, 0]
    # counts [2, 1, 1]: sizes 0.5 * 1 + 0.5 * counts
    assert torch.allclose(quantizer.ema_cluster_size, torch.tensor([1.5, 1.0, 1.0]))
    # sums of the unit inputs per code: (1.8, .6), (.6, .8), (-.8, -.6), lerped with the old sums (the codes)
    sums = torch.tensor([[1.4, 0.3], [0.3, 0.9], [-0.9, -0.3]])
    assert torch.allclose(quantizer.ema_embed_sum, sums)
    smoothed = torch.tensor([1.6, 1.1, 1.1]) / (3.5 + 3 * 0.1) * 3.5  # (n + eps) / (N + K eps) * N
    averaged = sums / smoothed[:, None]
    assert torch.allclose(quantizer.codebook, averaged / averaged.norm(dim=1, keepdim=True))
    # commitment: MSE between the unit inputs and the codes they were assigned before the update
    assert torch.allclose(result.loss, torch.tensor((0.0 + 0.4 + 0.4 + 0.4) / 8))


def test_v2flow_training_step_updates_the_codebook_once():
    torch.manual_seed(0)
    model = V2FlowModel(V2FlowConfig(**TINY_V2FLOW, latent_channels=4, sample_size=4)).train()
    latents = torch.randn(2, 4, 4, 4)
    before = model.quantizer.ema_cluster_size.clone()
    output = model(latents, return_loss=True)
    assert set(output.losses) == {"flow", "commitment"} and output.loss.requires_grad
    # one EMA step with the 2 x 16 tokens of the batch: sizes 0.8 * old + 0.2 * counts
    assert not torch.equal(model.quantizer.ema_cluster_size, before)
    assert torch.allclose(model.quantizer.ema_cluster_size.sum(), before.sum() * 0.8 + 0.2 * 2 * 16)


@pytest.fixture(scope="module")
def dcae_cache(tmp_path_factory):
    from diffusers import AutoencoderDC
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("v2flow")
    torch.manual_seed(0)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=4, encoder_block_types="ResBlock",
        decoder_block_types="ResBlock", encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), encoder_qkv_multiscales=((), ()),
        decoder_qkv_multiscales=((), ()), decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.5,
    ).eval()  # fmt: skip
    photos = write_photos(folder / "photos", count=4, size=(12, 10))
    cache = cache_latents(vae, photos, folder / "cache", resolution=8, progress=False)
    save_file({"embed_tokens": torch.randn(20, 12)}, folder / "vocabulary.safetensors")
    return cache, folder / "vocabulary.safetensors"


def _v2flow_arguments(cache, vocabulary, output, steps, method="linear_flow"):
    return ["--latents", cache, "--model-config", json.dumps(TINY_V2FLOW), "--llm-vocabulary", vocabulary,
            "--flow-method", method, "--output-dir", output, "--max-steps", steps, "--batch-size", 4, "--log-every", 1,
            "--lr", 3e-3, "--warmup-steps", 2, "--checkpoint-every", 3, "--ema-decay", 0.9]  # fmt: skip


@pytest.mark.parametrize("method", ["linear_flow", "CondOT"])
def test_train_v2flow_lowers_the_loss(dcae_cache, method, tmp_path):
    cache, vocabulary = dcae_cache
    output = run_script("train_v2flow", _v2flow_arguments(cache, vocabulary, tmp_path, 16, method))
    rows = metrics(output)
    assert {"flow", "commitment", "grad_norm"} <= set(rows[0]) and rows[0]["lr"] < rows[2]["lr"]
    assert sum(row["loss"] for row in rows[-4:]) < 0.85 * sum(row["loss"] for row in rows[:4])
    model = V2FlowModel.from_pretrained(output / "model_ema")
    assert model.config.flow_method == method and model.config.scaling_factor == 0.5
    assert model.config.sample_size == 4 and model.config.latent_channels == 4
    trained = V2FlowModel.from_pretrained(output / "model")
    assert torch.equal(model.quantizer.codebook, trained.quantizer.codebook)  # buffers: live values in the EMA copy


def test_v2flow_resume_equals_uninterrupted(dcae_cache, tmp_path):
    cache, vocabulary = dcae_cache
    straight = run_script("train_v2flow", _v2flow_arguments(cache, vocabulary, tmp_path / "straight", 8))
    first = _v2flow_arguments(cache, vocabulary, tmp_path / "split", 8)
    first[first.index("--max-steps") + 1] = 5  # stops (and checkpoints) at step 5 ...
    run_script("train_v2flow", first)
    resumed = run_script("train_v2flow", [*_v2flow_arguments(cache, vocabulary, tmp_path / "split", 8), "--resume"])
    for name in ("model", "model_ema"):
        reference, other = V2FlowModel.from_pretrained(straight / name), V2FlowModel.from_pretrained(resumed / name)
        for (key, a), b in zip(reference.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), (name, key)
    assert [row["loss"] for row in metrics(resumed)] == [row["loss"] for row in metrics(straight)]


def test_flowmo_kill_and_resume_equals_uninterrupted(photos, flowmo_init, tmp_path):
    """SIGKILL mid-run (after the encoder freeze, with gradient accumulation, the norm fix and a sparse EMA)."""
    steps = 40
    arguments = ["--pretrained", flowmo_init, "--train-data", photos, "--max-steps", steps, "--batch-size", 2,
                 "--lr", 1e-3, "--checkpoint-every", 3, "--ema-decay", 0.9, "--ema-update-every", 2,
                 "--freeze-encoder-after", 4, "--posttrain-steps", 1, *COMMON]  # fmt: skip
    straight = run_script("train_flowmo", [*arguments, "--output-dir", tmp_path / "straight"])
    killed_dir = tmp_path / "killed"
    command = [sys.executable, str(SCRIPTS / "train_flowmo.py"), *map(str, arguments), "--output-dir", str(killed_dir)]
    killed = _run_until(command, 7, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL, killed.stdout
    assert list_checkpoints(killed_dir), "no checkpoint before the kill"
    resumed = run_script("train_flowmo", [*arguments, "--output-dir", killed_dir, "--resume"])
    for name in ("model", "model_ema"):
        reference, other = FlowMoModel.from_pretrained(straight / name), FlowMoModel.from_pretrained(resumed / name)
        for (key, a), b in zip(reference.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), (name, key)
    assert [row["loss"] for row in metrics(resumed)] == [row["loss"] for row in metrics(straight)]


# ------------------------------------------------------------------------------------------------------
def test_sparse_ema_matches_flowmo_simple_ema():
    """update_every=n: averaged after steps 1, n + 1, ... with decay ** n (FlowMo's SimpleEMA, 0-based
    step % n == 0)."""
    from hf_vtok.training import ModelEMA

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = ModelEMA(layer, decay=0.5, update_every=2)
    expected = 0.0
    for step in range(1, 6):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        ema.update(layer, step)
        if (step - 1) % 2 == 0:
            expected = expected * 0.25 + step * 0.75
        assert ema.shadow[0].item() == pytest.approx(expected), step


def test_early_stopping_tracks_the_best_and_stops_after_patience(tmp_path):
    from types import SimpleNamespace

    from hf_vtok.training import EarlyStopping

    requests = []
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(is_main_process=True), output_dir=tmp_path, request_stop=requests.append
    )
    values, best = iter([1.0, 3.0, 2.5, 3.0, 2.0]), []
    stopper = EarlyStopping(trainer, lambda step: next(values), "psnr", True, every=2, patience=3,
                            on_best=lambda step, value: best.append((step, value)))  # fmt: skip
    logged = [stopper.maybe_evaluate(step) for step in range(1, 11)]
    assert logged[0] == {} and logged[1] == {"eval_psnr": 1.0, "best_psnr": 1.0}
    assert best == [(2, 1.0), (4, 3.0)] and len(requests) == 1 and "best 3 at step 4" in requests[0]
    resumed = EarlyStopping(trainer, lambda step: 0.0, "psnr", True, every=2, patience=3)
    resumed.load_state_dict(stopper.state_dict())  # a run that had stopped stays stopped
    assert len(requests) == 2 and json.loads((tmp_path / "early_stopping.json").read_text())["best_step"] == 4


def test_resnet_logit_loss_reads_torchvision_keys():
    from transformers import ResNetConfig

    from hf_vtok.losses import ResNetLogitPerceptualLoss
    from hf_vtok.losses.resnet_perceptual import convert_torchvision_resnet

    torch.manual_seed(0)
    # torchvision's layout: bottlenecks with 4x expansion, so every stage's first block has a projection shortcut
    config = ResNetConfig(
        depths=[1, 1], hidden_sizes=[16, 32], embedding_size=4, num_labels=10, layer_type="bottleneck"
    )
    loss = ResNetLogitPerceptualLoss(config)
    batch_norm = ("weight", "bias", "running_mean", "running_var")
    torchvision_keys = ["conv1.weight", *(f"bn1.{leaf}" for leaf in batch_norm), "fc.weight", "fc.bias"]
    for layer in (1, 2):  # one bottleneck per stage, each with a projection shortcut
        prefix = f"layer{layer}.0."
        torchvision_keys += [f"{prefix}conv{index}.weight" for index in (1, 2, 3)]
        torchvision_keys += [f"{prefix}bn{index}.{leaf}" for index in (1, 2, 3) for leaf in batch_norm]
        torchvision_keys += [f"{prefix}downsample.0.weight", *(f"{prefix}downsample.1.{leaf}" for leaf in batch_norm)]
    converted = convert_torchvision_resnet({key: torch.zeros(1) for key in torchvision_keys})
    expected = {key for key in loss.classifier.state_dict() if not key.endswith("num_batches_tracked")}
    assert set(converted) == expected
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    assert float(loss(images, images.detach()).detach()) == 0.0
    value = loss(images, torch.rand(2, 3, 16, 16))
    value.backward()
    assert value > 0 and images.grad.abs().sum() > 0 and loss.classifier.training is False
    with pytest.raises(ValueError, match="same shape"):
        loss(images, torch.rand(2, 3, 8, 8))
