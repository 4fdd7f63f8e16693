"""bfloat16 CPU inference attention (``hf_vtok.modules.attention.attention``): blocked bfloat16 products instead of
SDPA's flash kernel, only where nothing but inference happens. Each test records which kernels ran (a dispatch
mode), so that "the blocked path ran" and "SDPA ran" are checked, not assumed."""

import pytest
import torch
import torch.nn.functional as F

from hf_vtok import SiTTransformer1DModel
from hf_vtok.modules import Attention
from hf_vtok.modules import attention as attention_module
from hf_vtok.modules.attention import attention
from tests.testing_utils.kernels import KernelCounter
from tests.testing_utils.tiny_models import TINY_1D, inputs_1d, randomize

pytestmark = pytest.mark.usefixtures("one_thread")

# bfloat16 rounding of the scores (before the softmax) and of the weights: about twice SDPA's bfloat16 error
# (~2e-3 relative, Frobenius) at these sizes; measured 3.4e-3 - 4.5e-3 (benchmarks/bench_attention.py)
BLOCKED_RELATIVE_ERROR = 1e-2


class _Kernels(KernelCounter):
    """SDPA kernel calls and batched matrix products that ran inside the ``with`` block."""

    @property
    def sdpa(self) -> int:
        return self.containing("scaled_dot_product")

    @property
    def bmm(self) -> int:
        return self.named("aten.bmm", "aten.matmul")


def _inputs(shape, dtype=torch.bfloat16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype) for _ in range(3)]


def _relative_error(output, query, key, value, mask=None, scale=None):
    reference = F.scaled_dot_product_attention(query.double(), key.double(), value.double(), mask, scale=scale)
    reference = reference.nan_to_num(0.0)  # fully masked rows: SDPA's CPU kernels give 0
    return float((output.double() - reference).norm() / reference.norm())


def _run(*args, **kwargs):
    with _Kernels() as kernels:
        output = attention(*args, **kwargs)
    return output, kernels


def _masks(batch, tokens, seed=1):
    generator = torch.Generator().manual_seed(seed)
    valid = torch.rand(batch, tokens, generator=generator) > 0.3
    valid[:, 0] = True
    pairwise = (valid[:, :, None] & valid[:, None, :]).unsqueeze(1)
    random_rows = torch.rand(batch, 1, tokens, tokens, generator=generator) > 0.5
    random_rows[:, :, 2] = False  # a fully masked row
    return {"none": None, "key padding": valid[:, None, None, :], "pairwise": pairwise, "rows": random_rows}


@pytest.mark.parametrize("mask_name", ["none", "key padding", "pairwise", "rows"])
@pytest.mark.parametrize("block_bytes", [256, 4 * 2**20], ids=["many blocks", "one block"])
def test_blocked_path_runs_and_matches_float64(monkeypatch, mask_name, block_bytes):
    monkeypatch.setattr(attention_module, "SCORE_BLOCK_BYTES", block_bytes)
    query, key, value = _inputs((2, 3, 37, 16))
    mask = _masks(2, 37)[mask_name]
    with torch.inference_mode():
        output, kernels = _run(query, key, value, mask, 0.3)
    assert kernels.sdpa == 0 and kernels.bmm > 0
    assert output.dtype == torch.bfloat16 and output.shape == query.shape
    assert torch.isfinite(output).all()
    assert _relative_error(output, query, key, value, mask, 0.3) < BLOCKED_RELATIVE_ERROR
    if mask_name == "rows":
        assert torch.all(output[:, :, 2] == 0)  # as SDPA's CPU kernels
        sdpa = F.scaled_dot_product_attention(query, key, value, mask, scale=0.3)
        assert torch.all(sdpa[:, :, 2] == 0)


def test_blocked_path_without_heads_dimension_and_default_scale():
    query, key, value = _inputs((2, 50, 8))
    with torch.no_grad():
        output, kernels = _run(query, key, value)
    assert kernels.sdpa == 0
    assert _relative_error(output, query, key, value) < BLOCKED_RELATIVE_ERROR


