"""The ``hf-vtok`` help: fast (no torch / transformers before parsing), an example and defaults per command, help for
every option of every sub-command."""

import argparse
import os
import re
import subprocess
import sys

import pytest

from hf_vtok.cli import COMMANDS, build_parser, main
from tests.testing_utils.training import REPO_ROOT

HEAVY = ("torch", "transformers", "diffusers", "accelerate", "numpy", "PIL")
# the console script as pip writes it, with the modules of the heavy packages it imported listed at exit
ENTRY_POINT = (
    "import atexit, sys\n"
    f"heavy = {HEAVY!r}\n"
    "atexit.register(lambda: print('imported:', sorted({m.split('.')[0] for m in sys.modules} & set(heavy)), "
    "file=sys.stderr))\n"
    "from hf_vtok_cli import main\n"
    "sys.exit(main())\n"
)


def run_entry_point(*arguments: str, code: str = ENTRY_POINT) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], capture_output=True, text=True, env=environment, timeout=300
    )


def imported(result: subprocess.CompletedProcess) -> list[str]:
    line = next(line for line in result.stderr.splitlines() if line.startswith("imported:"))
    return eval(line.removeprefix("imported:"))  # a list literal printed by the child


def test_console_script_is_the_light_entry_point():
    setup = (REPO_ROOT / "setup.py").read_text(encoding="utf-8")
    assert '"hf-vtok=hf_vtok_cli:main"' in setup and '"hf_vtok_cli"' in setup


@pytest.mark.parametrize("arguments", [("--help",), ("-h",), ("no-such-command",), ()])
def test_help_and_usage_errors_import_nothing_heavy(arguments):
    result = run_entry_point(*arguments)
    assert imported(result) == [], result.stderr
    if arguments[:1] in (("--help",), ("-h",)):
        assert result.returncode == 0
        for name in ("convert", *COMMANDS):
            assert name in result.stdout
        assert "examples:" in result.stdout and "hf-vtok reconstruct photo.jpg" in result.stdout
    else:
        assert result.returncode == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("hf-vtok: error:")]
        assert len(errors) == 1, result.stderr


@pytest.mark.slow
def test_a_command_runs_after_the_deferred_package_import(tmp_path):
    """The package's own import (the Auto registrations) runs before the command does."""
    code = ENTRY_POINT.replace(
        "sys.exit(main())",
        "status = main()\n"
        "import hf_vtok\n"
        "from transformers import AutoConfig\n"
        "print('registered', AutoConfig.for_model('vitok').__class__ is hf_vtok.ViTokConfig, hf_vtok.__version__)\n"
        "sys.exit(status)",
    )
    result = run_entry_point("convert", "--list", code=code)
    assert result.returncode == 0, result.stderr
    assert "registered True" in result.stdout and "vitok" in result.stdout
    assert "torch" in imported(result)


def test_in_process_help_of_one_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    assert "hf-vtok eval --model" in capsys.readouterr().out


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser)`` of the parser and of every sub-command under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


@pytest.fixture(scope="module")
def parsers():
    return dict(walk(build_parser()))


def test_every_option_of_every_command_has_help(parsers):
    missing = [
        f"hf-vtok {' '.join(path)} {action.option_strings[0] if action.option_strings else action.dest}"
        for path, parser in parsers.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert not missing, "options without help: " + ", ".join(missing)


def test_every_command_shows_an_example(parsers):
    leaves = [
        path for path in parsers if path and not any(other[: len(path)] == path for other in parsers if other != path)
    ]
    assert {("reconstruct",), ("eval",), ("convert", "vitok")} <= set(leaves)
    without = [
        " ".join(path)
        for path in [*leaves, ("convert",)]
        if not re.search(rf"^\s*hf-vtok {re.escape(' '.join(path))}\b", parsers[path].format_help(), re.M)
    ]
    assert not without, f"sub-commands without an example command line in --help: {without}"


@pytest.mark.parametrize(
    "path, shown",
    [
        (("eval",), ["--batch-size BATCH_SIZE", "(default: 16)", "(default: center)"]),
        (("reconstruct",), ["(default: 1)", "(default: float32)", "(default: 0)", "cuda when available"]),
        (("convert", "vitok"), ["(default: 256)"]),
    ],
)
def test_defaults_are_shown(parsers, path, shown):
    text = " ".join(parsers[path].format_help().split())
    for item in shown:
        assert item in text, (path, item)
    assert "(default: None)" not in text and "(default: False)" not in text
