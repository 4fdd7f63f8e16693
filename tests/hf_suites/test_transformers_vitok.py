"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on a tiny ViTok-v2."""

import unittest

import torch

from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel
from tests.testing_utils.tiny_models import TINY_VITOK_VARIANT

from .common import (
    NO_LOSS,
    NO_TORCHVISION,
    ConfigTester,
    ImageProcessingTester,
    ImageProcessingTestMixin,
    ModelTesterMixin,
    TokenizerModelTester,
    TokenizerModelTestMixin,
)

IMAGE_SIZE = 16  # 2 x 2 patches of 8 pixels


def vitok_inputs(batch_size: int) -> dict:
    images = torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": images * 2 - 1}


class ViTokModelTest(TokenizerModelTestMixin, ModelTesterMixin, unittest.TestCase):
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

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(NO_LOSS)
    def test_training(self):
        pass

    @unittest.skip(NO_LOSS)
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass


class ViTokImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("patch_size", 8)
        kwargs.setdefault("max_num_patches", 64)
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("size", {"longest_edge": 64})
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        return {"pil": ViTokImageProcessor}

    def expected_output_image_shape(self, images):
        # padded to max_num_patches tokens of num_channels * p * p values
        return self.max_num_patches, self.num_channels * self.patch_size**2


class ViTokImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = ViTokImageProcessingTester

    @unittest.skip(NO_TORCHVISION)
    def test_new_models_require_torchvision_backend(self):
        pass
