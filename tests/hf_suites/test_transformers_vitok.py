"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on a tiny ViTok-v2."""

import unittest

import torch

from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel
from tests.testing_utils.tiny_models import TINY_VITOK_VARIANT

from .common import (
    ConfigTester,
    ModelTesterMixin,
    TokenizerImageProcessingTester,
    TokenizerImageProcessingTestMixin,
    TokenizerModelTester,
    TokenizerModelTestMixin,
    WithoutLossModelTestMixin,
)

IMAGE_SIZE = 16  # 2 x 2 patches of 8 pixels


def vitok_inputs(batch_size: int) -> dict:
    images = torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": images * 2 - 1}


class ViTokModelTest(WithoutLossModelTestMixin, TokenizerModelTestMixin, ModelTesterMixin, unittest.TestCase):
    input_embeddings = "encoder.patch_embed"
    all_model_classes = (ViTokModel,)

    def setUp(self):
        config = ViTokConfig.from_variant(TINY_VITOK_VARIANT)
        self.model_tester = TokenizerModelTester(
            self,
            config,
            vitok_inputs,
            hidden_size=config.encoder_hidden_size,
            num_hidden_layers=config.encoder_num_layers,
            num_attention_heads=config.encoder_num_heads,
            seq_length=(IMAGE_SIZE // config.patch_size) ** 2,
        )
        self.config_tester = ConfigTester(
            self,
            config_class=ViTokConfig,
            has_text_modality=False,
            common_properties=["encoder_hidden_size", "decoder_hidden_size", "patch_size", "latent_channels"],
            encoder_hidden_size=32,
            encoder_num_layers=2,
            encoder_num_heads=2,
            patch_size=8,
            latent_channels=4,
        )


class ViTokImageProcessingTester(TokenizerImageProcessingTester):
    processor_class = ViTokImageProcessor
    processor_defaults = {"patch_size": 8, "max_num_patches": 64, "do_resize": True, "size": {"longest_edge": 64}}

    def expected_output_image_shape(self, images):
        # padded to max_num_patches tokens of num_channels * p * p values
        return self.max_num_patches, self.num_channels * self.patch_size**2


class ViTokImageProcessingTest(TokenizerImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = ViTokImageProcessingTester
