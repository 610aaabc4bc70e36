"""The BLAS that scratchnet's matrix products run on, set up by the runtime itself, whatever the
user's script imported first.

Why.  OpenBLAS reads its settings once, when it loads: the thread timeout (how long its idle
threads spin after a product) and the thread count.  A script that imports NumPy before
scratchnet, as every script does, gets NumPy's OpenBLAS with threads that spin for about a
tenth of a second after each product, beside the element-wise work and beside the second
OpenBLAS that SciPy loads, whose products then wait for cores held by spinning threads.  From
such a script the shape set trained at 0.22x PyTorch (docs/speed.md, "One BLAS, set up at run
time").  SciPy's OpenBLAS is a copy of its own that loads when scipy.linalg.blas is first
imported: the runtime sets its settings (scratchnet.runtime.blas_settings) in the environment
just before, and runs every matrix product of the kernels and layers through it, so that
their threads are the runtime's whatever NumPy's are.  (If the script imported
scipy.linalg before scratchnet, SciPy's copy keeps what it read then: :func:`settings` says.)

With its BLAS the runtime also keeps freed memory for reuse (scratchnet.runtime.memory), the
other setting the commands used to make before anything ran: both are in force from the first
product on, and scratchnet.runtime.settings() reports them.  Under an MPI launcher the rank's
share of the cores is also set at run time (threadpoolctl) on every BLAS the process has
loaded, since a BLAS loaded before the runtime's first product read the environment too early:
dsp's resampling imports scipy.signal, which loads SciPy's BLAS.  A thread count the script
set itself, before the first product (threadpoolctl, or a variable), is kept: the runtime's
BLAS takes it too.

The products are those of NumPy's matmul: BLAS gemm on the same operands, called on the
transposed (column-major) views so that nothing is copied.

Long sums into a small output (:func:`summed_matmul`).  A convolution's weight gradient sums
over every position of the batch into a k C_in x C_out matrix.  OpenBLAS splits a product
among its threads by the output, so a small output gives each thread a sliver and the
threads meet at every block of the sum; run instead as SUM_PARTS products over fixed parts of
the sum, each on one of the runtime's threads with BLAS held to one thread, and the parts
added in order, the same products took 0.73-0.97 of the time (docs/speed.md, "Long sums over
the runtime's threads").  The parts are fixed, not one per thread, and each is a one-thread
product, so the numbers are the same on any number of cores (OpenBLAS's own products are
not: on some shapes, 49 x 4096 . 4096 x 32 say, one thread and two round differently).  Where
SciPy's OpenBLAS cannot be reached through ctypes the parts run one after another at BLAS's
own thread count.
"""
import ctypes
import os
import sys

import numpy as np

from . import blas_settings, memory
from .backend import get_array_module
from .cores import machine_cores, thread_count
from .parallel import PIECE_ELEMENTS, even_bounds, parallel_slices

_GEMM = None  # dtype -> SciPy's gemm, loaded on first use
_LOADED_WITH = None  # the settings SciPy's OpenBLAS read when it loaded
_CBLAS = None  # SciPy's OpenBLAS through ctypes (:func:`cblas`), False where not found

# summed_matmul: the parts a long sum is cut into, whatever the cores; products with at most
# SMALL_OUTPUT outputs and at least LONG_SUM terms per output are cut (docs/speed.md; 0 cuts
# none, as benchmarks.long_sums sets it to compare).
SUM_PARTS = 4
SMALL_OUTPUT = 1 << 14
LONG_SUM = 1 << 14


