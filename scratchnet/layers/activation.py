"""Activations: the rectified linear unit, and GELU for the transformer."""
import numpy as np

from ..kernels.elementwise import masked, rectify
from ..runtime.backend import erf, get_array_module
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0).   Backward: dy/dx = 1 where x > 0 and 0 elsewhere (the subgradient 0 is
    taken at x = 0), so dx = dy * [x > 0], and [x > 0] = [y > 0].  Training keeps only that
    boolean mask (1 byte per value); inference keeps nothing but a reference to y, from which
    the mask can still be formed if backward is called in eval mode.
    Element-wise, so it preserves the memory layout of its input (scratchnet.kernels.elementwise
    splits it over the CPU's cores).

    ``inplace=True`` (PyTorch's name) writes y over x, for an x that nothing reads afterwards:
    a layer's output made inside a block, as BasicBlock's are.  The values are the same; the
    pass then writes into memory it has just read instead of into a fresh array (docs/speed.md,
    "ReLU in place")."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace
        self._cache = None

    def forward(self, x):
        y, mask = rectify(x, with_mask=self.training, out=x if self.inplace else None)
        self._cache = (self.training, mask if self.training else y)
        return y

    def backward(self, dy):
        trained, saved = self.saved()
        return masked(dy, saved if trained else saved > 0)


class GELU(Layer):
    """y = x Phi(x) = (x / 2) (1 + erf(x / sqrt(2))), the exact form (PyTorch's default),
    Phi the standard normal CDF: the input scaled by the probability that a standard normal
    variable lies below it, a smooth ReLU that lets small negative values through.

    Backward.  d/dx [x Phi(x)] = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi),
    so dx = dy (Phi(x) + x phi(x)).  Forward keeps x."""

    def forward(self, x):
        self._cache = x
        return 0.5 * x * (1.0 + erf(x * (1.0 / np.sqrt(2.0))))

    def backward(self, dy):
        x = self.saved()
        xp = get_array_module(x)
        cdf = 0.5 * (1.0 + erf(x * (1.0 / np.sqrt(2.0))))
        pdf = xp.exp(-0.5 * x * x) * (1.0 / np.sqrt(2.0 * np.pi))
        return dy * (cdf + x * pdf)
