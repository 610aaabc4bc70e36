"""The runtime floor: the array module and devices (``backend``, the only module that imports
CuPy), the CPU's worker threads (``cores``, ``parallel``), the BLAS the products run on
(``blas``: set up by the runtime whatever was imported first), BLAS settings
(:func:`blas_settings`, :func:`configure`, below) and memory (``memory``).  Nothing here
imports the kernels or the layers.

The products of the kernels and layers run on SciPy's copy of OpenBLAS, which ``blas`` loads
after setting :func:`blas_settings` in the environment, so a script that imports NumPy first
gets the same products as the commands.  The commands also call :func:`configure` first,
before anything imports NumPy, so that NumPy's own OpenBLAS (which the products no longer
use, but other NumPy calls may) reads the same settings.

Why the BLAS threads' timeout.  After each GEMM, OpenBLAS's worker threads spin on their cores
for about a tenth of a second (2^28 cycles) waiting for the next one; between GEMMs a training
step runs copies and element-wise passes, which ``parallel`` splits over the same cores, and a
spinning thread takes half a core from them.  Sleeping at once (2^4 cycles) costs a wake-up
before each of the nine GEMMs of a shifted convolution.  2^18 cycles (under a
tenth of a millisecond) keeps a thread awake across such a run and asleep through the
element-wise work (docs/speed.md, "Waking threads"; ``python -m benchmarks.bench``).

Why the BLAS thread count under MPI.  OpenBLAS starts a thread per core in every process: two
ranks on two cores would run four BLAS threads on two cores, each GEMM's threads waiting for
cores the other rank holds.  Each rank takes its share, cores / ranks on the host
(scratchnet.runtime.cores), unless the environment names a count.
"""
import os
import sys
import warnings

from .cores import local_ranks, thread_count

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_settings(blas_thread_timeout=18):
    """The environment OpenBLAS should load with (why: above): the thread timeout, and under
    an MPI launcher with several ranks on this host each rank's share of the cores, unless
    one of BLAS_THREAD_VARIABLES is set already."""
    settings = {"OPENBLAS_THREAD_TIMEOUT": str(int(blas_thread_timeout))}
    if local_ranks() > 1 and not any(v in os.environ for v in BLAS_THREAD_VARIABLES):
        settings.update(dict.fromkeys(BLAS_THREAD_VARIABLES, str(thread_count())))
    return settings


def configure(blas_thread_timeout=18):
    """Set the process up for scratchnet's CPU work; returns the settings in effect.

    ``blas_thread_timeout``: how long OpenBLAS's idle threads spin before they sleep, as
    OPENBLAS_THREAD_TIMEOUT (2^value cycles; why 18: above).  A
    value already in the environment is kept.  After NumPy has loaded OpenBLAS it can no longer
    change, and a warning says so (set the variable in the environment instead).

    Under an MPI launcher with several ranks on this host, the BLAS thread count is set to this
    rank's share of the cores (why: above), unless one of BLAS_THREAD_VARIABLES is set.
    The BLAS scratchnet's products run on (scratchnet.runtime.blas) takes the same settings
    when it loads, whatever was imported first."""
    settings = {k: v for k, v in blas_settings(blas_thread_timeout).items()
                if k not in os.environ}
    if settings:
        if "numpy" in sys.modules:
            warnings.warn("scratchnet.runtime.configure() ran after NumPy was imported: "
                          f"OpenBLAS keeps its defaults for {', '.join(sorted(settings))}; call "
                          "it first, or set them in the environment", RuntimeWarning,
                          stacklevel=2)
        else:
            os.environ.update(settings)
    names = ("OPENBLAS_THREAD_TIMEOUT",) + BLAS_THREAD_VARIABLES
    return {k: os.environ.get(k, "default") for k in names}
