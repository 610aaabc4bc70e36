"""Rectified linear unit."""
from ..runtime.backend import get_array_module
from ..runtime.parallel import parallel_slices
from .base import Layer


class ReLU(Layer):
    """y = max(x, 0).   Backward: dy/dx = 1 where x > 0 and 0 elsewhere (the subgradient 0 is
    taken at x = 0), so dx = dy * [x > 0], and [x > 0] = [y > 0].  Training keeps only that
    boolean mask (1 byte per value); inference keeps nothing but a reference to y, from which
    the mask can still be formed if backward is called in eval mode.
    Element-wise, so it preserves the memory layout of its input, and splits over the CPU's
    cores by samples (scratchnet.runtime.parallel).  The 0 is an array of one sample's zeros in x's
    layout, broadcast over the samples, not a scalar: NumPy runs maximum against a scalar
    several times slower (docs/speed.md), and the result is the same."""

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.empty_like(x)  # the layout of x (empty_like keeps its strides' order)
        mask = xp.empty_like(x, dtype=bool) if self.training else None
        zeros = xp.zeros_like(x[:1])  # (1, C, H, W), x's memory order

        def rectify(part):
            piece = y[part]
            xp.maximum(x[part], zeros, out=piece)
            if mask is not None:
                xp.greater(piece, 0, out=mask[part])

        parallel_slices(rectify, x.shape[0], x.size, xp)
        self._cache = (self.training, mask if self.training else y)
        return y

    def backward(self, dy):
        xp = get_array_module(dy)
        (trained, saved), self._cache = self._cache, None
        mask = saved if trained else saved > 0
        dx = xp.empty_like(dy)
        parallel_slices(lambda part: xp.multiply(dy[part], mask[part], out=dx[part]),
                        dy.shape[0], dy.size, xp)
        return dx
