"""benchmarks/common.py (FLOP counting, JSON, BASELINES.md parsing, memory) and smoke runs of the benchmark scripts
on tiny configurations."""

import json
import sys
import time
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402  (benchmarks/ is put on sys.path above)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_count_flops_matmul_conv_and_attention():
    left, right = torch.randn(3, 5), torch.randn(5, 7)
    assert common.count_flops(lambda: left @ right) == 2 * 3 * 5 * 7

    conv = torch.nn.Conv2d(4, 6, kernel_size=3, padding=1)
    images = torch.randn(2, 4, 8, 8)
    assert common.count_flops(lambda: conv(images)) == 2 * (2 * 6 * 8 * 8) * (4 * 3 * 3)

    batch, heads, queries, keys, dim = 2, 3, 5, 7, 8
    query = torch.randn(batch, heads, queries, dim)
    key, value = torch.randn(batch, heads, keys, dim), torch.randn(batch, heads, keys, dim)
    attention = torch.nn.functional.scaled_dot_product_attention
    # scores and weighted sum: two batched matmuls, whichever SDPA kernel runs (the CPU flash one included)
    assert common.count_flops(lambda: attention(query, key, value)) == 2 * (2 * batch * heads * queries * keys * dim)


def test_count_flops_inputs_that_require_grad_in_inference_mode():
    # a parameter view handed to a module (V²Flow's unconditional embedding) broke FlopCounterMode's module tracker
    embedding = torch.nn.Parameter(torch.randn(1, 4))
    linear = torch.nn.Linear(4, 6)
    with torch.inference_mode():
        assert common.count_flops(lambda: linear(embedding.expand(3, -1))) == 2 * 3 * 4 * 6


def test_matmul_peak_and_rate_figures():
    assert common.matmul_peak(torch.float32, size=64, repeats=2) > 0
    figures = common.rate_figures(flops=4e9, seconds=2.0, images=4, peak_flops=4e9)
    assert figures == {"seconds": 2.0, "images_per_s": 2.0, "gflop": 4.0, "gflop_per_s": 2.0, "peak_fraction": 0.5}
    assert common.rate_figures(1.0, 1.0, 1, None)["peak_fraction"] is None


def test_write_json_round_trip(tmp_path):
    payload = {"rows": [{"config": "x", "seconds": 0.25, "peak_fraction": None}], "matmul_peak_flops": {"fp32": 1e11}}
    path = tmp_path / "figures.json"
    common.write_json(str(path), payload)
    assert json.loads(path.read_text()) == payload
    common.write_json(None, payload)  # no path: nothing written, no error


def test_read_baselines_parses_rows_cells_and_peaks(tmp_path):
    table = tmp_path / "BASELINES.md"
    table.write_text(
        "matmul peak in the same runs: fp32 ~192 GFLOP/s (178-201), bf16 ~778 GFLOP/s\n\n"
        "| config | batch | dtype | s/call | img/s | GFLOP/call | GFLOP/s | % peak | RSS GB |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| Model encode / decode | 4 | fp32 | 5.112 / 4.593 | 0.78 / 0.87 | 818 | 160 / 178 | 83 / 93 | 3.0 |\n"
    )
    rows, peaks = common.read_baselines(table)
    assert peaks == {"fp32": 192e9, "bf16": 778e9}
    assert rows[("Model encode / decode", 4, "fp32")][3] == "5.112 / 4.593"
    assert common._number("5.112 / 4.593", 1) == 4.593
    assert common._number("~173", 0) == 173
    assert common._number("—", 0) is None


def test_baseline_figures_of_the_shared_table():
    if not common.BASELINES.is_file():
        pytest.skip(f"no {common.BASELINES}")
    rows, _ = common.read_baselines()
    assert rows, "BASELINES.md parsed to no rows"
    (name, batch, dtype), cells = next(iter(rows.items()))
    figures = common.baseline_figures(name, batch, dtype)
    assert figures["seconds"] == common._number(cells[3], 0) > 0
    assert figures["peak_fraction"] == pytest.approx(common._number(cells[7], 0) / 100)
    assert figures["peak_flops"] > 0
    assert common.baseline_figures(["no such row", name], batch, dtype) == figures
    assert common.baseline_figures("no such row", batch, dtype) is None


def test_dtype_names_and_overrides():
    names = [common.dtype_name(name) for name in ("bfloat16", "bf16", "float32", "fp16")]
    assert names == ["bf16", "bf16", "fp32", "fp16"]
    assert set(common.dtype_choices(common.DTYPES)) == {"fp32", "bf16", "float32", "bfloat16"}
    assert common.parse_overrides(["num_layers=2", "mlp_ratio=2.5", "flow_method=CondOT", "axes=[8, 12]"]) == {
        "num_layers": 2, "mlp_ratio": 2.5, "flow_method": "CondOT", "axes": [8, 12],
    }  # fmt: skip
    with pytest.raises(ValueError, match="KEY=VALUE"):
        common.parse_overrides(["num_layers"])


def test_peak_memory_sees_an_allocation_freed_inside_the_block():
    before = common.resident_set_bytes()
    with common.PeakMemory("cpu", interval=0.001) as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        time.sleep(0.02)  # a few samples while it lives
        del block
    assert memory.peak_bytes - before >= 48 * 2**20
    assert memory.gb == memory.peak_bytes / 1024**3


