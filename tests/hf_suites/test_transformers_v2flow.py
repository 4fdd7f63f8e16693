"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on a tiny V²Flow (and the processor of
its DC-AE input)."""

import unittest

import torch

from hf_vtok import V2FlowConfig, V2FlowImageProcessor, V2FlowModel
from tests.testing_utils.tiny_models import TINY_V2FLOW

from .common import (
    ConfigTester,
    ModelTesterMixin,
    TokenizerImageProcessingTester,
    TokenizerImageProcessingTestMixin,
    TokenizerModelTester,
    TokenizerModelTestMixin,
)

IMAGE_SIZE = 16


def v2flow_config() -> V2FlowConfig:
    # softmax resampling: the token ids are a function of the latents (no Gumbel draw)
    return V2FlowConfig(**TINY_V2FLOW, resampler_sampling="softmax")


def v2flow_inputs(batch_size: int) -> dict:
    """DC-AE latents, and the decoder's reveal orders and flow noise (the reconstruction is a function of all)."""
    config = v2flow_config()
    generator = torch.Generator().manual_seed(0)
    size = config.sample_size
    latents = torch.randn(batch_size, config.latent_channels, size, size, generator=generator)
    orders = torch.stack([torch.randperm(config.num_tokens, generator=generator) for _ in range(batch_size)])
    noise = torch.randn(batch_size, config.num_tokens, config.token_dim, generator=generator)
    return {"latents": latents, "orders": orders, "noise": noise}


class V2FlowModelTest(TokenizerModelTestMixin, ModelTesterMixin, unittest.TestCase):
    input_embeddings = "connector.s1.b1"
    all_model_classes = (V2FlowModel,)

    def setUp(self):
        config = v2flow_config()
        self.model_tester = TokenizerModelTester(
            self,
            config,
            v2flow_inputs,
            hidden_size=config.connector_hidden_size,
            num_hidden_layers=2 * config.connector_depth,  # the connector's RegNet blocks, the stem first
            expected_num_hidden_layers=2 * config.connector_depth,
            num_attention_heads=config.num_attention_heads,
            seq_length=config.num_tokens,  # one state per latent cell
        )
        self.config_tester = ConfigTester(
            self,
            config_class=V2FlowConfig,
            has_text_modality=False,
            common_properties=["hidden_size", "num_attention_heads", "codebook_size", "latent_channels"],
            latent_channels=4,
            sample_size=4,
            hidden_size=16,
            num_attention_heads=2,
        )


class V2FlowImageProcessingTester(TokenizerImageProcessingTester):
    processor_class = V2FlowImageProcessor
    processor_defaults = {"crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
    output_size = IMAGE_SIZE


class V2FlowImageProcessingTest(TokenizerImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = V2FlowImageProcessingTester
