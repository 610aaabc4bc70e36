"""The runtime floor: the array module and devices (``backend``, the only module that imports
CuPy), the CPU's worker threads (``parallel``), BLAS threads (:func:`configure`, below) and
memory (``memory``).  Nothing here imports the kernels or the layers.

Entry points (the ``experiments`` and ``benchmarks`` commands, the tests) call
:func:`configure` first, before anything imports NumPy: OpenBLAS reads its settings once, when
NumPy loads it.

Why the BLAS threads' timeout.  After each GEMM, OpenBLAS's worker threads spin on their cores
for about a tenth of a second (2^28 cycles) waiting for the next one; between GEMMs a training
step runs copies and element-wise passes, which ``parallel`` splits over the same cores, and a
spinning thread takes half a core from them.  Sleeping at once (2^4 cycles) costs a wake-up
before each of the nine GEMMs of a shifted convolution.  2^18 cycles (under a
tenth of a millisecond) keeps a thread awake across such a run and asleep through the
element-wise work (docs/speed.md, "Waking threads"; ``python -m benchmarks.bench``).
"""
import os
import sys
import warnings


def configure(blas_thread_timeout=18):
    """Set the process up for scratchnet's CPU work; returns the settings in effect.

    ``blas_thread_timeout``: how long OpenBLAS's idle threads spin before they sleep, as
    OPENBLAS_THREAD_TIMEOUT (2^value cycles; why 18: above).  A
    value already in the environment is kept.  After NumPy has loaded OpenBLAS it can no longer
    change, and a warning says so (set the variable in the environment instead)."""
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        if "numpy" in sys.modules:
            warnings.warn("scratchnet.runtime.configure() ran after NumPy was imported: "
                          "OpenBLAS keeps its default thread timeout; call it first, or set "
                          "OPENBLAS_THREAD_TIMEOUT in the environment", RuntimeWarning,
                          stacklevel=2)
        else:
            os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(int(blas_thread_timeout))
    return {"OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "default")}
