"""Fast linear layers by default (``hf_vtok.utils.prepack.enable_fast_linear``): every model's ``nn.Linear`` runs
oneDNN on its plain weight where only inference happens, and nothing else about the model changes. Each test
compares a routed model with a copy whose routing is removed (``disable_fast_linear``: plain ``F.linear``) and
records which kernels ran (a dispatch mode), so that "the mechanism stayed out of the way" is checked, not assumed.

``MIN_ONEDNN_MACS`` is lowered to 0 here (the ``small_threshold`` fixture) so that tiny models take the oneDNN
path; the real threshold is checked on a layer big enough to pass it.
"""

import copy
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad

from hf_vtok import SiTTransformer1DModel, ViTokConfig, ViTokModel, prepack_linear_weights, unpack_linear_weights
from hf_vtok.modules import GELUMLP
from hf_vtok.utils import prepack
from hf_vtok.utils.prepack import disable_fast_linear, enable_fast_linear, is_fast_linear, linear_gelu
from tests.conftest import REPO_ROOT
from tests.testing_utils.kernels import KernelCounter
from tests.testing_utils.tiny_models import TINY_1D, TINY_VITOK_VARIANT, inputs_1d, randomize, tiny_sit_pipeline

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN"),
]

ONEDNN = "mkldnn._linear_pointwise"
RTOL = 1e-5  # oneDNN sums in another order than MKL: ~1e-6 relative in float32


class _Kernels(KernelCounter):
    """The oneDNN linear calls and the plain (MKL) matmuls that ran inside the ``with`` block."""

    @property
    def onednn(self) -> int:
        return self.containing(ONEDNN)

    @property
    def plain(self) -> int:
        return self.named("aten.addmm", "aten.mm", "aten.bmm", "aten.linear")


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(prepack, "MIN_ONEDNN_MACS", 0)


def _sit():
    return randomize(SiTTransformer1DModel(**TINY_1D))


def _plain_copy(model):
    reference = copy.deepcopy(model)
    assert disable_fast_linear(reference) > 0
    return reference


def _linears(model):
    return [module for module in model.modules() if type(module) is nn.Linear]


def _close(actual, expected, rtol=RTOL):
    scale = expected.float().abs().max()
    error = (actual.float() - expected.float()).abs().max()
    assert error <= rtol * scale, f"max error {error:.3g} > {rtol} x max |expected| {scale:.3g}"


def test_every_model_routes_its_linears_at_construction():
    for model in (_sit(), ViTokModel(ViTokConfig.from_variant(TINY_VITOK_VARIANT)), tiny_sit_pipeline().vae):
        linears = _linears(model)
        assert linears and all(is_fast_linear(layer) for layer in linears), type(model).__name__
    assert enable_fast_linear(model) == 0  # already routed


@pytest.mark.usefixtures("small_threshold")
@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "nothing_requires_grad"])
def test_inference_runs_onednn_and_matches_f_linear(mode):
    model = _sit()
    reference = _plain_copy(model)
    inputs = inputs_1d(model)
    if mode == "nothing_requires_grad":
        for network in (model, reference):
            network.requires_grad_(False)
    context = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}.get(mode, torch.enable_grad)
    with context():
        expected = reference(*inputs).sample
        with _Kernels() as kernels:
            actual = model(*inputs).sample
    assert kernels.onednn == len(_linears(model))
    _close(actual, expected)


@pytest.mark.usefixtures("small_threshold")
def test_training_and_gradients_are_unchanged():
    model = _sit().train()
    reference = _plain_copy(model).train()
    inputs = inputs_1d(model)
    torch.manual_seed(0)  # the same label dropout on both sides
    with _Kernels() as kernels:
        loss = model(*inputs).sample.square().mean()
    assert kernels.onednn == 0 and kernels.plain > 0
    loss.backward()
    torch.manual_seed(0)
    reference(*inputs).sample.square().mean().backward()
    for (name, parameter), expected in zip(model.named_parameters(), reference.parameters()):
        assert torch.equal(parameter.grad, expected.grad), name
    # frozen weights, an input that requires grad: the layers on its path are differentiated through F.linear
    # (the conditioning path, which needs no gradient, may take oneDNN)
    grads = []
    for network in (model, reference):
        network.requires_grad_(False)
        hidden = inputs[0].clone().requires_grad_(True)
        torch.manual_seed(0)
        network(hidden, *inputs[1:]).sample.sum().backward()
        grads.append(hidden.grad)
    assert grads[0].abs().sum() > 0
    _close(grads[0], grads[1], rtol=1e-4)  # oneDNN's rounding on the conditioning, through the backward


