"""Shared pieces of the reliability tests: a tiny saved tokenizer, malformed-file writers, and an in-process run
of the ``hf-vtok`` command line that returns its exit status and output lines."""

import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vtok import ViTokConfig, ViTokImageProcessor, ViTokModel
from hf_vtok.cli import main
from tests.testing_utils.training import TINY_VITOK  # patch 8, one layer each side


@pytest.fixture(scope="session")
def vitok_folder(tmp_path_factory) -> Path:
    """A tiny saved ViTok (NaFlex processor without a token budget, as the embedded default model)."""
    folder = tmp_path_factory.mktemp("vitok")
    torch.manual_seed(0)
    ViTokModel(ViTokConfig.from_variant(TINY_VITOK)).save_pretrained(folder)
    ViTokImageProcessor(patch_size=8, max_num_patches=None, padding="longest").save_pretrained(folder)
    return folder


def write_photo(path: Path, size=(24, 16), seed: int = 0) -> Path:
    """A small random RGB PNG / JPEG (by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` RGB pixels (its data is one
    compressed row: a decoder would allocate the whole image, then find it truncated)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", row) + _chunk(b"IEND", b""))
    return path


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def cli(capfd):
    """``cli(*argv)`` runs ``hf-vtok`` in this process as the console script does (errors caught, not raised)."""

    def run(*argv) -> CommandResult:
        capfd.readouterr()
        started = time.monotonic()
        try:
            status = main([str(item) for item in argv], raise_errors=False)
        except SystemExit as exit_:  # argparse usage errors
            status = exit_.code
        seconds = time.monotonic() - started
        captured = capfd.readouterr()
        return CommandResult(status, captured.out, captured.err, seconds)

    return run


def assert_one_line_error(result: CommandResult, *names: str, command: str | None = None) -> str:
    """A failed command: non-zero status, one line on stderr naming every ``names``, no traceback."""
    assert result.status not in (0, None), result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    if command is not None:
        assert line.startswith(f"hf-vtok {command}: error: "), line
    for name in names:
        assert str(name) in line, (name, line)
    return line


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative names; empty when it does not exist)."""
    return (
        sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
        if folder.exists()
        else []
    )
