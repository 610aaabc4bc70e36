"""Idle OpenBLAS threads spin only briefly before they sleep (imported first by scratchnet).

After each GEMM, OpenBLAS's worker threads by default spin on their cores for a while (2^28
cycles, about a tenth of a second) waiting for the next one.  Between two GEMMs a training step
runs copies and element-wise passes, which scratchnet.parallel splits over the same cores; a
spinning BLAS thread takes half of a core that a splitting thread needs (the stage-1 im2col
took 13 ms split against 11 ms unsplit with spinning threads, and 8 ms once they sleep).
Sleeping at once (OPENBLAS_THREAD_TIMEOUT=4, the smallest setting) has its own cost: waking a
thread takes of the order of 100 microseconds on this machine (scratchnet.parallel), and the
shifted convolutions call their GEMMs nine in a row.  OPENBLAS_THREAD_TIMEOUT=18, 2^18 cycles
(under a tenth of a millisecond), keeps a BLAS thread awake across such a run of GEMMs and
lets it sleep through the element-wise work: reference training steps in alternating
processes, 15 pairs, x0.81-1.08 against 4 (median x0.98); `cpu128`, 3 pairs, x0.88-0.96.

OpenBLAS reads the variable once, when NumPy loads it: this module only takes effect if
scratchnet is imported before NumPy (the experiments and benchmarks packages import it first)
or the variable is set in the environment.  A value already set is left alone.  It does not
import NumPy itself.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")
