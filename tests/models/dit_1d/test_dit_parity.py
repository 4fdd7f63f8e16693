"""DiT (1D tokens, learned sigma) and ADM diffusion against the original's golden outputs
(../shared/parity/dit, FIXTURE.md).

Every size, name and number is read from the fixture: the number of steps from
``spaced_timestep_map``, guidance scales / seeds / spaced indices / schedules from the tensor names.
The ``*noclip*`` runs blow up to 1e2..1e5 for this random net (FIXTURE.md): they are compared
relative to their largest magnitude.
"""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from hf_vtok import DiT1DPipeline, GaussianDiffusionScheduler
from hf_vtok.models.dit_1d import convert_dit_checkpoint
from tests.testing_utils.generator_parity import (
    assert_close,
    assert_close_relative,
    fixture_tokenizer,
    stand_in_tokenizer,
)

pytestmark = pytest.mark.parity
SAMPLER_RUN = re.compile(r"^(ddim|psample)_(cosine|linear)_(clip|noclip)_cfg(\d+(?:p\d+)?)(?:_seed(\d+))?$")
MEAN_VARIANCE = re.compile(r"^pmv_idx(\d+)_cfg(\d+(?:p\d+)?)_(mean|log_variance|pred_xstart)$")


def _number(text: str) -> float:
    return float(text.replace("p", "."))


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    root = family_parity_dir("dit")
    return {
        "root": root,
        "original": json.loads((root / "original_config.json").read_text()),
        "outputs": load_file(root / "outputs.safetensors"),
    }


@pytest.fixture(scope="module")
def model(fixture):
    return convert_dit_checkpoint(fixture["root"] / "model.safetensors", fixture["root"] / "config.json")


def _noise_schedule(fixture) -> str:
    """The schedule of the recorded single steps: ``create_diffusion(..., noise_schedule='cosine')``."""
    return re.search(r"noise_schedule='(\w+)'", fixture["original"]["diffusion"]).group(1)


def _num_steps(outputs) -> int:
    return len(outputs["spaced_timestep_map"])


