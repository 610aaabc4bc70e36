"""ESC-50 experiments: data, augmentation, model presets and the command-line tools."""
# Before NumPy loads OpenBLAS (scratchnet.blas_threads).
import scratchnet  # noqa: F401
