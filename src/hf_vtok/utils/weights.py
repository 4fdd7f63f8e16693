"""Weights of fixed feature networks (Inception, VGG, LPIPS heads) from a path, a URL or the Hub.

URLs are cached where torch.hub caches checkpoints (``$TORCH_HOME/hub/checkpoints``), so a file
that pytorch-fid, torch-fidelity or torchvision already downloaded is reused; ``hf://owner/repo/file``
goes through ``huggingface_hub.hf_hub_download`` and its cache. Loading never executes pickle.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import torch

from .checkpoints import load_original_state_dict

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def _missing(what: str, location: str, where_to_get: str, reason: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} weights not available ({reason}): {location}. Get them from {where_to_get} "
        "and pass the local file path."
    )


def resolve_weights_file(location: str | os.PathLike, what: str, where_to_get: str) -> Path:
    """Local file for ``location`` (a path, an http(s) URL, or ``hf://owner/repo/path/in/repo``).

    A URL is downloaded once into torch.hub's checkpoint cache (checking the hash prefix that torch.hub
    file names carry, e.g. ``...-6726825d.pth``). Offline (``HF_HUB_OFFLINE=1``) only the cache is used.
    ``what`` and ``where_to_get`` make the error of a missing file say what it is and where to get it.
    """
    location = str(location)
    scheme = urlparse(location).scheme
    if scheme in ("http", "https"):
        filename = os.path.basename(urlparse(location).path)
        cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
        if cached.is_file():
            return cached
        if _offline():
            raise _missing(what, location, where_to_get, f"not in the cache {cached.parent} and HF_HUB_OFFLINE=1")
        cached.parent.mkdir(parents=True, exist_ok=True)
        match = _HASH_IN_NAME.search(filename)
        try:
            torch.hub.download_url_to_file(location, str(cached), hash_prefix=match.group(1) if match else None)
        except Exception as error:  # network errors come in many types
            raise _missing(what, location, where_to_get, f"download failed: {error}") from error
        return cached
    if scheme == "hf":
        from huggingface_hub import hf_hub_download

        parts = location[len("hf://") :].split("/")
        if len(parts) < 3:
            raise ValueError(f"hf:// weight locations are hf://owner/repo/path/to/file, got {location!r}")
        try:
            return Path(hf_hub_download("/".join(parts[:2]), "/".join(parts[2:])))
        except Exception as error:
            raise _missing(what, location, where_to_get, f"{type(error).__name__}: {error}") from error
    path = Path(location).expanduser()
    if not path.is_file():
        raise _missing(what, location, where_to_get, "no such file")
    return path


def load_weights(location: str | os.PathLike, what: str, where_to_get: str) -> dict[str, torch.Tensor]:
    """State dict at ``location`` (path, URL or ``hf://``): safetensors or ``torch.load(weights_only=True)``."""
    return load_original_state_dict(resolve_weights_file(location, what, where_to_get))
