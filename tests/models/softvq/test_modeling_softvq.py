"""SoftVQ-VAE on a tiny random config: the tokenizer contract (the shared latent-token ViT tests live in
tests/models/latent_token_vit)."""

from hf_vtok import SoftVQConfig, SoftVQModel
from tests.models.latent_token_vit.tester import LatentTokenViTTesterMixin
from tests.testing_utils.tiny_models import TINY_SOFTVQ_EXTRA


class TestSoftVQTokenizer(LatentTokenViTTesterMixin):
    model_class = SoftVQModel
    config_class = SoftVQConfig
    config_extra = TINY_SOFTVQ_EXTRA
