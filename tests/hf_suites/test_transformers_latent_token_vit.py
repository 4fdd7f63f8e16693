"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on tiny SoftVQ-VAE and MAETok models
and their processor (``LatentTokenImageProcessor``)."""

import unittest

import torch

from hf_vtok import LatentTokenImageProcessor, MAETokConfig, MAETokModel, SoftVQConfig, SoftVQModel
from tests.testing_utils.tiny_models import TINY_LATENT_TOKEN_VIT, TINY_SOFTVQ_EXTRA

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

IMAGE_SIZE = TINY_LATENT_TOKEN_VIT["image_size"]


def latent_token_inputs(batch_size: int) -> dict:
    images = torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": images * 2 - 1}


class _LatentTokenViTModelTest(TokenizerModelTestMixin, ModelTesterMixin):
    input_embeddings = "encoder.patch_embed"
    config_class: type
    config_extra: dict = {}

    def setUp(self):
        config = self.config_class(**TINY_LATENT_TOKEN_VIT, **self.config_extra)
        patches = (IMAGE_SIZE // config.encoder_patch_size) ** 2
        self.model_tester = TokenizerModelTester(
            self,
            config,
            latent_token_inputs,
            hidden_size=config.encoder_hidden_size,
            num_hidden_layers=config.encoder_num_layers,
            num_attention_heads=config.encoder_num_heads,
            seq_length=1 + patches + config.num_latent_tokens,  # [cls | patches | latent tokens]
        )
        self.config_tester = ConfigTester(
            self,
            config_class=self.config_class,
            has_text_modality=False,
            common_properties=["encoder_hidden_size", "decoder_hidden_size", "num_latent_tokens", "latent_channels"],
            image_size=IMAGE_SIZE,
            encoder_hidden_size=32,
            encoder_num_heads=4,
            num_latent_tokens=8,
            latent_channels=8,
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


class SoftVQModelTest(_LatentTokenViTModelTest, unittest.TestCase):
    all_model_classes = (SoftVQModel,)
    config_class = SoftVQConfig
    config_extra = TINY_SOFTVQ_EXTRA


class MAETokModelTest(_LatentTokenViTModelTest, unittest.TestCase):
    all_model_classes = (MAETokModel,)
    config_class = MAETokConfig


class LatentTokenImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("size", {"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        return {"pil": LatentTokenImageProcessor}

    def expected_output_image_shape(self, images):
        return self.num_channels, IMAGE_SIZE, IMAGE_SIZE


class LatentTokenImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = LatentTokenImageProcessingTester

    @unittest.skip(NO_TORCHVISION)
    def test_new_models_require_torchvision_backend(self):
        pass
