"""Properties of the shared bottlenecks (hf_vtok.quantizers)."""

import math

import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from hf_vtok.quantizers import DiagonalGaussianBottleneck, LookupFreeQuantizer


# ------------------------------------------------------------------------------------------------
# lookup-free quantization
def test_lfq_sign_and_lsb_first_ids():
    quantizer = LookupFreeQuantizer(bits=3)
    latents = torch.tensor([[0.5, -0.2, 0.0], [-1.0, 2.0, 3.0], [-0.1, -0.1, -0.1]])
    result = quantizer(latents)
    assert torch.equal(result.quantized, torch.tensor([[1.0, -1, -1], [-1, 1, 1], [-1, -1, -1]]))  # 0 -> -1
    assert result.indices.tolist() == [1, 2 + 4, 0]  # channel j is bit j
    assert result.indices.dtype == torch.long and result.entropy_loss is None


def test_lfq_ids_round_trip_and_codebook():
    quantizer = LookupFreeQuantizer(bits=5)
    ids = torch.arange(32)
    codes = quantizer.indices_to_codes(ids)
    assert torch.equal(quantizer.codes_to_indices(codes), ids)
    assert torch.equal(quantizer.codebook(), codes)
    latents = torch.randn(4, 7, 5)
    out = quantizer(latents)
    assert torch.equal(quantizer.indices_to_codes(out.indices), out.quantized)


def test_lfq_straight_through_gradient():
    latents = torch.randn(2, 4, 3, requires_grad=True)
    quantized = LookupFreeQuantizer(bits=3)(latents).quantized
    (quantized * torch.arange(3.0)).sum().backward()
    assert torch.equal(latents.grad, torch.arange(3.0).expand(2, 4, 3))


def test_lfq_losses_match_definition():
    torch.manual_seed(1)
    quantizer = LookupFreeQuantizer(bits=2, entropy_temperature=0.1)
    latents = torch.randn(3, 5, 2)
    out = quantizer(latents, return_losses=True)
    codebook = torch.tensor([[-1.0, -1], [1, -1], [-1, 1], [1, 1]])
    logits = 2 * latents @ codebook.T / 0.1
    probs = logits.softmax(-1)
    mean = probs.reshape(-1, 4).mean(0)
    codebook_entropy = -(mean * torch.log(mean + 1e-5)).sum()
    sample_entropy = -(probs * torch.log_softmax(logits + 1e-5, -1)).sum(-1).mean()
    torch.testing.assert_close(out.codebook_entropy, codebook_entropy)
    torch.testing.assert_close(out.per_sample_entropy, sample_entropy)
    torch.testing.assert_close(out.entropy_loss, sample_entropy - codebook_entropy)
    torch.testing.assert_close(out.commitment_loss, ((latents - latents.sign()) ** 2).mean())


def test_lfq_entropy_rewards_confident_diverse_codes():
    quantizer = LookupFreeQuantizer(bits=2)
    diverse = quantizer.indices_to_codes(torch.arange(4)) * 3  # every code used, confidently
    collapsed = torch.full((4, 2), 3.0)  # one code for everything
    diverse_out, collapsed_out = quantizer(diverse, return_losses=True), quantizer(collapsed, return_losses=True)
    assert diverse_out.codebook_entropy.item() == pytest.approx(math.log(4), abs=1e-3)
    assert collapsed_out.codebook_entropy.item() < 1e-3
    assert diverse_out.entropy_loss < collapsed_out.entropy_loss


def test_lfq_bad_inputs():
    quantizer = LookupFreeQuantizer(bits=3)
    with pytest.raises(ValueError, match="must end in 3 bit channels"):
        quantizer(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 8\)"):
        quantizer.indices_to_codes(torch.tensor([8]))
    with pytest.raises(ValueError, match="integer tensor"):
        quantizer.indices_to_codes(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="1..62 bits"):
        LookupFreeQuantizer(bits=0)


# ------------------------------------------------------------------------------------------------
# diagonal Gaussian
def test_gaussian_layout_kl_and_mode():
    moments = torch.randn(2, 5, 6)  # [B, N, 2C] with channels last
    bottleneck = DiagonalGaussianBottleneck(channel_dim=-1)
    out = bottleneck(moments, sample=False, return_kl=True)
    torch.testing.assert_close(out.latents, moments[..., :3])
    logvar = moments[..., 3:].clamp(-30, 20)
    torch.testing.assert_close(out.logvar, logvar)
    expected_kl = 0.5 * (moments[..., :3] ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2))
    torch.testing.assert_close(out.kl, expected_kl)
    assert isinstance(out.latent_dist, DiagonalGaussianDistribution)


def test_gaussian_noise_is_channel_major():
    """Noise is drawn as [B, C, N]: the same draw as the original's randn of the flattened (f t) mean."""
    moments = torch.randn(2, 5, 6)
    bottleneck = DiagonalGaussianBottleneck(channel_dim=-1)
    out = bottleneck(moments, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(2, 3 * 5, generator=torch.Generator().manual_seed(3)).view(2, 3, 5).transpose(1, 2)
    std = torch.exp(0.5 * moments[..., 3:])
    torch.testing.assert_close(out.latents, moments[..., :3] + std * eps)
    given = bottleneck(moments, noise=eps)
    torch.testing.assert_close(given.latents, out.latents)


def test_gaussian_channels_first_images():
    moments = torch.randn(2, 8, 3, 3)
    out = DiagonalGaussianBottleneck(channel_dim=1)(moments, sample=False)
    torch.testing.assert_close(out.latents, moments[:, :4])
    with pytest.raises(ValueError, match="even number"):
        DiagonalGaussianBottleneck(channel_dim=1)(torch.randn(2, 7, 3, 3))
    with pytest.raises(ValueError, match="noise has shape"):
        DiagonalGaussianBottleneck(channel_dim=1)(moments, noise=torch.randn(2, 4, 3))
