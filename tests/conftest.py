"""Test settings shared by every test module.

Nothing may touch the network: HF_HUB_OFFLINE is set before any HF library is imported.
Parity fixtures are found in $HF_VTOK_PARITY_DIR, else ../shared/parity beside the checkout.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

transformers_logging.disable_progress_bar()

REPO_ROOT = Path(__file__).resolve().parents[1]


def parity_root() -> Path | None:
    """The parity fixture tree: $HF_VTOK_PARITY_DIR, else ../shared/parity beside the checkout."""
    configured = os.environ.get("HF_VTOK_PARITY_DIR")
    if configured:
        return Path(configured)
    default = REPO_ROOT.parent / "shared" / "parity"
    return default if default.is_dir() else None


def parity_dir(family: str) -> Path:
    """Fixture folder of one family, or skip the test with the reason."""
    root = parity_root()
    if root is None:
        pytest.skip("no parity fixtures: set HF_VTOK_PARITY_DIR or put the shared/parity tree beside the checkout")
    folder = root / family
    if not folder.is_dir():
        pytest.skip(f"no parity fixtures for {family!r} under {root}")
    return folder


@pytest.fixture(scope="session")
def family_parity_dir():
    """``family_parity_dir("vitok")`` -> the family's fixture folder, or skip with the reason."""
    return parity_dir


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread (several compete for this machine's 2 cores).

    Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
