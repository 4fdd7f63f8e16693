"""Build the project's wheel the way ``pip install hf_vtok`` would, from a copy of the checkout."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_wheel(tmp_path: Path) -> Path:
    """The ``hf_vtok-*.whl`` of ``setup.py`` / ``README.md`` / ``src`` / ``model_cards`` (no dependencies)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for folder in ("src", "model_cards"):
        shutil.copytree(
            REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w",
         str(tmp_path / "wheel")],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("hf_vtok-*.whl")
    return wheel
