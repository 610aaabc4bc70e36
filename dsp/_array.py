"""The array module of the inputs (NumPy or CuPy), without importing CuPy here.

dsp and scratchnet do not import each other, so the one-line dispatch is repeated here: an
array's module is found from its type, and CuPy arrays are recognised by their module name.
"""
import sys

import numpy as np


def get_array_module(*arrays):
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return sys.modules["cupy"]
    return np


def as_strided(x, shape, strides):
    if get_array_module(x) is np:
        return np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
    return sys.modules["cupy"].lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


def rfft(x, n=None, axis=-1):
    """Real FFT with the inputs' module: scipy.fft on the CPU (pocketfft in C++, native float32
    and multi-threaded, several times faster than numpy.fft here), cupy.fft on the GPU."""
    xp = get_array_module(x)
    if xp is np:
        import scipy.fft
        return scipy.fft.rfft(x, n=n, axis=axis, workers=-1)
    return xp.fft.rfft(x, n=n, axis=axis)


def irfft(x, n=None, axis=-1):
    xp = get_array_module(x)
    if xp is np:
        import scipy.fft
        return scipy.fft.irfft(x, n=n, axis=axis, workers=-1)
    return xp.fft.irfft(x, n=n, axis=axis)
