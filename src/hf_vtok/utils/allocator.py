"""glibc's heap, seen from CPU inference.

glibc serves a block over its mmap threshold (128 KiB at start) with a fresh ``mmap`` and unmaps it on ``free``,
so the next call's activations of that size are page-faulted in again, page by page. glibc raises the threshold
by itself (up to 32 MiB, and its trim threshold to twice that) the first time it frees such a block; a process
that has freed one (e.g. weights created in float32 and cast to bfloat16) keeps its activations in the heap, and
one that has not (weights created or loaded in place) page-faults on every call: SoftVQ-L-64's bfloat16 decode
took 58,866 faults per call, 0.55 s instead of 0.37 s. ``tune_heap_for_inference`` sets that final state at once.
"""

import ctypes
import ctypes.util
import functools
import os
import sys

from .switches import env_switch

HEAP_TUNING = env_switch("HF_VTOK_HEAP_TUNING")
# glibc's own ceiling for its dynamic thresholds on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX), and twice it
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (not glibc: AttributeError)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> None:
    """Hand glibc's free heap pages back to the OS (``malloc_trim(0)``); nothing elsewhere."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def user_tuned_heap(environ=None) -> bool:
    """Whether the user has set glibc's heap parameters (``MALLOC_*_`` variables or ``glibc.malloc`` tunables)."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _USER_SETTINGS) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


@functools.cache
def tune_heap_for_inference() -> bool:
    """Once per process: glibc's mmap threshold to 32 MiB and its trim threshold to 64 MiB (the state glibc reaches
    by itself after freeing a 32 MiB block), so activations are reused from the heap instead of mapped and
    page-faulted on every call. The process keeps up to 64 MiB of freed heap top (glibc's own bound once tuned);
    blocks over 32 MiB are still mapped and returned. Skipped where the heap is not glibc's, where the user set
    its parameters, and under ``HF_VTOK_HEAP_TUNING=0``; returns whether it was applied."""
    libc = _glibc()
    if not HEAP_TUNING or libc is None or user_tuned_heap():
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
