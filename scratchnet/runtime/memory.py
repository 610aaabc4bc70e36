"""Keep freed memory for reuse instead of returning it to the operating system (glibc only).

A training step allocates and frees the same large arrays (patch matrices, activations) every
time.  By default glibc serves allocations above 128 KiB-32 MiB with fresh ``mmap`` pages and
gives them back on ``free``, so every step page-faults its working set in again, writing
fresh pages at a third of the speed of reused ones (docs/speed.md, "Memory kept, not
page-faulted").
Serving every allocation from the heap (M_MMAP_MAX = 0) and never trimming it
(M_TRIM_THRESHOLD = 2 GiB) makes the second step reuse the first step's pages.  The cost is
that the process keeps its peak heap until it exits, which a training run does anyway.

The runtime applies it itself, with its BLAS, at the first matrix product (scratchnet.runtime.
blas), so a user's script gets it as the commands do, unless the environment already tunes
glibc's malloc (MALLOC_*_ variables or glibc.malloc tunables): that choice is the user's and is
kept.  :func:`state` says which is in force.
"""
import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


_STATE = "glibc's defaults"  # what state() reports


def users_malloc_settings():
    """The environment's own tuning of glibc's malloc, as a list of variable names."""
    names = [k for k in os.environ if k.startswith("MALLOC_") and k.endswith("_")]
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return sorted(names)


def state():
    """Which malloc settings are in force: the runtime's, the user's, or glibc's defaults."""
    return _STATE


def keep_freed_memory():
    """Tune glibc's malloc as described above, unless the environment tunes it already;
    returns True if it applied (Linux/glibc)."""
    global _STATE
    users = users_malloc_settings()
    if users:
        _STATE = f"the environment's ({', '.join(users)})"
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    if applied:
        _STATE = "kept (M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB)"
    return applied
