"""SiTPipeline with tiny random components: the pipeline contract, given noise, guidance interval, and the
conversion CLI that assembles a pipeline folder."""

import torch

from hf_vtok import SiTPipeline
from hf_vtok.cli import main as cli_main
from tests.testing_utils.generator_tester import ClassConditionalPipelineTesterMixin
from tests.testing_utils.tiny_models import original_1d_checkpoint, tiny_pipeline_tokenizer, tiny_sit_pipeline


class TestSiTPipeline(ClassConditionalPipelineTesterMixin):
    pipeline_class = SiTPipeline

    def get_pipeline(self):
        return tiny_sit_pipeline()

    def expected_image_size(self):
        return (16, 16)

    def expected_latents_shape(self):
        return (2, 4, 4)


@torch.no_grad()
def test_given_noise_replaces_the_draw_and_decoding_denormalises():
    pipe = tiny_sit_pipeline(sampler="ode")
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
    expected = pipe.vae.decode(latents / 2.0 + 0.1).sample  # scaling_factor 2, shift_factor 0.1
    torch.testing.assert_close(images, ((expected.clamp(-1, 1) + 1) / 2))


@torch.no_grad()
def test_guidance_interval_switches_guidance_off_outside(monkeypatch):
    pipe = tiny_sit_pipeline(sampler="ode")
    batches = []
    forward = pipe.transformer.forward
    monkeypatch.setattr(
        pipe.transformer,
        "forward",
        lambda hidden_states, **kw: batches.append(hidden_states.shape[0]) or forward(hidden_states, **kw),
    )
    pipe([1], num_inference_steps=4, guidance_scale=3.0, guidance_interval=(0.0, 0.7), output_type="latent")
    assert batches == [1, 1, 2, 2]  # t = 1, 0.75 conditional only; t = 0.5, 0.25 guided


def test_cli_assembles_a_pipeline_folder(tmp_path):
    checkpoint, config, _ = original_1d_checkpoint(tmp_path, "sit", depth=1, tokens=4)
    tiny_pipeline_tokenizer().save_pretrained(tmp_path / "tokenizer")
    cli_main([
        "convert", "sit", "--checkpoint", str(checkpoint), "--config", str(config),
        "--tokenizer", str(tmp_path / "tokenizer"), "--output", str(tmp_path / "pipeline"),
    ])  # fmt: skip
    pipe = SiTPipeline.from_pretrained(tmp_path / "pipeline")
    assert pipe.scheduler.config.sampler == "sde" and pipe.scheduler.config.path_type == "cosine"  # released recipe
    pipe.set_progress_bar_config(disable=True)
    assert pipe([0], num_inference_steps=2, output_type="pt").images.shape == (1, 3, 16, 16)