def _pipeline(model, scheduler, tokenizer=None):
    pipe = DiT1DPipeline(tokenizer or stand_in_tokenizer(model.config.in_channels), model, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _assert_run(actual, expected, name):
    check = assert_close_relative if "noclip" in name else assert_close
    return check(actual, expected, name)


def test_converted_config_matches_original(fixture, model):
    init = fixture["original"]["init_kwargs"]
    config = model.config
    assert (config.num_tokens, config.in_channels, config.hidden_size) == (
        init["input_size"],
        init["in_channels"],
        init["hidden_size"],
    )
    assert (config.num_layers, config.learn_sigma) == (init["depth"], init["learn_sigma"])


@torch.no_grad()
def test_forward(fixture, model):
    outputs = fixture["outputs"]
    assert_close(model(outputs["fwd_x"], outputs["fwd_t"], outputs["fwd_y"]).sample, outputs["fwd_out"], "fwd_out")


@torch.no_grad()
def test_forward_with_cfg(fixture, model):
    outputs = fixture["outputs"]
    name = next(key for key in outputs if re.fullmatch(r"fwd_with_cfg(\d+(?:p\d+)?)_out", key))
    scale = _number(re.fullmatch(r"fwd_with_cfg(\d+(?:p\d+)?)_out", name).group(1))
    pipe = _pipeline(model, GaussianDiffusionScheduler())
    guided = pipe.guided_model_output(outputs["fwd_cfg_x"], outputs["fwd_cfg_t"], outputs["fwd_cfg_y"], scale)
    assert_close(guided, outputs[name], name)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_respacing(fixture, schedule):
    outputs = fixture["outputs"]
    scheduler = GaussianDiffusionScheduler(beta_schedule=schedule)
    scheduler.set_timesteps(_num_steps(outputs))
    assert scheduler.kept_timesteps == outputs["spaced_timestep_map"].tolist()
    assert_close(
        torch.from_numpy(scheduler.betas), outputs[f"spaced_betas_{schedule}"], f"spaced_betas_{schedule}", atol=1e-12
    )


@torch.no_grad()
def test_reverse_step_mean_variance(fixture, model):
    """One guided p_mean_variance at a spaced index on [z, z] / [y, null] (clip_denoised False)."""
    outputs = fixture["outputs"]
    names = [name for name in outputs if MEAN_VARIANCE.match(name)]
    assert {MEAN_VARIANCE.match(name).group(3) for name in names} == {"mean", "log_variance", "pred_xstart"}
    for name in names:
        index, scale, quantity = MEAN_VARIANCE.match(name).groups()
        scheduler = GaussianDiffusionScheduler(beta_schedule=_noise_schedule(fixture))
        scheduler.set_timesteps(_num_steps(outputs))
        timestep = scheduler.kept_timesteps[int(index)]
        latents, labels = outputs["sample_noise"], outputs["sample_y"]
        doubled = torch.cat([latents, latents])
        doubled_labels = torch.cat([labels, torch.full_like(labels, model.null_class_label)])
        pipe = _pipeline(model, scheduler)
        timesteps = torch.full((doubled.shape[0],), timestep)
        result = scheduler.model_mean_variance(
            pipe.guided_model_output(doubled, timesteps, doubled_labels, _number(scale)), timestep, doubled
        )
        key = {"pred_xstart": "pred_original_sample"}.get(quantity, quantity)
        assert_close(result[key], outputs[name], name)


def _sampler_runs(outputs):
    return sorted(name for name in outputs if SAMPLER_RUN.match(name))


def _scheduler(name):
    sampler, schedule, clip, _, _ = SAMPLER_RUN.match(name).groups()
    return GaussianDiffusionScheduler(
        beta_schedule=schedule, clip_sample=clip == "clip", sampler="ddim" if sampler == "ddim" else "ancestral"
    )


@torch.no_grad()
def test_sampler_runs_through_pipeline(fixture, model):
    """DDIM and ancestral runs (ancestral noise from a generator seeded as the original's global RNG)."""
    outputs = fixture["outputs"]
    names = _sampler_runs(outputs)
    assert any(name.startswith("ddim") for name in names) and any(name.startswith("psample") for name in names)
    for name in names:
        _, _, _, scale, seed = SAMPLER_RUN.match(name).groups()
        pipe = _pipeline(model, _scheduler(name))
        latents = pipe(
            outputs["sample_y"],
            num_inference_steps=_num_steps(outputs),
            guidance_scale=_number(scale),
            latents=outputs["sample_noise"],
            generator=torch.Generator().manual_seed(int(seed)) if seed else None,
            output_type="latent",
        ).images
        _assert_run(latents, outputs[name], name)


@torch.no_grad()
def test_ancestral_noise_stream_and_injected_noise(fixture, model):
    """The recorded draws are the seeded generator's stream (on the doubled CFG batch); injecting them
    step by step gives the same runs."""
    outputs = fixture["outputs"]
    noise_name = next(key for key in outputs if key.startswith("psample_noises_seed"))
    noises = outputs[noise_name]
    generator = torch.Generator().manual_seed(int(noise_name.rsplit("seed", 1)[1]))
    assert torch.equal(torch.stack([torch.randn(noises.shape[1:], generator=generator) for _ in noises]), noises)
    for name in (name for name in _sampler_runs(outputs) if name.startswith("psample")):
        scale = _number(SAMPLER_RUN.match(name).group(4))
        scheduler = _scheduler(name)
        scheduler.set_timesteps(_num_steps(outputs))
        pipe = _pipeline(model, scheduler)
        latents, labels = outputs["sample_noise"], outputs["sample_y"]
        sample = torch.cat([latents, latents])
        labels = torch.cat([labels, torch.full_like(labels, model.null_class_label)])
        for timestep, noise in zip(scheduler.timesteps, noises, strict=True):
            output = pipe.guided_model_output(sample, timestep.expand(sample.shape[0]), labels, scale)
            sample = scheduler.step(output, timestep, sample, noise=noise).prev_sample
        _assert_run(sample[: latents.shape[0]], outputs[name], f"{name} (injected noise)")


@torch.no_grad()
def test_pipeline_images(fixture, model):
    """Guided DDIM (clip) then decode through the SoftVQ tokenizer: pipeline_images_<tokenizer>."""
    outputs = fixture["outputs"]
    folder = (fixture["root"] / fixture["original"]["pipeline_tokenizer"]).resolve()
    if not folder.is_dir():
        pytest.skip(f"tokenizer fixture {folder} is missing")
    name = next(key for key in outputs if key.startswith("pipeline_images_"))
    run = next(
        run
        for run in _sampler_runs(outputs)
        if run.startswith("ddim") and "noclip" not in run and not run.endswith("cfg1")
    )
    scale = _number(SAMPLER_RUN.match(run).group(4))
    pipe = _pipeline(model, _scheduler(run), fixture_tokenizer(folder))
    images = pipe(
        outputs["sample_y"],
        num_inference_steps=_num_steps(outputs),
        guidance_scale=scale,
        latents=outputs["sample_noise"],
        output_type="pt",
    ).images
    assert_close(images, outputs[name], name)