@pytest.mark.usefixtures("small_threshold")
def test_autocast_forward_ad_and_functorch_fall_back():
    layer = nn.Linear(8, 16)
    enable_fast_linear(layer)
    hidden = torch.randn(4, 8)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        assert layer(hidden).dtype == torch.bfloat16  # what autocast makes of F.linear
    tangent = torch.randn(4, 8)
    with forward_ad.dual_level():
        output = layer(forward_ad.make_dual(hidden, tangent))
        assert torch.allclose(forward_ad.unpack_dual(output).tangent, tangent @ layer.weight.T, atol=1e-6)
    _, jvp = torch.func.jvp(layer, (hidden,), (tangent,))
    assert torch.allclose(jvp, tangent @ layer.weight.T, atol=1e-6)
    with torch.no_grad():
        batched = torch.func.vmap(layer)(hidden[None].expand(3, 4, 8))
    assert torch.allclose(batched[1], F.linear(hidden, layer.weight, layer.bias), atol=1e-6)


@pytest.mark.usefixtures("small_threshold")
def test_to_state_dict_and_load_state_dict_are_unchanged(tmp_path):
    model = _sit()
    reference = _plain_copy(model)
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(value, reference.state_dict()[key]) for key, value in model.state_dict().items())
    # load_state_dict: the routed layers read the new weights
    other = randomize(SiTTransformer1DModel(**TINY_1D), seed=1)
    model.load_state_dict(other.state_dict())
    reference.load_state_dict(other.state_dict())
    inputs = inputs_1d(model)
    with torch.inference_mode():
        _close(model(*inputs).sample, reference(*inputs).sample)
    # .to(): still routed to the same layer, in the new dtype
    model.to(torch.bfloat16)
    reference.to(torch.bfloat16)
    assert all(is_fast_linear(layer) and layer.weight.dtype == torch.bfloat16 for layer in _linears(model))
    bf16_inputs = (inputs[0].bfloat16(), *inputs[1:])
    with torch.inference_mode(), _Kernels() as kernels:
        actual = model(*bf16_inputs).sample
    assert kernels.onednn > 0
    with torch.inference_mode():
        _close(actual, reference(*bf16_inputs).sample, rtol=5e-2)
    # save_pretrained / from_pretrained: plain weights on disk, the reloaded model routed again
    model.to(torch.float32).save_pretrained(tmp_path)
    reloaded = SiTTransformer1DModel.from_pretrained(tmp_path).eval()
    assert all(is_fast_linear(layer) for layer in _linears(reloaded))
    with torch.inference_mode():
        assert torch.equal(reloaded(*inputs).sample, model(*inputs).sample)


@pytest.mark.usefixtures("small_threshold")
def test_deepcopy_and_pickle_rebind_the_forward():
    model = _sit()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        for layer, original in zip(_linears(clone), _linears(model)):
            assert is_fast_linear(layer) and layer.forward.args[0] is layer is not original
        with torch.no_grad():
            for parameter in clone.parameters():
                parameter.zero_()
        inputs = inputs_1d(model)
        with torch.inference_mode():  # the clone runs its own (zeroed) weights, the original keeps its own
            assert clone(*inputs).sample.abs().max() == 0
            assert model(*inputs).sample.abs().max() > 0


@pytest.mark.usefixtures("small_threshold")
def test_peft_lora_trains_and_infers_as_without_routing():
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=2, lora_alpha=2, target_modules=["qkv_proj", "fc1"], init_lora_weights=False)
    model = _sit()
    reference = _plain_copy(model)
    for network in (model, reference):
        torch.manual_seed(0)
        network.add_adapter(config)
    inputs = inputs_1d(model)
    for network in (model, reference):
        torch.manual_seed(0)  # the same label dropout on both sides
        network.train()(*inputs).sample.square().mean().backward()
    lora = [(name, p) for name, p in model.named_parameters() if "lora_" in name]
    assert lora and all(p.grad is not None for _, p in lora)
    for parameter, expected in zip(model.parameters(), reference.parameters()):
        if parameter.grad is not None:
            _close(parameter.grad, expected.grad, rtol=1e-4)  # the frozen conditioning path may take oneDNN
    model.eval(), reference.eval()
    with torch.inference_mode():
        _close(model(*inputs).sample, reference(*inputs).sample)


