"""Per-channel element-wise maps on an (M, C) matrix, run over rows of many channels at once.

BatchNorm's passes are of the form out[m, c] = f(a[m, c], v[c], ...): matrices (M, C) of
channels-last memory and per-channel vectors v (C,) broadcast down the rows.  NumPy runs such
a broadcast as M inner loops of C numbers each, and its fast (SIMD) loops only pay off on long
runs: a broadcast vector, or a scalar in ``maximum``, runs about twice as slow as an operand
of the same shape (docs/speed.md, "Long rows").

The same values in other rows.  The matrix is C-contiguous, so k consecutive rows are one
run of k*C numbers: a viewed as (M/k, k*C) for any k dividing M is the same memory, and
a[m, c] sits at row m // k, column (m % k)*C + c of that view.  The vector repeated k times,
V = (v, v, ..., v) (k*C,), has V[(m % k)*C + c] = v[c]: the map over the view with V is the
map over a with v, element for element, the same arithmetic and the same rounding, with inner
loops k times longer.  Rows of at least LONG_ROW numbers ran as fast as same-shape operands.
"""
from functools import lru_cache

from ..runtime.backend import get_array_module
from ..runtime.parallel import parallel_slices

LONG_ROW = 8192


@lru_cache(maxsize=None)
def rows_per_long_row(m, c):
    """k, a divisor of m: the smallest with k*c >= LONG_ROW if it is at most 4 times the
    least such k (so the repeated vectors stay small), else the largest below it; m itself
    when the whole matrix is shorter than one long row."""
    least = -(-LONG_ROW // c)
    if least >= m:
        return m
    for k in range(least, min(m, 4 * least) + 1):
        if m % k == 0:
            return k
    return next(k for k in range(least - 1, 0, -1) if m % k == 0)


def map_long_rows(fn, out, matrices, vectors=()):
    """fn(out_piece, *matrix_pieces, *long_vectors) over pieces of the C-contiguous (M, C)
    ``out`` and ``matrices`` viewed k rows at a time (M/k, k*C) (:func:`rows_per_long_row`),
    with each per-channel vector of ``vectors`` (C,) repeated k times to match (module
    docstring); the pieces are shared by the CPU's cores (scratchnet.runtime.parallel).  ``fn``
    writes its result into out_piece; it may overwrite a matrix piece it is given (in place:
    the matrix's own memory).  Returns out."""
    xp = get_array_module(out, *matrices)
    m, c = out.shape
    for a in (*matrices, out):
        if a.shape != (m, c) or not a.flags.c_contiguous:
            raise ValueError(f"map_long_rows: every matrix must be C-contiguous of shape "
                             f"{(m, c)}, got {a.shape}")
    k = rows_per_long_row(m, c)
    long_out = out.reshape(m // k, k * c)
    long_matrices = [a.reshape(m // k, k * c) for a in matrices]
    long_vectors = [xp.tile(v, k) for v in vectors]
    parallel_slices(lambda rows: fn(long_out[rows], *(a[rows] for a in long_matrices),
                                    *long_vectors),
                    m // k, out.size, xp)
    return out