def _sdpa_cases():
    query, key, value = _inputs((1, 2, 9, 8))
    float_mask = torch.zeros(1, 1, 9, 9, dtype=torch.bfloat16)
    return {
        "float32": (_inputs((1, 2, 9, 8), torch.float32), {}),
        "float16": (_inputs((1, 2, 9, 8), torch.float16), {}),
        "float mask": ((query, key, value), {"attention_mask": float_mask}),
        "dropout": ((query, key, value), {"dropout": 0.5}),
        "broadcast key": ((query, key[:, :1], value[:, :1]), {}),
        "mask of other rows": ((query, key, value), {"attention_mask": torch.ones(1, 1, 3, 9, dtype=torch.bool)}),
    }


@pytest.mark.parametrize("case", sorted(_sdpa_cases()))
def test_sdpa_outside_bfloat16_inference(case):
    (query, key, value), kwargs = _sdpa_cases()[case]
    with torch.inference_mode():
        if case == "mask of other rows":
            with pytest.raises(RuntimeError):  # SDPA's own error for a mask that does not broadcast
                attention(query, key, value, **kwargs)
            return
        _, kernels = _run(query, key, value, **kwargs)
    assert kernels.sdpa == 1


def test_sdpa_when_switched_off_under_autocast_and_for_gradients(monkeypatch):
    query, key, value = _inputs((1, 2, 9, 8))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        assert _run(query, key, value)[1].sdpa == 1
    monkeypatch.setattr(attention_module, "FAST_ATTENTION", False)
    with torch.inference_mode():
        assert _run(query, key, value)[1].sdpa == 1
    monkeypatch.setattr(attention_module, "FAST_ATTENTION", True)
    query.requires_grad_(True)
    output, kernels = _run(query, key, value)
    assert kernels.sdpa == 1
    output.float().sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all()
    with torch.no_grad():  # nothing recorded: the blocked path again
        assert _run(query, key, value)[1].sdpa == 0


def test_attention_layer_training_keeps_sdpa_and_dropout():
    layer = Attention(16, 2, attention_dropout=0.5).to(torch.bfloat16)
    hidden = torch.randn(2, 7, 16, dtype=torch.bfloat16)
    torch.manual_seed(0)
    first = layer.train()(hidden)
    first.float().sum().backward()
    assert layer.qkv_proj.weight.grad is not None
    assert not torch.equal(first, layer(hidden))  # SDPA's dropout, drawn anew
    with torch.inference_mode(), _Kernels() as kernels:
        layer.eval()(hidden)
    assert kernels.sdpa == 0


def test_compiled_attention_layer_in_bfloat16():
    layer = Attention(16, 2).to(torch.bfloat16).eval()
    hidden = torch.randn(2, 7, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        eager = layer(hidden)
        compiled = torch.compile(layer, fullgraph=True, backend="eager")(hidden)
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)


def test_bfloat16_model_output_with_and_without_blocked_attention(monkeypatch):
    model = randomize(SiTTransformer1DModel(**TINY_1D)).eval()
    inputs = inputs_1d(model)
    with torch.inference_mode():
        reference = model(*inputs).sample.double()
        model = model.to(torch.bfloat16)
        inputs = [tensor.bfloat16() if tensor.is_floating_point() else tensor for tensor in inputs]
        with _Kernels() as kernels:
            blocked = model(*inputs).sample.double()
        assert kernels.sdpa == 0
        monkeypatch.setattr(attention_module, "FAST_ATTENTION", False)
        with _Kernels() as kernels:
            sdpa = model(*inputs).sample.double()
        assert kernels.sdpa > 0
    blocked_error = float((blocked - reference).norm() / reference.norm())
    sdpa_error = float((sdpa - reference).norm() / reference.norm())
    assert blocked_error < max(2 * sdpa_error, 1e-2), (blocked_error, sdpa_error)
