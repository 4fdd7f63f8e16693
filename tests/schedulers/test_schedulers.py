"""The hf_vtok schedulers: ADM's Gaussian diffusion (respacing, DDPM / DDIM steps) and SiT's flow sampler (ODE /
SDE plans, exactness on a straight flow, the score from the velocity)."""

import numpy as np
import pytest
import torch

from hf_vtok import GaussianDiffusionScheduler, SiTFlowScheduler
from hf_vtok.schedulers.scheduling_gaussian_diffusion import space_timesteps
from hf_vtok.schedulers.scheduling_sit_flow import score_from_velocity


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