# --------------------------------------------------------------------------------------------------
# the scripts, on tiny configurations (the matmul peak is faked: it takes seconds to measure)
@pytest.fixture
def fake_peak(monkeypatch):
    monkeypatch.setattr(common, "matmul_peak", lambda dtype, device="cpu", **kwargs: 1e11)


def _check_rows(rows, count, json_path):
    assert len(rows) == count
    for row in rows:
        assert row["gflop"] > 0 and row["gflop_per_s"] > 0 and row["images_per_s"] > 0
        assert row["peak_fraction"] == pytest.approx(row["gflop_per_s"] * 1e9 / 1e11)
    assert len(json.loads(json_path.read_text())["rows"]) == count


def test_bench_continuous_smoke(tmp_path, fake_peak):
    import bench_continuous

    tiny = ["image_size=32", "encoder_num_layers=1", "decoder_num_layers=1"]
    out = tmp_path / "continuous.json"
    rows = bench_continuous.main(
        [
            "--models",
            "maetok-b-128",
            "--dtypes",
            "float32",
            "--set",
            *tiny,
            "--warmup",
            "1",
            "--iterations",
            "1",
            "--threads",
            "1",
            "--in-process",
            "--json",
            str(out),
        ]
    )
    _check_rows(rows, 2, out)
    assert [row["stage"] for row in rows] == ["encode", "decode"] and rows[0]["original_seconds"] is None


def test_bench_generation_smoke(tmp_path, fake_peak):
    import bench_generation

    tiny = [
        "num_layers=1",
        "hidden_size=32",
        "num_attention_heads=2",
        "tokenizer.image_size=32",
        "tokenizer.encoder_num_layers=1",
        "tokenizer.decoder_num_layers=1",
        "tokenizer.encoder_hidden_size=64",
        "tokenizer.decoder_hidden_size=64",
        "tokenizer.encoder_num_heads=2",
        "tokenizer.decoder_num_heads=2",
    ]
    out = tmp_path / "generation.json"
    rows = bench_generation.main(
        [
            "--models",
            "sit-xl",
            "--tokens",
            "8",
            "--channels",
            "4",
            "--steps",
            "3",
            "--batch-sizes",
            "1",
            "--dtypes",
            "fp32",
            "--threads",
            "1",
            "--set",
            *tiny,
            "--json",
            str(out),
        ]
    )
    _check_rows(rows, 1, out)


def test_bench_generation_flops_scale_with_steps(fake_peak):
    import bench_generation

    overrides = {"num_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "tokenizer.image_size": 32,
                 "tokenizer.encoder_num_layers": 1, "tokenizer.decoder_num_layers": 1}  # fmt: skip
    pipe = bench_generation.build_pipeline("dit-xl", 8, 4, "cpu", torch.float32, overrides)
    counted = bench_generation.measure(pipe, 2, 4, 1.75, "cpu")["flops"]
    assert counted == common.count_flops(lambda: bench_generation.generate(pipe, 2, 4, 1.75))


def test_bench_v2flow_smoke(tmp_path, fake_peak):
    import bench_v2flow

    tiny = [
        "latent_channels=4",
        "sample_size=4",
        "vae_downsample_factor=2",
        "connector_hidden_size=8",
        "connector_depth=1",
        "hidden_size=16",
        "encoder_num_layers=1",
        "decoder_num_layers=1",
        "num_attention_heads=2",
        "flow_head_width=16",
        "flow_head_depth=1",
    ]
    out = tmp_path / "v2flow.json"
    rows = bench_v2flow.main(
        [
            "--dtypes",
            "fp32",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--llm-vocab-size",
            "20",
            "--llm-embed-dim",
            "12",
            "--codebook-size",
            "16",
            "--set",
            *tiny,
            "--json",
            str(out),
        ]
    )
    _check_rows(rows, 2, out)
    detokenize = rows[1]
    assert (
        detokenize["stage"] == "detokenize" and detokenize["mar_seconds"] > 0 and detokenize["flow_head_seconds"] > 0
    )
    assert detokenize["original_seconds"] is None  # tiny sizes: not the BASELINES.md row


def test_bench_flow_training_smoke(tmp_path, fake_peak):
    import bench_flow_training

    out = tmp_path / "flow_training.json"
    rows = bench_flow_training.main(["--match", "v2flow linear", "--repeats", "1", "--in-process", "--json", str(out)])
    _check_rows(rows, 1, out)
    assert rows[0]["saved_activations_mib"] > 0 and rows[0]["step_ms"] > 0


def test_bench_v2flow_llama_smoke(tmp_path, fake_peak):
    import bench_v2flow_llama

    tiny = [
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--num-kv-heads",
        "1",
        "--intermediate-size",
        "64",
        "--text-vocab-size",
        "50",
        "--codebook-size",
        "16",
        "--image-tokens",
        "8",
    ]
    out = tmp_path / "llama.json"
    rows = bench_v2flow_llama.main([*tiny, "--new-tokens", "3", "--batch-sizes", "2", "--dtypes", "fp32",
                                    "--repeats", "1", "--json", str(out)])  # fmt: skip
    assert [row["kv_cache"] for row in rows] == ["on", "off"]
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["gflop_per_token"] > 0
        assert row["peak_fraction"] == pytest.approx(row["gflop_per_s"] * 1e9 / 1e11)
    # without the cache every new token recomputes the whole prefix
    assert rows[1]["gflop_per_token"] > rows[0]["gflop_per_token"]
    assert len(json.loads(out.read_text())["rows"]) == 2
