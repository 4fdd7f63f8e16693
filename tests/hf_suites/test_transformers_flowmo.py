"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on a tiny FlowMo."""

import unittest

import torch

from hf_vtok import FlowMoConfig, FlowMoImageProcessor, FlowMoModel
from tests.testing_utils.tiny_models import TINY_FLOWMO

from .common import (
    ConfigTester,
    ModelTesterMixin,
    TokenizerImageProcessingTester,
    TokenizerImageProcessingTestMixin,
    TokenizerModelTester,
    TokenizerModelTestMixin,
)

IMAGE_SIZE = TINY_FLOWMO["image_size"]


def flowmo_inputs(batch_size: int) -> dict:
    """Images and the sampler's start noise (the reconstruction is a function of both)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1
    return {"pixel_values": images, "noise": torch.randn(images.shape, generator=generator)}


class FlowMoModelTest(TokenizerModelTestMixin, ModelTesterMixin, unittest.TestCase):
    input_embeddings = "encoder.image_embed"
    all_model_classes = (FlowMoModel,)

    def setUp(self):
        config = FlowMoConfig(**TINY_FLOWMO)
        self.model_tester = TokenizerModelTester(
            self,
            config,
            flowmo_inputs,
            hidden_size=config.stack_hidden_size("encoder"),
            num_hidden_layers=config.encoder_depth,
            num_attention_heads=config.num_attention_heads,
            seq_length=(IMAGE_SIZE // config.patch_size) ** 2,  # the image stream
        )
        self.config_tester = ConfigTester(
            self,
            config_class=FlowMoConfig,
            has_text_modality=False,
            common_properties=["num_attention_heads", "encoder_depth", "decoder_depth", "patch_size"],
            image_size=IMAGE_SIZE,
            patch_size=4,
            code_length=4,
            encoder_depth=1,
        )


class FlowMoImageProcessingTester(TokenizerImageProcessingTester):
    processor_class = FlowMoImageProcessor
    processor_defaults = {"image_size": IMAGE_SIZE}
    output_size = IMAGE_SIZE


class FlowMoImageProcessingTest(TokenizerImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = FlowMoImageProcessingTester