def _gemm(dtype):
    """SciPy's gemm for float32 / float64 (None without SciPy), its OpenBLAS loaded with the
    runtime's settings if this is its first load."""
    global _GEMM, _LOADED_WITH
    if _GEMM is None:
        memory.keep_freed_memory()
        fresh = "scipy.linalg._fblas" not in sys.modules
        wanted = blas_settings()
        users = _users_thread_count()
        if fresh:
            for key, value in wanted.items():
                os.environ.setdefault(key, value)
        try:
            from scipy.linalg.blas import get_blas_funcs
        except ImportError:  # SciPy is a dependency; without it NumPy's matmul runs
            _GEMM = {}
            return None
        _GEMM = {(name, np.dtype(t)): get_blas_funcs(name, dtype=t)
                 for name in ("gemm", "gemv") for t in (np.float32, np.float64)}
        _LOADED_WITH = ({k: os.environ.get(k, "default") for k in wanted} if fresh
                        else "loaded before scratchnet: its own settings")
        threads = users or wanted.get("OPENBLAS_NUM_THREADS")
        if threads:
            # The user's count, or the rank's share, set at run time on every BLAS loaded:
            # one loaded before the runtime (SciPy's, by scipy.signal say) read the
            # environment too early, and threadpoolctl's limits reach only loaded libraries.
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=int(threads), user_api="blas")
            if users and isinstance(_LOADED_WITH, dict):
                _LOADED_WITH["threads"] = f"{users} (the script's own limit)"
    return _GEMM.get(("gemm", np.dtype(dtype)))


def _users_thread_count():
    """The thread count the script gave the BLAS libraries it had loaded (threadpoolctl's
    threadpool_limits, or a variable NumPy's OpenBLAS read), when it is below the cores
    this process may use; else None."""
    from threadpoolctl import threadpool_info
    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return min(counts) if counts and min(counts) < machine_cores() else None


def _blas(name, dtype):
    """SciPy's BLAS routine ``name`` ("gemm", "gemv") for dtype, or None."""
    _gemm(dtype)
    return _GEMM.get((name, np.dtype(dtype)))


def vector_matmul(v, a):
    """v @ a for a vector v (M,) and a matrix a (M, C): BLAS gemv on the runtime's BLAS for
    NumPy float32 / float64 (a^T v, on a's column-major view), the array module's matmul
    otherwise."""
    gemv = None
    if (get_array_module(v, a) is np and v.ndim == 1 and a.ndim == 2 and v.dtype == a.dtype
            and min(a.shape) > 0):
        gemv = _blas("gemv", a.dtype)
    if gemv is None:
        return v @ a
    matrix, trans = _operand(a)
    return gemv(1.0, matrix, v, trans=trans)


def settings():
    """What the runtime's BLAS loaded with (after the first product), for a results line."""
    _gemm(np.float32)
    return _LOADED_WITH


def _operand(m):
    """(the array handed to column-major BLAS, its trans flag) for the row-major factor m^T
    of a transposed product: m's transpose when m is C-contiguous (then F-contiguous), m itself
    with trans = 1 when m is F-contiguous, a C-contiguous copy otherwise."""
    if m.flags.c_contiguous:
        return m.T, 0
    if m.flags.f_contiguous:
        return m, 1
    return np.ascontiguousarray(m).T, 0


def matmul(a, b, out=None, beta=0.0):
    """a @ b, written into ``out`` when given; ``beta`` = 1 adds it into out instead (out +=
    a @ b, with no temporary).  NumPy float32 / float64 operands of one dtype run on the
    runtime's BLAS: 2-D factors as one gemm, stacks (..., M, K) @ (K, N) as one gemm over the
    stacked rows, stacks with the same leading shape as one gemm per matrix.  Anything else
    (CuPy arrays, other dtypes, broadcast stacks) runs on the array module's matmul.

    BLAS is column-major: a C-contiguous out (M, N) is the column-major out^T (N, M), and
    out^T = b^T a^T is one gemm on transposed views."""
    xp = get_array_module(a, b)
    if (xp is np and a.dtype == b.dtype and a.ndim >= 2 and b.ndim >= 2
            and (out is None or out.dtype == a.dtype) and _gemm(a.dtype) is not None):
        if a.ndim == b.ndim == 2:
            return _matrix_product(a, b, out, beta)
        if b.ndim == 2 or a.shape[:-2] == b.shape[:-2]:
            return _stacked_product(a, b, out, beta)
    if beta == 0.0:
        return xp.matmul(a, b) if out is None else xp.matmul(a, b, out=out)
    if beta != 1.0:
        out *= beta
    out += a @ b
    return out