@pytest.mark.usefixtures("small_threshold")
def test_torch_compile_sees_plain_linears():
    model = _sit()
    inputs = inputs_1d(model)
    targets = []

    def recording_backend(graph_module, example_inputs):
        targets.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=recording_backend, fullgraph=True)
    with torch.inference_mode():
        expected = model(*inputs).sample
        actual = compiled(*inputs).sample
    assert targets and not any("mkldnn" in target for target in targets)
    assert any("linear" in target for target in targets)
    _close(actual, expected)
    torch._dynamo.reset()


@pytest.mark.usefixtures("small_threshold")
def test_pipeline_matches_the_plain_path():
    pipe = tiny_sit_pipeline()
    kwargs = dict(class_labels=[1, 2], num_inference_steps=3, output_type="pt")
    expected_pipe = copy.deepcopy(pipe)
    for component in (expected_pipe.vae, expected_pipe.transformer):
        disable_fast_linear(component)
    expected = expected_pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    with _Kernels() as kernels:
        images = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert kernels.onednn > 0
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, RTOL), (torch.bfloat16, 1e-2)])
@torch.inference_mode()
def test_real_threshold_big_layer_matches_f_linear_and_gelu(dtype, rtol):
    torch.manual_seed(0)
    big = nn.Linear(512, 512).to(dtype)
    small = nn.Linear(64, 64).to(dtype)
    for layer in (big, small):
        enable_fast_linear(layer)
    hidden = torch.randn(2, 64, 512, dtype=dtype)  # 2^25 multiply-adds: over MIN_ONEDNN_MACS
    with _Kernels() as kernels:
        actual = big(hidden)
    assert kernels.onednn == 1
    _close(actual, F.linear(hidden, big.weight, big.bias), rtol)
    for approximate in ("none", "tanh"):
        with _Kernels() as kernels:
            fused = linear_gelu(big, hidden, approximate)
        assert kernels.onednn == 1
        _close(fused, F.gelu(F.linear(hidden, big.weight, big.bias), approximate=approximate), rtol)
    small_hidden = torch.randn(4, 64, dtype=dtype)  # under the threshold: F.linear itself, bit for bit
    with _Kernels() as kernels:
        assert torch.equal(small(small_hidden), F.linear(small_hidden, small.weight, small.bias))
    assert kernels.onednn == 0


@pytest.mark.usefixtures("small_threshold")
def test_wrapped_or_hooked_layers_are_called_as_they_are():
    torch.manual_seed(0)
    mlp = GELUMLP(24, 64).eval()
    hidden = torch.randn(2, 5, 24)
    calls = []
    handle = mlp.fc1.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    with torch.inference_mode():
        mlp(hidden)
    assert calls == [(2, 5, 64)]  # no fusion that would skip the hook
    handle.remove()
    original = mlp.fc1.forward
    mlp.fc1.forward = lambda x: original(x) * 0  # another library's wrapper (accelerate-style)
    assert not is_fast_linear(mlp.fc1)
    with torch.inference_mode():
        torch.testing.assert_close(mlp(hidden), mlp.fc2(torch.zeros(2, 5, 64)))


@pytest.mark.usefixtures("small_threshold")
def test_prepack_on_a_routed_model_and_back():
    model = _sit()
    inputs = inputs_1d(model)
    with torch.inference_mode():
        expected = model(*inputs).sample
    packed = prepack_linear_weights(model)
    assert packed == len(_linears(model))
    assert unpack_linear_weights(model) == packed
    assert all(is_fast_linear(layer) for layer in _linears(model))  # routing installed at construction stays
    with torch.inference_mode():
        _close(model(*inputs).sample, expected)


def test_environment_switch_turns_it_off():
    script = (
        "import torch\n"
        "from hf_vtok import SiTTransformer1DModel\n"
        "from hf_vtok.utils import prepack\n"
        "from tests.testing_utils.tiny_models import TINY_1D\n"
        "model = SiTTransformer1DModel(**TINY_1D)\n"
        "layer = torch.nn.Linear(512, 512)\n"
        "print(prepack.FAST_LINEAR, any(prepack.is_fast_linear(m) for m in model.modules()),\n"
        "      prepack.enable_fast_linear(layer), prepack.onednn_eligible(layer, torch.randn(128, 512)))\n"
    )
    env = dict(
        os.environ, HF_VTOK_FAST_LINEAR="0", PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "0", "False"]
