"""Shared layers: RoPE, attention masks, SwiGLU, norms, patching, residual-path layers."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_vtok.modules import (
    GELUMLP,
    AdaLNModulation,
    Attention,
    DropPath,
    FP32LayerNorm,
    RMSNorm,
    SwiGLU,
    apply_rotary_embedding,
    gated_residual,
    joint_attention,
    modulate,
    padding_attention_mask,
    patchify,
    rope_tables,
    rope_tables_2d,
    rounded_hidden_size,
    scatter_to_canvas,
    unpatchify,
)


def test_rope_scores_depend_only_on_relative_position():
    query, key = torch.randn(2, 16), torch.randn(2, 16)

    def score(query_position, key_position):
        cos_q, sin_q = rope_tables_2d(torch.tensor(query_position[0]), torch.tensor(query_position[1]), 16)
        cos_k, sin_k = rope_tables_2d(torch.tensor(key_position[0]), torch.tensor(key_position[1]), 16)
        return (apply_rotary_embedding(query, cos_q, sin_q) * apply_rotary_embedding(key, cos_k, sin_k)).sum(-1)

    torch.testing.assert_close(score((3, 5), (1, 2)), score((7, 9), (5, 6)), atol=1e-5, rtol=0)
    assert not torch.allclose(score((3, 5), (1, 2)), score((3, 5), (2, 1)))


def test_rope_layouts_and_table_structure():
    cos, sin = rope_tables(torch.tensor([[2.0, 3.0, 5.0]]), (4, 8, 8), theta=100.0)
    assert cos.shape == (1, 10)
    angles = torch.cat(
        [
            2.0 / 100.0 ** (torch.arange(0, 4, 2) / 4),
            3.0 / 100.0 ** (torch.arange(0, 8, 2) / 8),
            5.0 / 100.0 ** (torch.arange(0, 8, 2) / 8),
        ]
    )
    torch.testing.assert_close(cos[0], angles.cos()) and torch.testing.assert_close(sin[0], angles.sin())
    vector = torch.randn(20)
    interleaved = apply_rotary_embedding(vector, cos[0], sin[0], "interleaved")
    order = torch.cat([torch.arange(0, 20, 2), torch.arange(1, 20, 2)])  # pairs (2i, 2i+1) -> (i, i + D/2)
    half = apply_rotary_embedding(vector[order], cos[0], sin[0], "half")
    torch.testing.assert_close(half, interleaved[order])
    assert torch.allclose(interleaved.norm(), vector.norm())
    with pytest.raises(ValueError, match="one entry per axis"):
        rope_tables(torch.zeros(4, 2), (4, 4, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_tables_2d(torch.zeros(3), torch.zeros(3), 6)
    with pytest.raises(ValueError, match="unknown RoPE layout"):
        apply_rotary_embedding(vector, cos[0], sin[0], "complex")


def _textbook_rotation(hidden, cos, sin, layout):
    """The rotation written out on the two halves of each pair (the originals' form)."""
    if layout == "interleaved":
        real, imag = hidden[..., 0::2], hidden[..., 1::2]
        return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)
    real, imag = hidden.chunk(2, dim=-1)
    return torch.cat((real * cos - imag * sin, real * sin + imag * cos), dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_fast_paths_match_the_textbook_rotation(dtype, layout):
    torch.manual_seed(0)
    qkv = torch.randn(2, 7, 3, 4, 16, dtype=dtype)  # q / k as the strided views Attention rotates
    query, key = qkv.permute(2, 0, 3, 1, 4)[:2]
    cos, sin = rope_tables(torch.randint(0, 50, (7, 2)), (8, 8))
    for hidden in (query, key, query.contiguous()[..., 1:15]):  # the last: odd offset, falls back to a copy
        half = hidden.shape[-1] // 2
        expected = _textbook_rotation(hidden, cos[:, :half].to(dtype), sin[:, :half].to(dtype), layout)
        rotated = apply_rotary_embedding(hidden, cos[:, :half], sin[:, :half], layout)
        if layout == "interleaved" and dtype != torch.bfloat16:  # one complex multiply: may fuse a multiply-add
            torch.testing.assert_close(rotated, expected, rtol=0, atol=4 * torch.finfo(dtype).eps * hidden.abs().max())
        else:  # the same operations in the same order
            assert torch.equal(rotated, expected)


def test_reduced_precision_norms_and_modulation_accumulate_in_float32():
    torch.manual_seed(0)
    hidden = (torch.randn(3, 5, 64) * 10).bfloat16()
    norm = RMSNorm(64).bfloat16()
    with torch.no_grad():
        norm.weight.normal_()
    assert torch.equal(norm(hidden), F.rms_norm(hidden.float(), (64,), norm.weight.float(), 1e-6).bfloat16())
    layer_norm = FP32LayerNorm(64, eps=1e-6).bfloat16()
    expected = F.layer_norm(hidden.float(), (64,), eps=1e-6).bfloat16()
    assert (layer_norm(hidden).float() - expected.float()).abs().max() <= 2**-6  # one bf16 step at |x| < 4
    shift, scale = torch.randn(3, 1, 64), torch.randn(3, 1, 64)
    exact = hidden.float() * (1 + scale.bfloat16()).float() + shift.bfloat16().float()
    fused = modulate(hidden, shift.bfloat16(), scale.bfloat16())
    assert fused.dtype == torch.bfloat16 and torch.equal(fused, exact.bfloat16())  # one rounding
    torch.testing.assert_close(
        gated_residual(hidden, scale.bfloat16(), hidden), hidden + scale.bfloat16() * hidden, atol=0.3, rtol=0.02
    )
    assert torch.equal(gated_residual(hidden.float(), scale, hidden.float()), hidden.float() + scale * hidden.float())


def test_attention_matches_a_written_out_reference_and_masks():
    torch.manual_seed(0)
    attention = Attention(32, 4, qk_norm=True)
    hidden = torch.randn(2, 5, 32)
    cos, sin = rope_tables_2d(torch.arange(5).expand(2, 5), torch.zeros(2, 5, dtype=torch.long), 8)
    qkv = attention.qkv_proj(hidden).view(2, 5, 3, 4, 8)
    query, key, value = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    query = apply_rotary_embedding(F.rms_norm(query, (8,), attention.q_norm.weight, 1e-6), cos[:, None], sin[:, None])
    key = apply_rotary_embedding(F.rms_norm(key, (8,), attention.k_norm.weight, 1e-6), cos[:, None], sin[:, None])
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    scores = query @ key.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    expected = attention.out_proj((scores.softmax(-1) @ value).transpose(1, 2).reshape(2, 5, 32))
    actual = attention(hidden, (cos, sin), padding_attention_mask(valid))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    pairwise = padding_attention_mask(valid, pairwise=True)
    assert pairwise.shape == (2, 1, 5, 5) and not pairwise[1, 0, 4].any() and pairwise[1, 0, 0, :3].all()
    assert padding_attention_mask(None) is None
    with pytest.raises(ValueError, match="not divisible"):
        Attention(30, 4)


def test_swiglu_gelu_and_rounding():
    swiglu = SwiGLU(8, 12)
    hidden = torch.randn(3, 8)
    value, gate = swiglu.fc1(hidden).split(12, -1)
    torch.testing.assert_close(swiglu(hidden), swiglu.fc2(F.silu(gate) * value))
    swiglu.gate_first = True
    torch.testing.assert_close(swiglu(hidden), swiglu.fc2(F.silu(value) * gate))
    gelu = GELUMLP(8, 16, approximate="tanh")
    torch.testing.assert_close(gelu(hidden), gelu.fc2(F.gelu(gelu.fc1(hidden), approximate="tanh")))
    assert rounded_hidden_size(1024, 2.67) == 2736 and rounded_hidden_size(3072, 2.67) == 8208


def test_norms_compute_in_float32():
    hidden = (torch.randn(4, 64) * 100).bfloat16()
    norm = RMSNorm(64)
    expected = F.rms_norm(hidden.float(), (64,), norm.weight, 1e-6).bfloat16()
    assert norm(hidden).dtype == torch.bfloat16 and torch.equal(norm(hidden), expected)
    layer_norm = FP32LayerNorm(64, eps=1e-6, elementwise_affine=False)
    torch.testing.assert_close(layer_norm(hidden.float()), F.layer_norm(hidden.float(), (64,), eps=1e-6))
    assert RMSNorm(8, elementwise_affine=False).weight is None


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_patchify_round_trip(layout):
    images = torch.randn(2, 3, 16, 24)
    tokens = patchify(images, 8, layout)
    assert tokens.shape == (2, 6, 192)
    torch.testing.assert_close(unpatchify(tokens, (2, 3), 8, 3, layout), images)
    if layout == "channels_first":  # (c, y, x) within a token, raster order over the grid = F.unfold
        torch.testing.assert_close(tokens, F.unfold(images, 8, stride=8).transpose(1, 2))
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        patchify(torch.zeros(1, 3, 10, 16), 8)
    with pytest.raises(ValueError, match="unknown patch layout"):
        patchify(images, 8, "planar")


def test_scatter_to_canvas_places_valid_tokens_only():
    tokens = torch.arange(1, 4).float().view(1, 3, 1).expand(1, 3, 3).contiguous()
    canvas = scatter_to_canvas(
        tokens, torch.tensor([[True, True, False]]), torch.tensor([[0, 1, 0]]), torch.tensor([[1, 0, 0]]), (2, 2), 1
    )
    assert canvas[0, 0].tolist() == [[0.0, 1.0], [2.0, 0.0]]
    with pytest.raises(ValueError, match="exceed the 2x2 canvas"):
        scatter_to_canvas(
            tokens,
            torch.ones(1, 3, dtype=torch.bool),
            torch.tensor([[0, 5, 0]]),
            torch.zeros(1, 3, dtype=torch.long),
            (2, 2),
            1,
        )


def test_drop_path_and_modulate():
    hidden = torch.ones(1000, 4)
    drop = DropPath(0.25)
    assert torch.equal(drop.eval()(hidden), hidden)
    dropped = drop.train()(hidden)
    assert set(dropped[:, 0].unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert 0.15 < (dropped[:, 0] == 0).float().mean() < 0.35
    assert torch.all(dropped == dropped[:, :1])  # whole samples are dropped
    torch.testing.assert_close(
        modulate(torch.ones(2, 3), torch.full((2, 3), 0.5), torch.full((2, 3), 2.0)), torch.full((2, 3), 3.5)
    )


def test_joint_attention_is_attention_over_the_joint_sequence():
    torch.manual_seed(0)
    layers = [Attention(32, 4, qkv_bias=True, out_bias=True, qk_norm=True, scale=0.3) for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    first, second = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    tables = [rope_tables(torch.randint(0, 9, (length, 3)), (2, 2, 4)) for length in (5, 7)]
    out_first, out_second = joint_attention(layers, (first, second), tables)
    joint_tables = tuple(torch.cat(parts) for parts in zip(*tables))
    reference = layers[0](torch.cat([first, second], 1), joint_tables)
    torch.testing.assert_close(torch.cat([out_first, out_second], 1), reference, atol=1e-5, rtol=0)
    layers[1].qkv_proj.weight.data.add_(0.1)  # streams really use their own weights
    assert not torch.allclose(joint_attention(layers, (first, second), tables)[0], out_first)
    with pytest.raises(ValueError, match="one attention layer, state and rotary entry per stream"):
        joint_attention(layers, (first,), tables)
    with pytest.raises(ValueError, match="share heads"):
        joint_attention([layers[0], Attention(32, 2)], (first, second), tables)


def test_rope_float64_angles_and_float32_rotation():
    positions = torch.tensor([[4095.0, 255.0, 31.0]])
    cos32, sin32 = rope_tables(positions, (8, 28, 28))
    cos64, sin64 = rope_tables(positions, (8, 28, 28), angle_dtype=torch.float64)
    assert cos64.dtype == torch.float32
    inv = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    torch.testing.assert_close(cos64[0, :4], (4095.0 * inv).cos().float(), atol=0, rtol=0)
    assert (cos32 - cos64).abs().max() > 0  # float32 angles drift at large positions
    hidden = torch.randn(3, 64, dtype=torch.bfloat16)
    rotated = apply_rotary_embedding(hidden, cos64, sin64, compute_dtype=torch.float32)
    expected = apply_rotary_embedding(hidden.float(), cos64, sin64).to(torch.bfloat16)
    assert rotated.dtype == torch.bfloat16 and torch.equal(rotated, expected)


def test_adaln_modulation_chunks_and_zero_init():
    modulation = AdaLNModulation(8, 6, zero_init_chunks=(2, 5))
    chunks = modulation(torch.randn(3, 8))
    assert len(chunks) == 6 and all(chunk.shape == (3, 1, 8) for chunk in chunks)
    assert torch.all(chunks[2] == 0) and torch.all(chunks[5] == 0) and not torch.all(chunks[0] == 0)
    with pytest.raises(ValueError, match="out of range"):
        AdaLNModulation(8, 2, zero_init_chunks=(2,))


def test_eager_float32_attention_matches_sdpa():
    from hf_vtok.modules import Attention

    attention = Attention(16, 2, qkv_bias=True, eager_float32=True)
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([True, True, True, False, False])[None, None, None].expand(2, 1, 5, 5)
    for attention_mask in (None, mask):
        eager = attention(hidden, attention_mask=attention_mask)
        attention.eager_float32 = False
        torch.testing.assert_close(eager, attention(hidden, attention_mask=attention_mask))
        attention.eager_float32 = True
