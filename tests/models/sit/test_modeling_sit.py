"""SiT (``SiTTransformer1DModel``, the velocity model on 1D latent tokens) on tiny random configs: the generator
contract, bad input, qk-norm and training-checkpoint conversion (the shared 1D converter tests live in
tests/models/dit_1d)."""

import pytest
import torch

from hf_vtok import SiTTransformer1DModel
from hf_vtok.models.sit import convert_sit_checkpoint
from tests.testing_utils.generator_tester import GeneratorTesterMixin
from tests.testing_utils.tiny_models import TINY_1D, inputs_1d, original_1d_checkpoint, randomize


class TestSiTTransformer1D(GeneratorTesterMixin):
    model_class = SiTTransformer1DModel

    def get_init_kwargs(self):
        return TINY_1D

    def get_inputs(self, model, batch_size=3):
        return inputs_1d(model, batch_size)


def test_bad_inputs_raise_clear_errors():
    model = randomize(SiTTransformer1DModel(**TINY_1D))
    hidden, timestep, labels = inputs_1d(model)
    with pytest.raises(ValueError, match=r"hidden_states must be \[B, 6, 4\]"):
        model(hidden[:, :5], timestep, labels)
    with pytest.raises(ValueError, match="out of range"):
        model(hidden, timestep, torch.tensor([0, 1, 6]))
    with pytest.raises(ValueError, match="integer ids"):
        model(hidden, timestep, labels.float())
    with pytest.raises(ValueError, match="timestep must be a scalar"):
        model(hidden, timestep[:2], labels)
    no_null = SiTTransformer1DModel(**TINY_1D, class_dropout_prob=0.0)
    assert no_null.null_class_label is None
    with pytest.raises(ValueError, match=r"expected 0\.\.4$"):
        no_null(hidden, timestep, labels)  # label 5 would be the null class, which this model lacks


@torch.no_grad()
def test_sit_with_qk_norm(tmp_path):
    """timm's qk-norm (affine LayerNorm over the head dimension) is converted and changes the output."""
    checkpoint, config, original = original_1d_checkpoint(tmp_path, "sit", qk_norm=True)
    model = convert_sit_checkpoint(checkpoint, config)
    assert model.config.qk_norm and isinstance(model.blocks[0].attn.q_norm, torch.nn.LayerNorm)
    assert torch.equal(model.blocks[1].attn.k_norm.bias, original["blocks.1.attn.k_norm.bias"])
    inputs = inputs_1d(model)
    plain = SiTTransformer1DModel(**{**model.config, "qk_norm": False})
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "_norm." not in k})
    assert not torch.allclose(model(*inputs).sample, plain(*inputs).sample)


def test_converter_reads_training_checkpoints(tmp_path):
    checkpoint, config, original = original_1d_checkpoint(tmp_path, "sit")
    wrapped = tmp_path / "checkpoint.pt"
    torch.save(
        {"ema": {f"_orig_mod.{key}": value for key, value in original.items()}, "step": torch.tensor(3)}, wrapped
    )
    model = convert_sit_checkpoint(wrapped, config, inner_key="ema")
    assert torch.equal(model.state_dict()["final_layer.linear.bias"], original["final_layer.linear.bias"])
