"""V2FlowPipeline (DC-AE + V²Flow tokenizer) with tiny random components: the pipeline contract, reconstruction
and token decoding, latent scaling, save / load and the component checks."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vtok import V2FlowModel, V2FlowPipeline
from tests.testing_utils.generator_tester import PipelineTesterMixin
from tests.testing_utils.tiny_models import TINY_V2FLOW, tiny_dcae, tiny_v2flow_model
from tests.testing_utils.tokenizer_tester import seeded


class V2FlowPipelineTesterMixin(PipelineTesterMixin):
    """The pipeline contract of both V²Flow pipelines: DC-AE latents of ``TINY_V2FLOW``'s size."""

    has_progress_bar = False  # the loops run inside V2FlowModel.decode (and the language model's generate)

    def expected_image_size(self):
        side = TINY_V2FLOW["sample_size"] * TINY_V2FLOW["vae_downsample_factor"]
        return (side, side)

    def expected_latents_shape(self):
        return (2, TINY_V2FLOW["latent_channels"], TINY_V2FLOW["sample_size"], TINY_V2FLOW["sample_size"])


class TestV2FlowPipeline(V2FlowPipelineTesterMixin):
    """Decoding given code ids (the pipeline's generator draws the decoder's orders and noise)."""

    pipeline_class = V2FlowPipeline
    components = ("vae", "tokenizer")

    def get_pipeline(self):
        torch.manual_seed(0)
        pipe = V2FlowPipeline(vae=tiny_dcae(), tokenizer=tiny_v2flow_model())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def get_call_kwargs(self):
        return {"image_tokens": torch.randint(0, TINY_V2FLOW["codebook_size"], (2, 16), generator=seeded(5))}


@torch.no_grad()
def test_pipeline_round_trip_and_scaling(tmp_path):
    vae, tokenizer = tiny_dcae(), tiny_v2flow_model()
    pipe = V2FlowPipeline(vae=vae, tokenizer=tokenizer)
    image = Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8))
    pixels = pipe.preprocess([image, image])
    assert pixels.shape == (2, 3, 8, 8)
    tokens = pipe.encode_images([image, image], generator=seeded(1)).image_tokens
    scaled = vae.encode(pixels).latent * tokenizer.config.scaling_factor
    assert torch.equal(tokens, tokenizer.encode(scaled, generator=seeded(1)).image_tokens)
    latents = pipe.decode_tokens(tokens, output_type="latent", generator=seeded(2))
    expected = tokenizer.decode(image_tokens=tokens, generator=seeded(2)).sample / tokenizer.config.scaling_factor
    assert torch.equal(latents, expected)
    images = pipe(images=[image, image], generator=seeded(3)).images
    assert len(images) == 2 and images[0].size == (8, 8)
    decoded = pipe(image_tokens=tokens, generator=seeded(4), output_type="pt").images
    pipe.save_pretrained(tmp_path)
    loaded = V2FlowPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.tokenizer, V2FlowModel)
    again = loaded(image_tokens=tokens, generator=seeded(4), output_type="pt").images
    assert decoded.shape == (2, 3, 8, 8) and torch.equal(again, decoded)
    with pytest.raises(ValueError, match="exactly one"):
        pipe()
    with pytest.raises(ValueError, match="channel"):
        V2FlowPipeline(vae=vae, tokenizer=tiny_v2flow_model(latent_channels=8))
    with pytest.raises(ValueError, match="downsamples"):
        V2FlowPipeline(vae=vae, tokenizer=tiny_v2flow_model(vae_downsample_factor=32))
