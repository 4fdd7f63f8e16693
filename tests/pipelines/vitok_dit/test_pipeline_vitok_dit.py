"""ViTokDiTPipeline with tiny random components: the pipeline contract and the FlowUniPC sigma grid."""

import numpy as np

from hf_vtok import ViTokDiTPipeline
from tests.testing_utils.generator_tester import ClassConditionalPipelineTesterMixin
from tests.testing_utils.tiny_models import tiny_vitok_dit_pipeline


class TestViTokDiTPipeline(ClassConditionalPipelineTesterMixin):
    pipeline_class = ViTokDiTPipeline

    def get_pipeline(self):
        return tiny_vitok_dit_pipeline()

    def expected_image_size(self):
        return (8, 8)

    def expected_latents_shape(self):
        return (2, 4, 4)


def test_unipc_is_given_the_original_sigma_grid():
    """ViTok's FlowUniPC: sigmas linspace(sigma_max, 0, n + 1)[:-1] of the (shifted) training sigmas, timesteps
    int(1000 sigma)."""
    pipe = tiny_vitok_dit_pipeline()
    for steps in (4, 50):
        pipe._set_timesteps(steps, "cpu")
        sigma_max = float(np.float32(1 - 1 / 1000))
        expected = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
        np.testing.assert_allclose(pipe.scheduler.sigmas[:-1].numpy(), expected.astype(np.float32))
        assert pipe.scheduler.sigmas[-1] == 0
        assert pipe.scheduler.timesteps.tolist() == (expected * 1000).astype(np.int64).tolist()
