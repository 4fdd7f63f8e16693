"""Start-up time of the ``hf-vtok`` command line: ``--help`` through the console script, against the package import.

    python benchmarks/bench_cli_help.py [--repeats 5] [--quick] [--json results.json]

Each row runs a fresh interpreter (the checkout's ``src`` first on ``PYTHONPATH``) ``--repeats`` times and gives the
median and the fastest wall time, and which heavy packages (torch, transformers, diffusers, ...) the run imported.
Rows: the interpreter alone; ``hf-vtok --help`` as the console script runs it (``hf_vtok_cli:main``: parsed before
``import hf_vtok``); the same help reached through the package (``python -m hf_vtok.cli --help``: how every help
ran before the light entry point); a sub-command's help (``reconstruct --help``: the package import, then that
command's module); ``import hf_vtok`` alone. ``--quick`` runs the first two rows once (the test's smoke run).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "transformers", "diffusers", "accelerate", "numpy", "PIL")
# prints, at exit (after argparse's SystemExit too), the heavy top-level packages the run imported
_REPORT = (
    f"import atexit, sys\nheavy = {set(HEAVY)!r}\n"
    "atexit.register(lambda: print('HEAVY', ','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)), "
    "file=sys.stderr))\n"
)
CONSOLE_SCRIPT = "from hf_vtok_cli import main\nsys.exit(main())\n"
PACKAGE_CLI = "import runpy\nrunpy.run_module('hf_vtok.cli', run_name='__main__', alter_sys=True)\n"
ROWS = {
    "python": ("python -c pass", "pass\n", []),
    "console_help": ("hf-vtok --help (console script)", CONSOLE_SCRIPT, ["--help"]),
    "package_help": ("python -m hf_vtok.cli --help", PACKAGE_CLI, ["--help"]),
    "command_help": ("hf-vtok reconstruct --help", CONSOLE_SCRIPT, ["reconstruct", "--help"]),
    "import": ("import hf_vtok", "import hf_vtok\n", []),
}
QUICK_ROWS = ("python", "console_help")


def run_once(code: str, arguments: list[str]) -> tuple[float, list[str]]:
    """Wall seconds of a fresh interpreter running ``code`` with ``arguments``, and the heavy packages it imported."""
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _REPORT + code, *arguments], capture_output=True, text=True, env=environment
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{code!r} {arguments} exited with {result.returncode}: {result.stderr[-2000:]}")
    line = next(line for line in result.stderr.splitlines() if line.startswith("HEAVY"))
    return seconds, [name for name in line.removeprefix("HEAVY").strip().split(",") if name]


def measure(rows: list[str], repeats: int) -> list[dict]:
    results = []
    for key in rows:
        label, code, arguments = ROWS[key]
        samples, heavy = [], []
        for _ in range(repeats):
            seconds, heavy = run_once(code, arguments)
            samples.append(seconds)
        results.append(
            {
                "row": key,
                "command": label,
                "median_s": statistics.median(samples),
                "min_s": min(samples),
                "runs": repeats,
                "heavy_imports": heavy,
                "heavy": ", ".join(heavy) or "none",
            }
        )
    return results


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per row (default: 5)")
    parser.add_argument("--quick", action="store_true", help="the interpreter and the console script's help, once")
    parser.add_argument("--json", help="also write the rows as JSON to this path")
    args = parser.parse_args(argv)
    rows = measure(list(QUICK_ROWS if args.quick else ROWS), 1 if args.quick else args.repeats)
    load = common.load_average()
    print(f"{sys.executable}, Python {sys.version.split()[0]}; load average {load if load is not None else '?'}")
    common.print_table(
        rows,
        [
            ("command", "command", ""),
            ("median_s", "median s", ".3f"),
            ("min_s", "min s", ".3f"),
            ("heavy", "imports", ""),
        ],
    )
    common.write_json(args.json, {"load_average": load, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
