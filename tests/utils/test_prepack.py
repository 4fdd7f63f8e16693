"""oneDNN-prepacked linear weights (``hf_vtok.prepack_linear_weights``): same outputs to float rounding,
plain weights in ``state_dict`` / ``save_pretrained``, exact undo, tied weights left alone, fused GELU, and
clear errors for gradients and inputs that do not fit. The parity fixtures are run prepacked in
tests/test_bf16_and_prepack.py."""

import copy

import pytest
import torch
from torch import nn

from hf_vtok import SiTTransformer1DModel, prepack_linear_weights, unpack_linear_weights
from hf_vtok.modules import GELUMLP
from hf_vtok.utils.prepack import is_prepacked
from tests.testing_utils.tiny_models import TINY_1D, inputs_1d, randomize, tiny_sit_pipeline

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN"),
]


def _sit():
    return randomize(SiTTransformer1DModel(**TINY_1D))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
@torch.no_grad()
def test_outputs_match_and_unpack_restores_them_exactly(dtype, tolerance):
    model = _sit().to(dtype)
    inputs = inputs_1d(model)
    inputs = (inputs[0].to(dtype), *inputs[1:])
    expected = model(*inputs).sample
    linears = sum(type(module) is nn.Linear for module in model.modules())
    assert prepack_linear_weights(model) == linears
    assert all(module.weight.is_mkldnn for module in model.modules() if type(module) is nn.Linear)
    packed = model(*inputs).sample
    assert packed.dtype == dtype
    assert (packed.float() - expected.float()).abs().max() <= tolerance * expected.float().abs().max()
    assert prepack_linear_weights(model) == 0  # already packed: nothing to do
    assert unpack_linear_weights(model) == linears
    assert not any(is_prepacked(module) for module in model.modules())
    assert torch.equal(model(*inputs).sample, expected)


@torch.no_grad()
def test_state_dict_and_save_pretrained_write_plain_weights(tmp_path):
    model = _sit()
    expected_state = {key: value.clone() for key, value in model.state_dict().items()}
    inputs = inputs_1d(model)
    expected = model(*inputs).sample
    prepack_linear_weights(model)
    state = model.state_dict()
    assert state.keys() == expected_state.keys()
    for key, value in state.items():
        assert not value.is_mkldnn, key
        assert torch.equal(value, expected_state[key]), key
    model.save_pretrained(tmp_path)
    reloaded = SiTTransformer1DModel.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(*inputs).sample, expected)


@torch.no_grad()
def test_pipeline_components_are_packed():
    pipe = tiny_sit_pipeline()
    expected = pipe(
        class_labels=[1, 2], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    packed = prepack_linear_weights(pipe)
    assert packed == sum(
        type(module) is nn.Linear for component in (pipe.vae, pipe.transformer) for module in component.modules()
    )
    images = pipe(
        class_labels=[1, 2], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)
    assert unpack_linear_weights(pipe) == packed


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@torch.no_grad()
def test_gelu_mlp_fuses_the_activation(approximate):
    torch.manual_seed(0)
    mlp = GELUMLP(24, 64, approximate=approximate).eval()
    hidden = torch.randn(2, 5, 24)
    expected = mlp(hidden)
    prepack_linear_weights(mlp)
    torch.testing.assert_close(mlp(hidden), expected, atol=1e-6, rtol=1e-5)


def test_tied_and_foreign_layers_are_left_alone():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight  # tied: the embedding reads the same tensor
            self.body = nn.Linear(8, 8)
            self.half = nn.Linear(8, 8).half()  # float16: not packed

    model = Tied()
    assert prepack_linear_weights(model, max_weight_bytes=8 * 8 * 4 - 1) == 0  # over the size limit: left plain
    assert prepack_linear_weights(model) == 1
    assert is_prepacked(model.body) and not is_prepacked(model.head) and not is_prepacked(model.half)
    assert model.head.weight is model.embed.weight and not model.embed.weight.is_mkldnn


def test_errors_name_the_layer():
    model = nn.Sequential(nn.Linear(8, 4))
    prepack_linear_weights(model)
    with pytest.raises(RuntimeError, match=r"0: prepacked linear weights have no backward.*unpack_linear_weights"):
        model(torch.randn(2, 8, requires_grad=True))
    with pytest.raises(
        ValueError, match=r"0: input of shape \(2, 7\) and dtype torch.float32 does not fit .*\[4, 8\]"
    ):
        model(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"dtype torch.bfloat16 does not fit"):
        model(torch.randn(2, 8, dtype=torch.bfloat16))
    with torch.no_grad():  # no grad needed: fine even for an input that requires grad
        assert model(torch.randn(2, 8, requires_grad=True)).shape == (2, 4)
    with pytest.raises(TypeError, match="expected an nn.Module or a pipeline"):
        prepack_linear_weights(object())


def test_unpacked_model_trains_again():
    model = _sit()
    reference = copy.deepcopy(model)
    prepack_linear_weights(model)
    unpack_linear_weights(model)
    inputs = inputs_1d(model)
    model(*inputs).sample.square().mean().backward()
    reference(*inputs).sample.square().mean().backward()
    for (name, parameter), expected in zip(model.named_parameters(), reference.parameters()):
        assert parameter.requires_grad and parameter.grad is not None, name
        torch.testing.assert_close(parameter.grad, expected.grad, msg=name)
