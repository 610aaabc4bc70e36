"""Weight initialisation.

Kaiming (He) normal, fan-in mode: W ~ N(0, 2 / fan_in).  For y = W x with independent,
zero-mean weights, Var(y) = fan_in * Var(W) * E[x^2]; a ReLU keeps half of the second moment of
its (symmetric) input, so E[x^2] = Var(pre-activation) / 2, and Var(W) = 2 / fan_in keeps the
pre-activation variance constant from layer to layer (He et al., 2015).
"""
import numpy as np


def default_rng(rng):
    """A NumPy Generator: the one given, or a fresh unseeded one."""
    return rng if rng is not None else np.random.default_rng()


def kaiming_normal(shape, fan_in, rng=None, dtype=np.float32):
    std = np.sqrt(2.0 / fan_in)
    return (default_rng(rng).standard_normal(shape) * std).astype(dtype)


def uniform_fan_in(shape, fan_in, rng=None, dtype=np.float32):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for biases and the linear head."""
    bound = 1.0 / np.sqrt(fan_in)
    return default_rng(rng).uniform(-bound, bound, size=shape).astype(dtype)
