"""Schedulers and pipelines with tiny random components: sampler maths, save / load (folders and Hub ids),
reproducibility, and the errors raised before any compute."""

import json

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hub_constants

from hf_vtok import (
    DiT1DPipeline,
    DiTTransformer1DModel,
    GaussianDiffusionScheduler,
    SiTFlowScheduler,
    SiTPipeline,
    SiTTransformer1DModel,
    SoftVQConfig,
    SoftVQModel,
    ViTokConfig,
    ViTokDiTPipeline,
    ViTokDiTTransformerModel,
    ViTokModel,
)
from hf_vtok.cli import main as cli_main
from hf_vtok.schedulers.scheduling_gaussian_diffusion import space_timesteps
from hf_vtok.schedulers.scheduling_sit_flow import score_from_velocity
from tests.models.dit_1d.test_modeling_dit_1d import _original_1d_checkpoint, _randomize


def _tokenizer(**changes):
    config = dict(
        image_size=16, encoder_patch_size=8, decoder_patch_size=8, num_latent_tokens=4, latent_channels=4,
        encoder_hidden_size=16, encoder_num_layers=1, encoder_num_heads=2, decoder_hidden_size=16,
        decoder_num_layers=1, decoder_num_heads=2, codebook_size=8, num_codebooks=2, scaling_factor=2.0, shift_factor=0.1,
    )  # fmt: skip
    return SoftVQModel(SoftVQConfig(**(config | changes))).eval()


TINY = dict(in_channels=4, num_tokens=4, hidden_size=16, num_layers=1, num_attention_heads=2, num_classes=5)


