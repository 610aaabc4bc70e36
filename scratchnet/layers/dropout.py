"""Inverted dropout."""
from ..backend import get_array_module
from .base import Layer


class Dropout(Layer):
    """Training: y = x * mask / (1 - p), mask_i ~ Bernoulli(1 - p), so E[y] = x and eval needs no
    rescaling.  Eval: y = x.  Backward: y is linear in x with the same mask, dx = dy * mask/(1-p).

    ``seed`` makes the masks reproducible; one generator per array module (NumPy or CuPy).
    """

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.reseed(seed)

    def reseed(self, seed):
        self._seed, self._rng, self._scale = seed, None, None

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._scale = None
            return x
        xp = get_array_module(x)
        # Keyed by the module's name, not the module, so that a model can be deep-copied.
        if self._rng is None or self._rng[0] != xp.__name__:
            self._rng = (xp.__name__, xp.random.default_rng(self._seed))
        keep = self._rng[1].random(x.shape, dtype=x.dtype) >= self.p
        self._scale = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._scale

    def backward(self, dy):
        return dy if self._scale is None else dy * self._scale
