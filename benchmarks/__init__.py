# Before NumPy loads OpenBLAS (scratchnet.blas_threads).
import scratchnet  # noqa: F401
