"""Keep freed memory for reuse instead of returning it to the operating system (glibc only).

A training step allocates and frees the same large arrays (patch matrices, activations) every
time.  By default glibc serves allocations above 128 KiB-32 MiB with fresh ``mmap`` pages and
gives them back on ``free``, so every step page-faults its working set in again, writing
fresh pages at a third of the speed of reused ones (docs/speed.md, "Code figures").
Serving every allocation from the heap (M_MMAP_MAX = 0) and never trimming it
(M_TRIM_THRESHOLD = 2 GiB) makes the second step reuse the first step's pages.  The cost is
that the process keeps its peak heap until it exits, which a training run does anyway.
"""
import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory():
    """Tune glibc's malloc as described above; returns True if it applied (Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
