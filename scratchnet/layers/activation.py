"""Rectified linear unit."""
from ..backend import get_array_module
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0).   Backward: dy/dx = 1 where x > 0 and 0 elsewhere (the subgradient 0 is
    taken at x = 0), so dx = dy * [x > 0].  Only the boolean mask is kept (1 byte per value).
    Element-wise, so it preserves the memory layout of its input."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        xp = get_array_module(x)
        mask = x > 0
        self._cache = mask
        return xp.multiply(x, mask, dtype=x.dtype)

    def backward(self, dy):
        xp = get_array_module(dy)
        mask, self._cache = self._cache, None
        return xp.multiply(dy, mask, dtype=dy.dtype)
