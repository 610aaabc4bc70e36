"""Idle OpenBLAS threads sleep at once instead of spinning (imported first by scratchnet).

After each GEMM, OpenBLAS's worker threads by default spin on their cores for a while (2^28
cycles, about a tenth of a second) waiting for the next one.  Between two GEMMs a training step
runs copies and element-wise passes, which scratchnet.parallel splits over the same cores; a
spinning BLAS thread takes half of a core that a splitting thread needs (the stage-1 im2col
took 13 ms split against 11 ms unsplit with spinning threads, and 8 ms once they sleep).
OPENBLAS_THREAD_TIMEOUT=4 (the smallest setting) makes them sleep almost at once; waking them
for the next GEMM costs microseconds.

OpenBLAS reads the variable once, when NumPy loads it: this module only takes effect if
scratchnet is imported before NumPy (the experiments and benchmarks packages import it first)
or the variable is set in the environment.  A value already set is left alone.  It does not
import NumPy itself.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
