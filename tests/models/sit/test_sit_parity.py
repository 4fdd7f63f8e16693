"""SiT (1D tokens) and its samplers against the original code's golden outputs (../shared/parity/sit, FIXTURE.md).

Every size, name and number is read from the fixture files (config.json, original_config.json,
sampling.json, outputs.safetensors); fixture sets of the same layout with other sizes and seeds run too.
"""

import json
import re

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from safetensors.torch import load_file

from hf_vtok import SiTFlowScheduler, SiTPipeline
from hf_vtok.models.sit import convert_sit_checkpoint
from tests.testing_utils.generator_parity import assert_close, fixture_tokenizer, stand_in_tokenizer

pytestmark = pytest.mark.parity
SAMPLER_RUN = re.compile(
    r"^(ode|sde)_(euler|heun|linear|cosine)_cfg(\d+(?:p\d+)?)(_gi(\d+(?:p\d+)?)to(\d+(?:p\d+)?))?$"
)


def _number(text: str) -> float:
    return float(text.replace("p", "."))


@pytest.fixture(scope="module")
def fixture(family_parity_dir):
    root = family_parity_dir("sit")
    return {
        "root": root,
        "original": json.loads((root / "original_config.json").read_text()),
        "sampling": json.loads((root / "sampling.json").read_text()),
        "outputs": load_file(root / "outputs.safetensors"),
    }


@pytest.fixture(scope="module")
def model(fixture):
    return convert_sit_checkpoint(fixture["root"] / "model.safetensors", fixture["root"] / "config.json")


def _sampler_runs(outputs):
    return sorted(name for name in outputs if SAMPLER_RUN.match(name))


def _settings(name: str, sampling: dict) -> dict:
    """Sampler settings of one recorded run: the kind from its name, the numbers from sampling.json."""
    mode, variant, cfg, interval, low, high = SAMPLER_RUN.match(name).groups()
    guided = _number(cfg) > 1
    if guided:  # the name restates the numbers of sampling.json
        assert _number(cfg) == sampling["cfg_scale"], name
    if interval:
        assert (_number(low), _number(high)) == (sampling["guidance_low"], sampling["guidance_high"]), name
    return {
        "scheduler": SiTFlowScheduler(
            sampler=mode, heun=variant == "heun", path_type=variant if mode == "sde" else "linear"
        ),
        "guidance_scale": sampling["cfg_scale"] if guided else 1.0,
        "guidance_interval": (sampling["guidance_low"], sampling["guidance_high"]) if interval else (0.0, 1.0),
    }


def test_converted_config_matches_original(fixture, model):
    init = fixture["original"]["init_kwargs"]
    config = model.config
    assert (config.num_tokens, config.in_channels, config.hidden_size) == (
        init["input_size"],
        init["in_channels"],
        init["hidden_size"],
    )
    assert (config.num_layers, config.num_attention_heads, config.num_classes) == (
        init["depth"],
        init["num_heads"],
        init["num_classes"],
    )


@torch.no_grad()
def test_forward(fixture, model):
    outputs = fixture["outputs"]
    sample = model(outputs["fwd_x"], outputs["fwd_t"], outputs["fwd_y"]).sample
    assert_close(sample, outputs["fwd_out"], "fwd_out")
    frequencies = get_timestep_embedding(outputs["fwd_t"], 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert_close(model.time_embedding(frequencies), outputs["fwd_t_emb"], "fwd_t_emb")
    assert_close(model.class_embedding(outputs["fwd_y"]), outputs["fwd_y_emb"], "fwd_y_emb")
    assert_close(model.pos_embed, outputs["pos_embed"], "pos_embed")


def test_every_sampler_run_is_covered(fixture):
    names = _sampler_runs(fixture["outputs"])
    assert {name.split("_")[0] for name in names} == {"ode", "sde"}, names
    assert any("heun" in name for name in names) and any("cosine" in name for name in names)


@torch.no_grad()
def test_sampler_runs_through_pipeline(fixture, model):
    """Every recorded ODE / SDE run, through SiTPipeline (SDE noise from a generator seeded like the original)."""
    outputs, sampling = fixture["outputs"], fixture["sampling"]
    for name in _sampler_runs(outputs):
        settings = _settings(name, sampling)
        pipe = SiTPipeline(stand_in_tokenizer(model.config.in_channels), model, settings.pop("scheduler"))
        pipe.set_progress_bar_config(disable=True)
        latents = pipe(
            outputs["sample_y"],
            num_inference_steps=sampling["num_steps"],
            latents=outputs["sample_noise"],
            generator=torch.Generator().manual_seed(sampling["sde_seed"]),
            output_type="latent",
            **settings,
        ).images
        assert_close(latents, outputs[name], name)


@torch.no_grad()
def test_sde_noise_stream_and_injected_noise(fixture, model):
    """The recorded SDE draws are the generator's stream; stepping with them injected gives the cfg-1 runs."""
    outputs, sampling = fixture["outputs"], fixture["sampling"]
    noises = next(value for key, value in outputs.items() if key.startswith("sde_noises"))
    generator = torch.Generator().manual_seed(sampling["sde_seed"])
    drawn = torch.stack([torch.randn(noises.shape[1:], generator=generator, dtype=torch.float64) for _ in noises])
    assert torch.equal(drawn, noises)
    for name in _sampler_runs(outputs):
        if not name.startswith("sde") or "_gi" in name or _settings(name, sampling)["guidance_scale"] > 1:
            continue
        scheduler = _settings(name, sampling)["scheduler"]
        scheduler.set_timesteps(sampling["num_steps"])
        assert len(scheduler.timesteps) == len(noises) + 1  # no noise on the last, mean-only step
        sample = outputs["sample_noise"].double()
        for index, time in enumerate(scheduler.timesteps):
            velocity = model(sample.float(), time.float().expand(sample.shape[0]), outputs["sample_y"]).sample
            noise = noises[index] if index < len(noises) else None
            sample = scheduler.step(velocity, time, sample, noise=noise).prev_sample
        assert_close(sample, outputs[name], f"{name} (injected noise)")


@pytest.mark.parametrize("tokenizer_name", ["softvq", "maetok"])
@torch.no_grad()
def test_pipeline_images(fixture, model, tokenizer_name):
    """Sample (guided ODE run) then decode through the tokenizer: pipeline_images_<tokenizer>."""
    outputs, sampling = fixture["outputs"], fixture["sampling"]
    folders = fixture["original"]["pipeline_tokenizers"]
    if tokenizer_name not in folders:
        pytest.skip(f"no {tokenizer_name} pipeline run in this fixture")
    folder = (fixture["root"] / folders[tokenizer_name]).resolve()
    if not folder.is_dir():
        pytest.skip(f"tokenizer fixture {folder} is missing")
    guided_ode = next(name for name in _sampler_runs(outputs) if name.startswith("ode_euler") and "_gi" in name)
    settings = _settings(guided_ode, sampling)
    pipe = SiTPipeline.from_components(model, fixture_tokenizer(folder), settings.pop("scheduler"))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        outputs["sample_y"],
        num_inference_steps=sampling["num_steps"],
        latents=outputs["sample_noise"],
        output_type="pt",
        **settings,
    ).images
    assert_close(images, outputs[f"pipeline_images_{tokenizer_name}"], f"pipeline_images_{tokenizer_name}")
