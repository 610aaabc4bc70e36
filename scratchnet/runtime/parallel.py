"""Work on a batch split over the CPU's cores, by samples.

NumPy runs every copy and element-wise operation on one core, while BLAS runs each GEMM on all
of them: on 2 cores the im2col gather, BatchNorm's passes, ReLU and max-pooling used half the
machine.  NumPy releases the GIL inside its loops, so Python threads can run the same operation
on disjoint slices of the batch at once.

Only work whose every output element comes from the same arithmetic however the batch is cut is
split here: copies, element-wise maps, per-sample operations.  Its results are therefore bit for
bit those of a single call, on any number of cores.  Reductions over the batch (BatchNorm's
sums) are not split: their summation order, and so their rounding, would depend on the cut.

CuPy arrays, small pieces of work and single-core machines run ``fn`` once on the whole batch.
The threads are this process's share of the cores (scratchnet.runtime.cores: all of them, or a
share per MPI rank on the host); ``SCRATCHNET_THREADS=1`` turns the splitting off (any other
number sets the thread count).
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .cores import thread_count

# Below about a megabyte of float32 the hand-off to a thread costs more than it saves; work
# is cut into pieces of about that size, which the threads take in turn, so that they finish
# together.  (Running the pieces one after another on a single core, for cache locality,
# measured no faster than one call: the gain is the second core's.)
PIECE_ELEMENTS = 1 << 18

# Fixed blocks of work (even_blocks) come in a multiple of this many, so that 1, 2 or 4 cores
# finish together.
BLOCK_MULTIPLE = 4

_THREAD_PREFIX = "scratchnet-parallel"
_pool, _pool_key = None, None
_local = threading.local()  # .inside: this thread is running a piece


def _executor(helpers):
    # One pool per process: a forked child (benchmarks run in children) has no pool threads.
    global _pool, _pool_key
    key = (os.getpid(), helpers)
    if _pool_key != key:
        if _pool is not None and _pool_key[0] == os.getpid():
            _pool.shutdown(wait=False)  # the thread count changed
        _pool, _pool_key = ThreadPoolExecutor(helpers, thread_name_prefix=_THREAD_PREFIX), key
    return _pool


def parallel_slices(fn, n, elements, xp=np, pieces=None):
    """Call ``fn(part)`` on slices ``part`` that together cover ``range(n)`` (the samples of a
    batch, or the rows of an (N*H*W, C) matrix) once each.  On NumPy, with more than one
    thread and at least PIECE_ELEMENTS ``elements`` of work in all, the range is cut into
    pieces of about PIECE_ELEMENTS elements (at least one per thread), or into ``pieces``
    pieces when given, that the threads share; otherwise ``fn`` runs once on ``slice(0, n)``.
    ``fn`` must write only into its part.

    The calling thread takes pieces too, beside thread_count() - 1 helper threads, each
    taking the next piece not yet taken until none is left, and the caller then waits for the
    pieces, not for the helpers: waking a sleeping thread costs about as long as a 1 MB
    element-wise pass, and a helper that wakes after the caller has taken every piece finds
    none (docs/speed.md, "Waking threads"; benchmarks.profile_layers)."""
    # A piece that splits its own work would wait on the threads it occupies: it runs whole.
    inside = getattr(_local, "inside", False)
    workers = 1 if xp is not np or elements < PIECE_ELEMENTS or inside else min(thread_count(), n)
    if workers < 2:
        fn(slice(0, n))
        return
    if pieces is None:
        pieces = max(workers, elements // PIECE_ELEMENTS)
    pieces = min(n, pieces)
    bounds = even_bounds(n, pieces)
    parts = iter([slice(a, b) for a, b in zip(bounds, bounds[1:])])  # next(): one taker each
    unfinished, lock, finished, errors = pieces, threading.Lock(), threading.Event(), []

    def take_pieces():
        nonlocal unfinished
        _local.inside = True
        try:
            for part in parts:
                try:
                    fn(part)
                except BaseException as e:  # re-raised by the caller
                    errors.append(e)
                with lock:
                    unfinished -= 1
                    if unfinished == 0:
                        finished.set()
        finally:
            _local.inside = False

    pool = _executor(workers - 1)
    for _ in range(workers - 1):
        pool.submit(take_pieces)
    take_pieces()
    finished.wait()
    if errors:
        raise errors[0]


def even_bounds(n, parts):
    """The bounds of ``parts`` contiguous parts of range(n), as even as they come."""
    return [n * j // parts for j in range(parts + 1)]


def even_blocks(n, least):
    """The bounds of even blocks of range(n) of at least ``least`` items each, as many as fit,
    their count rounded up to a multiple of BLOCK_MULTIPLE (at most n); [0, n], one block,
    where two would not fit.  The convolutions' blocks of work for the runtime's threads
    (scratchnet.kernels.shifted, patch_gemm).  A function of n and ``least`` alone, never of the
    cores: OpenBLAS rounds a product's rows differently with the size of the product they are
    in (by a float32 unit in the last place or so), so blocks that followed the core count
    would make the numbers follow it too."""
    count = n // least
    if count < 2:
        return [0, n]
    count = min(n, -(-count // BLOCK_MULTIPLE) * BLOCK_MULTIPLE)
    return even_bounds(n, count)
