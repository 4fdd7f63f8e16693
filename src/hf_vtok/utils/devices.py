"""The device a command line names (``--device cpu|cuda|cuda:1|mps|xpu``), checked before any work."""

import torch


def check_device(name: str | torch.device, option: str = "--device") -> torch.device:
    """``torch.device(name)``, or a ``ValueError`` naming ``option`` when torch does not know it or this machine
    does not have it (no CUDA, a GPU index that is not there, no MPS / XPU)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{option} {str(name)!r} is not a device torch knows (cpu, cuda, cuda:1, mps, xpu)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
            raise ValueError(f"{option} {name}: CUDA is not available ({why}); use {option} cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{option} {name}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
    elif device.type in ("mps", "xpu"):
        backend = torch.backends.mps if device.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise ValueError(f"{option} {name}: {device.type.upper()} is not available here; use {option} cpu")
    return device


__all__ = ["check_device"]
