"""benchmarks/run_all.py's table: this machine's figures only (no peak-normalised "x orig"), and the side-by-side
ratio from the harness's JSON (``--original-json``, ../shared/perf/run.py's output), matched by ``port_case``.
The workers are faked: no model is built."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402  (benchmarks/ is put on sys.path above)
import run_all  # noqa: E402

ENCODE = "vitok-v2-350m-f16x64-encode-b1-fp32"
DECODE = "vitok-v2-350m-f16x64-decode-b1-fp32"


def _harness_json(path):
    """What run.py writes for one case (three rounds) plus one whose port side failed."""
    rounds = [
        {
            "orig": {"seconds": orig, "peak_rss_gb": 1.69},
            "port": {"seconds": port, "peak_rss_gb": 1.60, "port_case": ENCODE},
        }
        for orig, port in ((2.0, 1.0), (3.0, 1.0), (2.0, 2.0))
    ]
    failed = [{"orig": {"seconds": 9.0}, "port": {"error": "exit 1"}}]
    rows = [
        {
            "case": "vitok-encode-b1-fp32",
            "orig": {"seconds": 2.0, "rss_gb": 1.69, "n": 3},
            "port": {"seconds": 1.0, "rss_gb": 1.60, "n": 3},
            "ratio_port": {"median": 2.0, "min": 1.0, "max": 3.0},
            "load1_max": 4.5,
        },
        {"case": "vitok-decode-b1-fp32", "orig": {"seconds": 9.0}, "port": {"seconds": None}, "ratio_port": None},
    ]
    raw = [{"case": "vitok-encode-b1-fp32", "rounds": rounds}, {"case": "vitok-decode-b1-fp32", "rounds": failed}]
    path.write_text(json.dumps({"meta": {}, "rows": rows, "raw": raw}))
    return path


def test_side_by_side_reads_the_harness_json(tmp_path):
    found = run_all.side_by_side([_harness_json(tmp_path / "perf.json")])
    assert set(found) == {ENCODE}  # the failed case has no ratio
    entry = found[ENCODE]
    assert (entry["ratio"], entry["ratio_min"], entry["ratio_max"]) == (2.0, 1.0, 3.0)
    assert (entry["orig_seconds"], entry["orig_rss_gb"], entry["port_rss_gb"], entry["load1_max"]) == (
        2.0,
        1.69,
        1.60,
        4.5,
    )
    assert run_all.side_by_side(None) == {}


def test_table_has_absolute_figures_and_the_side_by_side_ratio(tmp_path, monkeypatch, capsys):
    fake = {"seconds": 0.5, "flops": 5e10, "peak_flops": 2e11, "memory_gb": 1.6, "samples": [0.5]}
    monkeypatch.setattr(common, "run_worker", lambda script, arguments: dict(fake))
    path = _harness_json(tmp_path / "perf.json")
    rows = run_all.main(["--match", "350m-f16x64-", "--dtypes", "fp32", "--original-json", str(path)])
    output = capsys.readouterr().out
    header = next(line for line in output.splitlines() if line.startswith("| config"))
    assert "x orig" not in output and "target" not in header and "ok" not in header.split("|")
    assert "% peak" in header and "orig/port (side by side)" in header and "orig RSS GB" in header
    by_key = {row["key"]: row for row in rows}
    assert by_key[ENCODE]["peak_fraction"] == pytest.approx(0.5)  # 1e11 FLOP/s of a 2e11 peak
    assert by_key[ENCODE]["orig_over_port"] == "2.00 (1.00-3.00)"
    assert "speedup_vs_original" not in by_key[ENCODE]
    assert "orig_over_port" not in by_key[DECODE]  # no side-by-side figure for it: '-' in the table
    table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in output.splitlines() if line.startswith("| ")]
    encode = next(cells for cells in table if cells[0].endswith("encode") and cells[1] == "1")
    assert "50%" in encode and "2.00 (1.00-3.00)" in encode and "1.69" in encode


def test_without_original_json_no_side_by_side_columns(monkeypatch, capsys):
    fake = {"seconds": 0.5, "flops": 5e10, "peak_flops": 2e11, "memory_gb": 1.6, "samples": [0.5]}
    monkeypatch.setattr(common, "run_worker", lambda script, arguments: dict(fake))
    run_all.main(["--match", ENCODE])
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| config"))
    assert "side by side" not in header and "x orig" not in header


def test_bench_fast_linear_times_both_paths_in_one_process(monkeypatch):
    import bench_fast_linear
    import torch
    from torch import nn

    from hf_vtok.utils import prepack

    monkeypatch.setattr(prepack, "MIN_ONEDNN_MACS", 0)
    monkeypatch.setattr(common, "set_threads", lambda threads: None)  # keep the session's thread count
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
    prepack.enable_fast_linear(model)
    routed = []

    def call():
        routed.append(prepack.is_fast_linear(model[0]))
        return model(torch.randn(8, 32))

    case = run_all.Case("vitok", "encode", "fake", 1, "fp32")
    monkeypatch.setitem(run_all.BUILDERS, "vitok", lambda case, dtype, device: run_all.Bench(call, modules=(model,)))
    row = bench_fast_linear.measure(case, repeats=3, threads=1)
    assert routed == [True, False] + [True, False] * 3  # warm-up of each path, then interleaved
    assert row["fast_s"] > 0 and row["plain_s"] > 0 and row["plain_over_fast"] > 0


def test_bench_attention_rows_and_bad_shape(tmp_path, monkeypatch, capsys):
    import bench_attention

    monkeypatch.setattr(common, "set_threads", lambda threads: 1)  # keep the session's thread count
    monkeypatch.setattr(common, "measure_peaks", lambda names: dict.fromkeys(names, 1e11))
    rows = bench_attention.main(["--shapes", "1x2x40x8", "--repeats", "1", "--json", str(tmp_path / "a.json")])
    kernels = [row["kernel"] for row in rows]
    assert kernels[:2] == ["sdpa (flash)", "sdpa math"] and len(kernels) == 2 + len(bench_attention.BLOCK_BYTES)
    assert all(row["ms"] > 0 and row["relative_error"] < 2e-2 for row in rows)
    assert json.loads((tmp_path / "a.json").read_text())["rows"] == rows
    with pytest.raises(SystemExit):
        bench_attention.main(["--shapes", "1x2x40"])
    assert "expected BATCHxHEADSxTOKENSxHEAD_DIM" in capsys.readouterr().err
