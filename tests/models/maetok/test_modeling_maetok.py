"""MAETok on a tiny random config: the tokenizer contract (the shared latent-token ViT tests live in
tests/models/latent_token_vit, the training path in test_maetok_training.py)."""

from hf_vtok import MAETokConfig, MAETokModel
from tests.models.latent_token_vit.tester import LatentTokenViTTesterMixin


class TestMAETokTokenizer(LatentTokenViTTesterMixin):
    model_class = MAETokModel
    config_class = MAETokConfig
