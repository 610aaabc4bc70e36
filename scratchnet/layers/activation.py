"""Rectified linear unit."""
from ..kernels.elementwise import masked, rectify
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0).   Backward: dy/dx = 1 where x > 0 and 0 elsewhere (the subgradient 0 is
    taken at x = 0), so dx = dy * [x > 0], and [x > 0] = [y > 0].  Training keeps only that
    boolean mask (1 byte per value); inference keeps nothing but a reference to y, from which
    the mask can still be formed if backward is called in eval mode.
    Element-wise, so it preserves the memory layout of its input (scratchnet.kernels.elementwise
    splits it over the CPU's cores)."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        y, mask = rectify(x, with_mask=self.training)
        self._cache = (self.training, mask if self.training else y)
        return y

    def backward(self, dy):
        trained, saved = self.saved()
        return masked(dy, saved if trained else saved > 0)