def _matrix_product(a, b, out, beta):
    """out = a @ b + beta out for 2-D NumPy factors: one gemm."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    if min(a.shape + b.shape) == 0 or not out.flags.c_contiguous:
        if beta == 0.0:
            return np.matmul(a, b, out=out)
        out *= beta
        out += a @ b
        return out
    first, trans_first = _operand(b)
    second, trans_second = _operand(a)
    result = _gemm(a.dtype)(1.0, first, second, beta=beta, c=out.T, trans_a=trans_first,
                            trans_b=trans_second, overwrite_c=True)
    if not np.shares_memory(result, out):  # the wrapper had to copy: keep the product anyway
        out[...] = result.T
    return out


def _stacked_product(a, b, out, beta):
    """out = a @ b + beta out for a stack a (..., M, K): with a matrix b (K, N), the stack's
    rows are one (... M, K) matrix when they lie evenly in memory, and one gemm does; else
    one gemm per matrix of the stack."""
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if out is None:
        out = np.empty(lead + (a.shape[-2], b.shape[-1]), dtype=a.dtype)
    if b.ndim == 2 and out.flags.c_contiguous:
        rows = _rows_view(a)
        if rows is not None:
            _matrix_product(rows, b, out.reshape(-1, out.shape[-1]), beta)
            return out
    for i in np.ndindex(lead):
        _matrix_product(a[i], b if b.ndim == 2 else b[i], out[i], beta)
    return out


def _rows_view(a):
    """a (..., M, K) viewed as one (... M, K) matrix without a copy, or None."""
    rows = a.view()
    try:
        rows.shape = (-1, a.shape[-1])
    except AttributeError:  # the leading axes do not merge without a copy
        return None
    return rows


class CBlas:
    """SciPy's OpenBLAS called through ctypes, which lets go of the GIL during the call (SciPy's
    Python wrapper holds it): row-major cblas gemm for float32 / float64, and the library's
    thread count, read and set."""
    ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

    def __init__(self, lib, names):
        i, p = ctypes.c_int, ctypes.c_void_p
        self.gemm = {}
        for dtype, scalar, name in ((np.float32, ctypes.c_float, names["sgemm"]),
                                    (np.float64, ctypes.c_double, names["dgemm"])):
            fn = getattr(lib, name)
            fn.argtypes = [i, i, i, i, i, i, scalar, p, i, p, i, scalar, p, i]
            fn.restype = None
            self.gemm[np.dtype(dtype)] = fn
        self.set_threads = getattr(lib, names["set"])
        self.set_threads.argtypes, self.set_threads.restype = [i], None
        self.get_threads = getattr(lib, names["get"])
        self.get_threads.argtypes, self.get_threads.restype = [], i

    @classmethod
    def operand(cls, m):
        """(trans flag, leading dimension) of a matrix with a unit stride along one axis."""
        item = m.itemsize
        if m.strides[1] == item and m.strides[0] % item == 0:
            return cls.NO_TRANS, max(m.strides[0] // item, m.shape[1], 1)
        if m.strides[0] == item and m.strides[1] % item == 0:
            return cls.TRANS, max(m.strides[1] // item, m.shape[0], 1)
        return None

    def product(self, a, b, out, beta=0.0):
        """out = a @ b + beta out (``out`` with unit stride along its rows, one dtype
        throughout), in the calling thread."""
        (ta, lda), (tb, ldb) = self.operand(a), self.operand(b)
        self.gemm[out.dtype](self.ROW_MAJOR, ta, tb, a.shape[0], b.shape[1], a.shape[1], 1.0,
                             a.ctypes.data, lda, b.ctypes.data, ldb, beta, out.ctypes.data,
                             max(out.strides[0] // out.itemsize, out.shape[1], 1))
        return out


def cblas():
    """The runtime's BLAS (SciPy's OpenBLAS, loaded with its settings) through ctypes, or None
    where its library or its cblas symbols cannot be found (another SciPy build)."""
    global _CBLAS
    if _CBLAS is None:
        _CBLAS = False
        if _gemm(np.float32) is not None:
            from threadpoolctl import threadpool_info
            paths = [i["filepath"] for i in threadpool_info()
                     if i["internal_api"] == "openblas" and "scipy" in i["filepath"]
                     and "numpy" not in i["filepath"]]
            if paths:
                lib = ctypes.CDLL(paths[0])
                found = {}
                for role, candidates in (
                        ("sgemm", ("scipy_cblas_sgemm", "cblas_sgemm")),
                        ("dgemm", ("scipy_cblas_dgemm", "cblas_dgemm")),
                        ("set", ("scipy_openblas_set_num_threads", "openblas_set_num_threads")),
                        ("get", ("scipy_openblas_get_num_threads", "openblas_get_num_threads"))):
                    found[role] = next((n for n in candidates if hasattr(lib, n)), None)
                if None not in found.values():
                    _CBLAS = CBlas(lib, found)
    return _CBLAS or None


def one_thread_products(work, pieces, elements):
    """Run ``work(part, product)`` over slices ``part`` covering range(pieces) on the runtime's
    threads (scratchnet.runtime.parallel), with the runtime's BLAS held to one thread
    meanwhile, so that each ``product(a, b, out, beta)`` (out = a @ b + beta out) inside runs
    on its caller's core.  Each piece's products are one-thread products however many cores
    there are, so their numbers are too.  ``elements``: the work's size, for parallel_slices.
    With one piece, or where SciPy's OpenBLAS cannot be reached through ctypes (another SciPy
    build), the pieces run in turn at BLAS's own thread count, ``product`` being
    :func:`matmul`; with BLAS held to one thread already (the script's limit), in turn too.
    ``product``'s factors must have a unit stride along one axis, ``out`` along its rows."""
    lib = cblas() if pieces > 1 else None
    if lib is None:
        work(slice(0, pieces), lambda a, b, out, beta=0.0: matmul(a, b, out=out, beta=beta))
        return
    threads = lib.get_threads()
    if threads == 1:
        work(slice(0, pieces), lib.product)
        return
    lib.set_threads(1)  # a global setting: the pieces beside each other, a core each
    try:
        # Each piece its own slice, which the threads take in turn: even blocks in a multiple
        # of BLOCK_MULTIPLE then split evenly between the cores, where slices of about
        # PIECE_ELEMENTS could leave one core 4 blocks of 12 after the other's 8.
        parallel_slices(lambda part: work(part, lib.product), pieces, elements, np, pieces)
    finally:
        lib.set_threads(threads)


def summed_matmul(a, b, out=None):
    """a @ b for a long inner dimension and a small output (a weight gradient: patches^T dY),
    written into ``out`` when given.  For NumPy float32 / float64 products with at most
    SMALL_OUTPUT outputs and at least LONG_SUM terms each: the sum cut into SUM_PARTS fixed
    parts, a_j b_j over the rows of each part, and out = ((P_0 + P_1) + P_2) + ... in that
    order; the parts run on the runtime's threads (one after another on one), each with a
    one-thread BLAS (:func:`one_thread_products`) where SciPy's OpenBLAS is reachable through
    ctypes, else one after another through :func:`matmul` (module docstring: why).  Anything
    else is :func:`matmul`."""
    if (get_array_module(a, b) is not np or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
            or a.dtype not in (np.float32, np.float64)
            or a.shape[0] * b.shape[1] > SMALL_OUTPUT or a.shape[1] < LONG_SUM
            or (out is not None and (out.dtype != a.dtype or not out.flags.c_contiguous))):
        return matmul(a, b, out=out)
    m, k = a.shape
    bounds = even_bounds(k, SUM_PARTS)
    partial = np.empty((SUM_PARTS, m, b.shape[1]), dtype=a.dtype)

    def parts(js, product):
        for j in range(js.start, js.stop):
            product(a[:, bounds[j]:bounds[j + 1]], b[bounds[j]:bounds[j + 1]], partial[j])

    if CBlas.operand(a) is not None and CBlas.operand(b) is not None:
        one_thread_products(parts, SUM_PARTS, PIECE_ELEMENTS * thread_count())
    else:
        parts(slice(0, SUM_PARTS), lambda a, b, out: matmul(a, b, out=out))
    return sum_in_order(partial, out)


def sum_in_order(parts, out=None):
    """((P_0 + P_1) + P_2) + ... of the stacked ``parts`` (a sum's parts, each computed on
    its own), written into ``out`` when given: one fixed order, so that the rounding does not
    depend on which thread computed which part."""
    xp = get_array_module(parts)
    if out is None:
        out = parts[0].copy()
    else:
        xp.copyto(out, parts[0])
    for part in parts[1:]:
        out += part
    return out
