"""What every class-conditional pipeline (SiT, DiT 1D, ViTok DiT) shares, on tiny random components: the errors
raised before any compute, tokenizers that do not fit, how diffusers records the components. Each pipeline's
contract lives in its own folder."""

import pytest
import torch

from hf_vtok import (
    DiT1DPipeline,
    DiTTransformer1DModel,
    GaussianDiffusionScheduler,
    SiTFlowScheduler,
    SiTPipeline,
    SiTTransformer1DModel,
    SoftVQModel,
    ViTokDiTTransformerModel,
    ViTokModel,
)
from tests.testing_utils.tiny_models import (
    TINY_PIPELINE_1D,
    tiny_dit_pipeline,
    tiny_pipeline_tokenizer,
    tiny_sit_pipeline,
    tiny_vitok_dit_pipeline,
)


def test_errors_before_any_compute(monkeypatch):
    pipe = tiny_sit_pipeline()
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
    no_null = SiTPipeline(
        tiny_pipeline_tokenizer(),
        SiTTransformer1DModel(**TINY_PIPELINE_1D, class_dropout_prob=0.0),
        SiTFlowScheduler(),
    )
    with pytest.raises(ValueError, match="null class"):
        no_null([1], guidance_scale=2.0)
    dit = tiny_dit_pipeline()
    with pytest.raises(ValueError, match="exceeds the 1000 training timesteps"):
        dit([1], num_inference_steps=1001)
    vitok = tiny_vitok_dit_pipeline()
    with pytest.raises(ValueError, match="multiples of the tokenizer's patch size 4"):
        vitok([1], height=10, width=8)


def test_tokenizer_that_does_not_fit_the_transformer():
    transformer = SiTTransformer1DModel(**TINY_PIPELINE_1D)
    with pytest.raises(ValueError, match="8-channel latents but the transformer generates 4"):
        SiTPipeline(tiny_pipeline_tokenizer(latent_channels=8), transformer, SiTFlowScheduler())
    with pytest.raises(ValueError, match="has 8 latent tokens but the transformer generates 4"):
        SiTPipeline(tiny_pipeline_tokenizer(num_latent_tokens=8), transformer, SiTFlowScheduler())
    with pytest.raises(ValueError, match="does not fit a transformer with learn_sigma=True"):
        DiT1DPipeline(
            tiny_pipeline_tokenizer(),
            DiTTransformer1DModel(**TINY_PIPELINE_1D),
            GaussianDiffusionScheduler(variance_type="fixed_small"),
        )


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
