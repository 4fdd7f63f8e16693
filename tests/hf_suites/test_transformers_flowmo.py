"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on a tiny FlowMo."""

import unittest

import torch

from hf_vtok import FlowMoConfig, FlowMoImageProcessor, FlowMoModel
from tests.testing_utils.tiny_models import TINY_FLOWMO

from .common import (
    NO_TORCHVISION,
    ConfigTester,
    ImageProcessingTester,
    ImageProcessingTestMixin,
    ModelTesterMixin,
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

    def test_config(self):
        self.config_tester.run_common_tests()


class FlowMoImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("image_size", IMAGE_SIZE)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        return {"pil": FlowMoImageProcessor}

    def expected_output_image_shape(self, images):
        return self.num_channels, IMAGE_SIZE, IMAGE_SIZE


class FlowMoImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = FlowMoImageProcessingTester

    @unittest.skip(NO_TORCHVISION)
    def test_new_models_require_torchvision_backend(self):
        pass