def _sit_pipeline(**scheduler):
    pipe = SiTPipeline(_tokenizer(), _randomize(SiTTransformer1DModel(**TINY)), SiTFlowScheduler(**scheduler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _dit_pipeline(**scheduler):
    pipe = DiT1DPipeline(
        _tokenizer(), _randomize(DiTTransformer1DModel(**TINY)), GaussianDiffusionScheduler(**scheduler)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _vitok_pipeline():
    autoencoder = ViTokModel(ViTokConfig(
        encoder_hidden_size=16, encoder_num_layers=1, encoder_num_heads=2, decoder_hidden_size=16,
        decoder_num_layers=1, decoder_num_heads=2, patch_size=4, latent_channels=4,
    )).eval()  # fmt: skip
    transformer = _randomize(
        ViTokDiTTransformerModel(
            in_channels=4, hidden_size=16, num_layers=1, num_attention_heads=2, num_classes=5, num_tokens=4
        )
    )
    pipe = ViTokDiTPipeline.from_components(transformer, autoencoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


PIPELINES = {"sit": _sit_pipeline, "dit": _dit_pipeline, "vitok_dit": _vitok_pipeline}


# --------------------------------------------------------------------------------------------------
# schedulers
def test_adm_respacing():
    kept = space_timesteps(1000, 250)
    assert len(kept) == 250 and kept[:4] == [0, 4, 8, 12] and kept[-1] == 999
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))
    assert len(space_timesteps(300, "10,15,20")) == 45
    for bad in ("x", "2000", "ddim999"):
        with pytest.raises(ValueError):
            space_timesteps(1000, bad)
    full = GaussianDiffusionScheduler(beta_schedule="cosine")
    np.testing.assert_allclose(full.betas, full.train_betas, rtol=1e-12)  # no respacing = the training chain


def test_gaussian_diffusion_scheduler_checks_and_determinism():
    with pytest.raises(ValueError, match="unknown beta_schedule"):
        GaussianDiffusionScheduler(beta_schedule="quadratic")
    scheduler = GaussianDiffusionScheduler(beta_schedule="linear")
    scheduler.set_timesteps(5)
    sample = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="2 x 4 channels"):
        scheduler.step(torch.randn(2, 3, 4), scheduler.timesteps[0], sample)
    with pytest.raises(ValueError, match="not one of the kept timesteps"):
        scheduler.step(torch.randn(2, 3, 8), 501, sample)
    output = torch.randn(2, 3, 8)
    last = scheduler.timesteps[-1]  # the step into x_0 adds no noise
    first_run = scheduler.step(output, last, sample, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(
        first_run, scheduler.step(output, last, sample, generator=torch.Generator().manual_seed(2)).prev_sample
    )
    noisy = [
        scheduler.step(
            output, scheduler.timesteps[0], sample, generator=torch.Generator().manual_seed(seed)
        ).prev_sample
        for seed in (1, 2)
    ]
    assert not torch.equal(*noisy)
    ddim = GaussianDiffusionScheduler(beta_schedule="linear", sampler="ddim")
    ddim.set_timesteps(5)
    step = ddim.step(output, ddim.timesteps[0], sample)
    assert torch.equal(step.prev_sample, ddim.step(output, ddim.timesteps[0], sample).prev_sample)
    noised = scheduler.add_noise(sample, torch.zeros_like(sample), torch.tensor([0, 999]))
    assert (
        torch.allclose(noised[0], sample[0] * np.sqrt(1 - 1e-4))
        and noised[1].abs().max() < 0.1 * sample[1].abs().max()
    )


def test_sit_scheduler_plans():
    ode = SiTFlowScheduler(sampler="ode")
    ode.set_timesteps(4)
    assert torch.equal(ode.timesteps, torch.linspace(1, 0, 5, dtype=torch.float64)[:-1])
    heun = SiTFlowScheduler(sampler="ode", heun=True)
    heun.set_timesteps(4)  # two evaluations per step, but the last step is plain Euler
    assert heun.timesteps.tolist() == [1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25]
    assert heun.interval_start_times.tolist() == [1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25]
    sde = SiTFlowScheduler(sampler="sde")
    sde.set_timesteps(3)
    assert torch.allclose(sde.timesteps, torch.tensor([1.0, 0.52, 0.04], dtype=torch.float64))
    sample = torch.zeros(1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="noise has shape"):
        sde.step(torch.zeros_like(sample), sde.timesteps[0], sample, noise=torch.zeros(2, 2))
    for _ in range(3):
        sample = sde.step(torch.zeros_like(sample), 0, sample, generator=torch.Generator().manual_seed(0)).prev_sample
    with pytest.raises(ValueError, match="run all its steps"):
        sde.step(torch.zeros_like(sample), 0, sample)
    with pytest.raises(ValueError, match="unknown path_type"):
        SiTFlowScheduler(path_type="edm")


def test_ode_integrates_a_straight_flow_exactly():
    """v = noise - x0 is constant along the linear path: Euler lands on x0 (Heun too)."""
    data, noise = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    for heun in (False, True):
        scheduler = SiTFlowScheduler(sampler="ode", heun=heun)
        scheduler.set_timesteps(5)
        sample = noise.clone()
        for time in scheduler.timesteps:
            sample = scheduler.step(noise - data, time, sample).prev_sample
        torch.testing.assert_close(sample, data)


@pytest.mark.parametrize("path_type", ["linear", "cosine"])
def test_score_from_velocity_on_gaussian_data(path_type):
    """For x_0 ~ N(0, I) the exact velocity E[dx_t/dt | x_t] must give the exact score -x / Var(x_t)."""
    x = torch.randn(3, 5, dtype=torch.float64)
    for time in (0.9, 0.5, 0.1):
        t = torch.tensor(time, dtype=torch.float64)
        if path_type == "linear":
            alpha, d_alpha, sigma, d_sigma = 1 - t, -1.0, t, 1.0
        else:
            alpha, d_alpha, sigma, d_sigma = (
                torch.cos(t * np.pi / 2),
                -np.pi / 2 * torch.sin(t * np.pi / 2),
                torch.sin(t * np.pi / 2),
                np.pi / 2 * torch.cos(t * np.pi / 2),
            )
        variance = alpha**2 + sigma**2
        velocity = (alpha * d_alpha + sigma * d_sigma) / variance * x
        score = score_from_velocity(velocity, x, t.expand(3), path_type)
        torch.testing.assert_close(score, -x / variance)


def test_unipc_is_given_the_original_sigma_grid():
    """ViTok's FlowUniPC: sigmas linspace(sigma_max, 0, n + 1)[:-1] of the (shifted) training sigmas, timesteps int(1000 sigma)."""
    pipe = _vitok_pipeline()
    for steps in (4, 50):
        pipe._set_timesteps(steps, "cpu")
        sigma_max = float(np.float32(1 - 1 / 1000))
        expected = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
        np.testing.assert_allclose(pipe.scheduler.sigmas[:-1].numpy(), expected.astype(np.float32))
        assert pipe.scheduler.sigmas[-1] == 0
        assert pipe.scheduler.timesteps.tolist() == (expected * 1000).astype(np.int64).tolist()


# --------------------------------------------------------------------------------------------------
# pipelines
@pytest.mark.parametrize("name", sorted(PIPELINES))
@torch.no_grad()
def test_generation_is_reproducible_and_survives_save_load(name, tmp_path):
    pipe = PIPELINES[name]()
    kwargs = dict(num_inference_steps=3, guidance_scale=2.0, output_type="np")
    first = pipe([1, 4], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert first.shape[0] == 2 and first.shape[-1] == 3 and first.min() >= 0 and first.max() <= 1
    assert np.array_equal(first, pipe([1, 4], generator=torch.Generator().manual_seed(0), **kwargs).images)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == type(pipe).__name__ and set(index) >= {"tokenizer", "transformer", "scheduler"}
    reloaded = type(pipe).from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert np.array_equal(reloaded([1, 4], generator=torch.Generator().manual_seed(0), **kwargs).images, first)
    pil = reloaded([2], num_inference_steps=2, output_type="pil").images
    assert pil[0].size == (first.shape[2], first.shape[1])


@torch.no_grad()
def test_given_noise_replaces_the_draw_and_decoding_denormalises():
    pipe = _sit_pipeline(sampler="ode")
    noise = torch.randn(2, 4, 4)
    latents = pipe([1, 2], num_inference_steps=2, latents=noise, output_type="latent").images
    assert torch.equal(
        latents,
        pipe(
            [1, 2],
            num_inference_steps=2,
            latents=noise,
            output_type="latent",
            generator=torch.Generator().manual_seed(5),
        ).images,
    )
    images = pipe([1, 2], num_inference_steps=2, latents=noise, output_type="pt").images
    expected = pipe.tokenizer.decode(latents / 2.0 + 0.1).sample  # scaling_factor 2, shift_factor 0.1
    torch.testing.assert_close(images, ((expected.clamp(-1, 1) + 1) / 2))


@torch.no_grad()
def test_guidance_interval_switches_guidance_off_outside(monkeypatch):
    pipe = _sit_pipeline(sampler="ode")
    batches = []
    forward = pipe.transformer.forward
    monkeypatch.setattr(
        pipe.transformer,
        "forward",
        lambda hidden_states, **kw: batches.append(hidden_states.shape[0]) or forward(hidden_states, **kw),
    )
    pipe([1], num_inference_steps=4, guidance_scale=3.0, guidance_interval=(0.0, 0.7), output_type="latent")
    assert batches == [1, 1, 2, 2]  # t = 1, 0.75 conditional only; t = 0.5, 0.25 guided


def test_hub_id_loading_from_the_cache(tmp_path, monkeypatch):
    """A Hub repository id resolves through the local cache (HF_HUB_OFFLINE: nothing downloads)."""
    pipe = _dit_pipeline()
    snapshot = tmp_path / "hub" / "models--someone--tiny-dit" / "snapshots" / ("0" * 40)
    pipe.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--someone--tiny-dit" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-dit" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    reloaded = DiT1DPipeline.from_pretrained("someone/tiny-dit", cache_dir=str(tmp_path / "hub"))
    assert isinstance(reloaded.transformer, DiTTransformer1DModel) and isinstance(reloaded.tokenizer, SoftVQModel)
    assert isinstance(reloaded.scheduler, GaussianDiffusionScheduler)


def test_errors_before_any_compute(monkeypatch):
    pipe = _sit_pipeline()
    monkeypatch.setattr(pipe.transformer, "forward", lambda *a, **k: pytest.fail("the transformer ran"))
    cases = [
        (dict(class_labels=[1, 5]), r"class_labels \[5\] are out of range"),
        (dict(class_labels=[-1]), "out of range"),
        (dict(class_labels=[1.5]), "integer class ids"),
        (dict(class_labels=[]), "non-empty"),
        (dict(class_labels=[1], guidance_scale=0.5), "guidance_scale must be a finite number >= 1"),
        (dict(class_labels=[1], guidance_scale=float("nan")), "guidance_scale"),
        (dict(class_labels=[1], guidance_interval=(0.8, 0.2)), "guidance_interval"),
        (dict(class_labels=[1], guidance_interval=(0.0, 1.5)), "guidance_interval"),
        (dict(class_labels=[1], num_inference_steps=0), "num_inference_steps"),
        (dict(class_labels=[1], output_type="jpeg"), "output_type"),
        (
            dict(class_labels=[1, 2], latents=torch.randn(2, 5, 4)),
            r"latents \(the initial noise\) must have shape \(2, 4, 4\)",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)
    no_null = SiTPipeline(_tokenizer(), SiTTransformer1DModel(**TINY, class_dropout_prob=0.0), SiTFlowScheduler())
    with pytest.raises(ValueError, match="null class"):
        no_null([1], guidance_scale=2.0)
    dit = _dit_pipeline()
    with pytest.raises(ValueError, match="exceeds the 1000 training timesteps"):
        dit([1], num_inference_steps=1001)
    vitok = _vitok_pipeline()
    with pytest.raises(ValueError, match="multiples of the tokenizer's patch size 4"):
        vitok([1], height=10, width=8)


def test_tokenizer_that_does_not_fit_the_transformer():
    transformer = SiTTransformer1DModel(**TINY)
    with pytest.raises(ValueError, match="8-channel latents but the transformer generates 4"):
        SiTPipeline(_tokenizer(latent_channels=8), transformer, SiTFlowScheduler())
    with pytest.raises(ValueError, match="has 8 latent tokens but the transformer generates 4"):
        SiTPipeline(_tokenizer(num_latent_tokens=8), transformer, SiTFlowScheduler())
    with pytest.raises(ValueError, match="does not fit a transformer with learn_sigma=True"):
        DiT1DPipeline(
            _tokenizer(), DiTTransformer1DModel(**TINY), GaussianDiffusionScheduler(variance_type="fixed_small")
        )


def test_cli_assembles_a_pipeline_folder(tmp_path):
    checkpoint, config, _ = _original_1d_checkpoint(tmp_path, "sit", depth=1, tokens=4)
    _tokenizer().save_pretrained(tmp_path / "tokenizer")
    cli_main([
        "convert", "sit", "--checkpoint", str(checkpoint), "--config", str(config),
        "--tokenizer", str(tmp_path / "tokenizer"), "--output", str(tmp_path / "pipeline"),
    ])  # fmt: skip
    pipe = SiTPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.scheduler.config.sampler == "sde" and pipe.scheduler.config.path_type == "cosine"  # released recipe
    pipe.set_progress_bar_config(disable=True)
    assert pipe([0], num_inference_steps=2, output_type="pt").images.shape == (1, 3, 16, 16)


def test_component_modules_are_recorded_by_their_full_path():
    """diffusers takes a module whose parent package shares a name with one of its own pipeline folders
    (``dit``, ``unclip``, ...) for that folder: every hf_vtok component must be recorded by its full path."""
    from diffusers.pipelines.pipeline_loading_utils import _fetch_class_library_tuple

    for component in (
        SiTTransformer1DModel, DiTTransformer1DModel, ViTokDiTTransformerModel, SiTFlowScheduler,
        GaussianDiffusionScheduler, SoftVQModel, ViTokModel,
    ):  # fmt: skip
        library, name = _fetch_class_library_tuple(component)
        assert (library, name) == (component.__module__, component.__name__)


def test_cli_tokenizer_presets_are_resolved(tmp_path):
    checkpoint, config, _ = _original_1d_checkpoint(tmp_path, "dit", depth=1, tokens=4)
    base = [
        "convert",
        "dit",
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(config),
        "--output",
        str(tmp_path / "out"),
    ]
    with pytest.raises(ValueError, match="unknown tokenizer preset 'softvq-xxl'"):
        cli_main(base + ["--tokenizer-preset", "softvq-xxl"])
    with pytest.raises(ValueError, match="--pipeline takes the tokenizer of a --preset generator"):
        cli_main(base + ["--pipeline"])
    with pytest.raises(RuntimeError, match="could not fetch .*SoftVQVAE/softvq-l-64"):  # offline: no download
        cli_main(base + ["--tokenizer-preset", "softvq-l-64"])


@pytest.mark.parametrize("name", ["sit", "dit"])
@torch.no_grad()
def test_bfloat16_pipeline_from_pretrained(name, tmp_path):
    pipe = PIPELINES[name]()
    kwargs = dict(num_inference_steps=2, guidance_scale=1.5, output_type="pt")
    reference = pipe([1, 3], generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.save_pretrained(tmp_path)
    half = type(pipe).from_pretrained(tmp_path, dtype=torch.bfloat16)
    half.set_progress_bar_config(disable=True)
    assert half.transformer.dtype == torch.bfloat16 and half.tokenizer.dtype == torch.bfloat16
    images = half([1, 3], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert (images - reference).abs().max() < 0.05  # images in [0, 1]
