"""MAETok's training-time path on tiny configs: token masking, HOG, teacher features, auxiliary losses."""

import math

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model, SiglipVisionConfig, SiglipVisionModel

from hf_vtok import HOGFeatures, MAETokConfig, MAETokFeatureTargets, MAETokModel
from hf_vtok.models.maetok.modeling_maetok import sample_mask_ratio

TINY = dict(
    image_size=32, encoder_patch_size=8, decoder_patch_size=8, num_latent_tokens=8, latent_channels=8,
    encoder_hidden_size=32, encoder_num_layers=1, encoder_num_heads=4,
    decoder_hidden_size=32, decoder_num_layers=1, decoder_num_heads=4,
    auxiliary_hidden_size=16, auxiliary_num_layers=1, auxiliary_num_heads=2, hog_gaussian_window=16,
)  # fmt: skip
TEACHER = dict(
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8
)


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_mask_ratio_is_a_truncated_normal():
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_mask_ratio(0.4, 0.6, 0.25, generator) for _ in range(4000)])
    assert draws.min() >= 0.4 and draws.max() <= 0.6
    # mean of N(0.6, 0.25) truncated to [0.4, 0.6]: 0.6 - 0.25 * (phi(0) - phi(-0.8)) / (Phi(0) - Phi(-0.8))
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    expected = 0.6 - 0.25 * (phi(0) - phi(-0.8)) / (0.5 - 0.5 * math.erfc(0.8 / math.sqrt(2)))
    assert abs(draws.mean().item() - expected) < 0.005
    assert sample_mask_ratio(0.5, 0.5, 0.25) == 0.5


def test_token_mask_sampling():
    model = MAETokModel(MAETokConfig(**TINY))
    masks = model.sample_token_mask(4, torch.Generator().manual_seed(3))
    counts = masks.sum(dim=1)
    assert masks.shape == (4, 16) and masks.dtype == torch.bool
    assert (counts == counts[0]).all() and math.ceil(16 * 0.4) <= counts[0] <= math.ceil(16 * 0.6)
    assert not (masks == masks[0]).all()  # an independent permutation per image
    assert torch.equal(masks, model.sample_token_mask(4, torch.Generator().manual_seed(3)))


def test_masked_patches_do_not_reach_the_latents(images):
    model = MAETokModel(MAETokConfig(**TINY)).eval()
    mask = torch.zeros(2, 16, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model.encode(images, token_mask=mask).latents, model.encode(images).latents)
        mask[:, :4] = True  # the first patch row
        edited = images.clone()
        edited[:, :, :8] = -images[:, :, :8]
        masked = model.encode(images, token_mask=mask).latents
        assert torch.equal(masked, model.encode(edited, token_mask=mask).latents)
        assert not torch.equal(masked, model.encode(images).latents)
    with pytest.raises(ValueError, match=r"token_mask must be \[B, N\]"):
        model.encode(images, token_mask=mask[:, :8])
    without = MAETokModel(MAETokConfig(**TINY, mask_ratio_min=0.0))
    with pytest.raises(ValueError, match="no mask token"):
        without(images, mask_tokens=True)


def test_training_forward_masks_by_default(images):
    model = MAETokModel(MAETokConfig(**TINY)).train()
    output = model(images, generator=torch.Generator().manual_seed(0))
    assert output.token_mask is not None and output.token_mask.any()
    assert model.eval()(images).token_mask is None


def test_hog_features():
    hog = HOGFeatures(patch_size=8, num_bins=9, cell_size=4, gaussian_window=16)
    edge = torch.full((1, 3, 32, 32), -1.0)
    edge[..., 18:] = 1.0  # a vertical edge inside the third patch column
    features = hog(edge)
    assert features.shape == (1, 16, 3 * 9 * 4)
    per_bin = features.reshape(1, 16, 3, 9, 4).abs().sum(dim=(0, 1, 2, 4))
    assert per_bin.argmax() == 4 and per_bin.sum() == per_bin[4]  # horizontal gradient: one orientation bin
    torch.testing.assert_close(hog(edge * 3), features)  # per-cell normalisation: contrast invariant
    flat_patch = features[0, 0].reshape(3, 9, 4)
    assert not flat_patch.any()  # no gradient, no histogram
    with pytest.raises(ValueError, match="divisible"):
        hog(edge[..., :24, :24])


def _teachers():
    torch.manual_seed(0)
    dinov2 = Dinov2Model(Dinov2Config(**TEACHER, mlp_ratio=2))
    siglip = SiglipVisionModel(SiglipVisionConfig(**TEACHER))
    return dinov2, siglip


def test_auxiliary_losses(images):
    config = MAETokConfig(
        **TINY, auxiliary_targets=("hog", "dinov2", "siglip"), dinov2_feature_dim=16, siglip_feature_dim=16
    )
    model = MAETokModel(config).train()
    dinov2, siglip = _teachers()
    targets = MAETokFeatureTargets.for_config(config, dinov2=dinov2, siglip=siglip)
    output = model(images, feature_targets=targets, generator=torch.Generator().manual_seed(0))
    assert set(output.losses) == {"hog", "dinov2", "siglip"}
    torch.testing.assert_close(output.loss, sum(output.losses.values()))
    # masked-only averaging, recomputed by hand for the HOG decoder
    with torch.no_grad():
        predicted = model.predict_auxiliary_features(model.encode(images, token_mask=output.token_mask).latents)["hog"]
        per_patch = (predicted - targets(images)["hog"]).square().mean(-1)
        mask = output.token_mask.float()
    torch.testing.assert_close(output.losses["hog"], (per_patch * mask).sum() / mask.sum())
    (output.sample.square().mean() + output.loss).backward()
    assert all(p.grad is not None for p in model.auxiliary_decoders.parameters())
    assert all(p.grad is None for p in dinov2.parameters()) and not any(p.requires_grad for p in siglip.parameters())


def test_auxiliary_target_errors(images):
    config = MAETokConfig(**TINY, auxiliary_targets=("dinov2",), dinov2_feature_dim=16)
    model = MAETokModel(config)
    with pytest.raises(ValueError, match="no such teacher"):
        MAETokFeatureTargets.for_config(config)
    coarse = Dinov2Model(Dinov2Config(**{**TEACHER, "patch_size": 16}))
    with pytest.raises(ValueError, match="patch grid"):
        model(images, feature_targets=MAETokFeatureTargets(dinov2=coarse))
    with pytest.raises(ValueError, match="no auxiliary decoder"):
        model(images, feature_targets={"hog": torch.zeros(2, 16, 27)})
    with pytest.raises(ValueError, match="no auxiliary decoders"):
        MAETokModel(MAETokConfig(**TINY)).predict_auxiliary_features(torch.zeros(2, 8, 8))
