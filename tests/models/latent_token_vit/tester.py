"""``LatentTokenViTTesterMixin``: the tokenizer contract for the families built on the latent-token ViT (SoftVQ-VAE,
MAETok); each family's test class sets ``model_class`` and ``config_class``."""

import torch

from hf_vtok import LatentTokenImageProcessor
from tests.testing_utils.tiny_models import TINY_LATENT_TOKEN_VIT, perturb_zero_inits
from tests.testing_utils.tokenizer_tester import TokenizerTesterMixin, seeded


class LatentTokenViTTesterMixin(TokenizerTesterMixin):
    config_class: type
    config_extra: dict = {}  # family fields on top of TINY_LATENT_TOKEN_VIT

    def get_config(self):
        return self.config_class(**TINY_LATENT_TOKEN_VIT, **self.config_extra, shift_factor=0.1, scaling_factor=2.0)

    def get_model(self):
        return perturb_zero_inits(super().get_model())

    def get_inputs(self, batch_size=2):
        return torch.rand(batch_size, 3, 32, 32, generator=seeded(0)) * 2 - 1

    def expected_latents_shape(self, batch_size):
        return (batch_size, 8, 8)

    def get_processor(self):
        return LatentTokenImageProcessor.for_model(self.get_config())
