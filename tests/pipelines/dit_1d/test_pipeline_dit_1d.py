"""DiT1DPipeline with tiny random components: the pipeline contract, Hub-id loading from the cache and the
conversion CLI's tokenizer presets."""

import pytest
from huggingface_hub import constants as hub_constants

from hf_vtok import DiT1DPipeline, DiTTransformer1DModel, GaussianDiffusionScheduler, SoftVQModel
from hf_vtok.cli import main as cli_main
from tests.testing_utils.generator_tester import ClassConditionalPipelineTesterMixin
from tests.testing_utils.tiny_models import original_1d_checkpoint, tiny_dit_pipeline


class TestDiT1DPipeline(ClassConditionalPipelineTesterMixin):
    pipeline_class = DiT1DPipeline

    def get_pipeline(self):
        return tiny_dit_pipeline()

    def expected_image_size(self):
        return (16, 16)

    def expected_latents_shape(self):
        return (2, 4, 4)


def test_hub_id_loading_from_the_cache(tmp_path, monkeypatch):
    """A Hub repository id resolves through the local cache (HF_HUB_OFFLINE: nothing downloads)."""
    pipe = tiny_dit_pipeline()
    snapshot = tmp_path / "hub" / "models--someone--tiny-dit" / "snapshots" / ("0" * 40)
    pipe.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--someone--tiny-dit" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-dit" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    reloaded = DiT1DPipeline.from_pretrained("someone/tiny-dit", cache_dir=str(tmp_path / "hub"))
    assert isinstance(reloaded.transformer, DiTTransformer1DModel) and isinstance(reloaded.vae, SoftVQModel)
    assert isinstance(reloaded.scheduler, GaussianDiffusionScheduler)


def test_cli_tokenizer_presets_are_resolved(tmp_path):
    checkpoint, config, _ = original_1d_checkpoint(tmp_path, "dit", depth=1, tokens=4)
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
