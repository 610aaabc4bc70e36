"""Rectified linear unit."""
from ..backend import get_array_module
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0).   Backward: dy/dx = 1 where x > 0 and 0 elsewhere (the subgradient 0 is
    taken at x = 0), so dx = dy * [x > 0], and [x > 0] = [y > 0].  Training keeps only that
    boolean mask (1 byte per value); inference keeps nothing but a reference to y, from which
    the mask can still be formed if backward is called in eval mode.
    Element-wise, so it preserves the memory layout of its input."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.maximum(x, 0)
        self._cache = (self.training, y > 0 if self.training else y)
        return y

    def backward(self, dy):
        xp = get_array_module(dy)
        (trained, saved), self._cache = self._cache, None
        mask = saved if trained else saved > 0
        return xp.multiply(dy, mask, dtype=dy.dtype)
