"""benchmarks/bench_cli_help.py: the ``hf-vtok --help`` start-up benchmark (a smoke run, no timing bound)."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_cli_help  # noqa: E402  (benchmarks/ is put on sys.path above)


def test_quick_run_writes_a_table_and_json(tmp_path, capsys):
    rows = bench_cli_help.main(["--quick", "--json", str(tmp_path / "help.json")])
    written = json.loads((tmp_path / "help.json").read_text())
    assert [row["row"] for row in written["rows"]] == [row["row"] for row in rows] == list(bench_cli_help.QUICK_ROWS)
    help_row = next(row for row in written["rows"] if row["row"] == "console_help")
    assert help_row["heavy_imports"] == [] and help_row["median_s"] > 0
    assert "| hf-vtok --help (console script) |" in capsys.readouterr().out
