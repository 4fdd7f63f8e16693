"""transformers' ModelTesterMixin / ConfigTester / ImageProcessingTestMixin on tiny SoftVQ-VAE and MAETok models
and their processor (``LatentTokenImageProcessor``)."""

import unittest

import torch

from hf_vtok import LatentTokenImageProcessor, MAETokConfig, MAETokModel, SoftVQConfig, SoftVQModel
from tests.testing_utils.tiny_models import TINY_LATENT_TOKEN_VIT, TINY_SOFTVQ_EXTRA

from .common import (
    ConfigTester,
    ModelTesterMixin,
    TokenizerImageProcessingTester,
    TokenizerImageProcessingTestMixin,
    TokenizerModelTester,
    TokenizerModelTestMixin,
    WithoutLossModelTestMixin,
)

IMAGE_SIZE = TINY_LATENT_TOKEN_VIT["image_size"]


def latent_token_inputs(batch_size: int) -> dict:
    images = torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    return {"pixel_values": images * 2 - 1}


class _LatentTokenViTModelTest(WithoutLossModelTestMixin, TokenizerModelTestMixin, ModelTesterMixin):
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


class SoftVQModelTest(_LatentTokenViTModelTest, unittest.TestCase):
    all_model_classes = (SoftVQModel,)
    config_class = SoftVQConfig
    config_extra = TINY_SOFTVQ_EXTRA


class MAETokModelTest(_LatentTokenViTModelTest, unittest.TestCase):
    all_model_classes = (MAETokModel,)
    config_class = MAETokConfig


class LatentTokenImageProcessingTester(TokenizerImageProcessingTester):
    processor_class = LatentTokenImageProcessor
    processor_defaults = {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}}
    output_size = IMAGE_SIZE


class LatentTokenImageProcessingTest(TokenizerImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = LatentTokenImageProcessingTester
