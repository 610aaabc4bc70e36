"""The runtime floor: the array module and devices (``backend``, the only module that imports
CuPy), the CPU's worker threads (``cores``, ``parallel``), the BLAS the products run on
(``blas``), its settings (:func:`blas_settings`, below) and memory (``memory``).  Nothing here
imports the kernels or the layers.

The runtime takes charge of the process at run time, whatever the script imported first:
every matrix product of the kernels and layers runs on SciPy's copy of OpenBLAS, which
``blas`` loads at the first product after setting :func:`blas_settings` in the environment,
and at the same moment ``memory`` keeps freed memory for reuse.  A user's script therefore
gets what the commands get, with no preamble and no import order, and :func:`settings` reads
what is in force.  NumPy's own OpenBLAS keeps its defaults; nothing of scratchnet's runs on
it.

Why the BLAS threads' timeout.  After each GEMM, OpenBLAS's worker threads spin on their cores
for about a tenth of a second (2^28 cycles) waiting for the next one; between GEMMs a training
step runs copies and element-wise passes, which ``parallel`` splits over the same cores, and a
spinning thread takes half a core from them.  Sleeping at once (2^4 cycles) costs a wake-up
before each of the nine GEMMs of a shifted convolution.  2^18 cycles (under a
tenth of a millisecond) keeps a thread awake across such a run and asleep through the
element-wise work (docs/speed.md, "Waking threads"; ``python -m benchmarks.bench``).

Who splits the products.  Two designs give both cores to a product: OpenBLAS's own threads
split it, or scratchnet's threads each run a one-thread BLAS on a block of it.  Measured
(``python -m benchmarks.gemm_split``; docs/speed.md, "Who splits the GEMMs"): on the
convolutions' forward products the two are level (0.92-1.04); the weight gradients with a
small output (16-64 channels), whose sums OpenBLAS's threads share poorly, run faster on ours
(1.03-1.37x).  So BLAS keeps the threads for every product but two kinds, which run on
``parallel``'s threads with BLAS held to one thread (a global setting) for the moment they take
(``blas.one_thread_products``): the long sums into a small output, which
``blas.summed_matmul`` cuts into fixed parts (2-7% of a training step where the narrow
convolutions are; docs/speed.md, "Long sums over the runtime's threads"), and the
convolutions run in cache-sized blocks, of grid positions (scratchnet.kernels.shifted) or of
samples (scratchnet.kernels.patch_gemm).
``parallel`` splits the element-wise work, and the timeout below keeps BLAS's threads from
spinning beside it.

Why the BLAS thread count under MPI.  OpenBLAS starts a thread per core in every process: two
ranks on two cores would run four BLAS threads on two cores, each GEMM's threads waiting for
cores the other rank holds.  Each rank takes its share, cores / ranks on the host
(scratchnet.runtime.cores), unless the environment names a count.
"""
import os

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


def settings():
    """What the runtime set up at its first product (running one if none has run): the
    settings its BLAS loaded with (scratchnet.runtime.blas) and the memory's
    (scratchnet.runtime.memory): the same for a user's script as for the commands."""
    from . import blas, memory
    return {"blas": blas.settings(), "memory": memory.state()}
