"""Inverted dropout."""
import numpy as np

from ..runtime.backend import get_array_module
from .base import Layer


class Dropout(Layer):
    """Training: y = x * mask / (1 - p), mask_i ~ Bernoulli(1 - p), so E[y] = x and eval needs no
    rescaling.  Eval: y = x.  Backward: y is linear in x with the same mask, dx = dy * mask/(1-p).

    ``seed`` makes the masks reproducible.  The mask is drawn by a NumPy generator on the host
    and sent to the input's device: a CuPy generator holds a lock, and a layer holding one
    could not be deep-copied (fold_batchnorm, the weight average) or pickled; the mask is
    N x features, small beside the activations, and the same seed gives the same mask on
    every device.

    ``batch_rows = (rows, n)``: this process holds the rows ``rows`` of a batch of n split over
    the ranks of a data-parallel job (scratchnet.distributed).  The mask is drawn for the whole
    batch and its rows taken, so that N ranks draw the masks one process would.
    """

    batch_rows = None

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.reseed(seed)

    def reseed(self, seed):
        self._rng, self._scale = np.random.default_rng(seed), None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._scale = None
            return x
        if self.batch_rows is None:
            draw = self._rng.random(x.shape, dtype=x.dtype)
        else:
            rows, n = self.batch_rows
            draw = self._rng.random((n,) + x.shape[1:], dtype=x.dtype)[rows]
        keep = get_array_module(x).asarray(draw >= self.p)
        self._scale = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._scale

    def backward(self, dy):
        return dy if self._scale is None else dy * self._scale
