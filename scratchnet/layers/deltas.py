"""Delta channels: a spectrogram's rate of change along time, stacked beside it."""
import numpy as np

from ..runtime import blas
from ..runtime.backend import get_array_module
from .base import Layer, check_input


def delta_matrix(frames, width=9):
    """The (T, T) operator D of the regression delta over ``width`` frames (HTK's, and
    librosa.feature.delta's in the interior), edges replicated:
        (D x)[t] = sum_{n=1}^{N} n (x[min(t + n, T - 1)] - x[max(t - n, 0)]) / (2 sum n^2),
    N = (width - 1) / 2: the slope of the least-squares line through the 2N + 1 frames around
    t.  Host float64; :class:`TimeDeltas` applies it as x D^T along the last axis."""
    if not isinstance(width, int) or width < 3 or width % 2 == 0:
        raise ValueError(f"delta width must be an odd whole number >= 3, got {width!r}")
    half = (width - 1) // 2
    norm = 2.0 * sum(n * n for n in range(1, half + 1))
    d = np.zeros((frames, frames))
    rows = np.arange(frames)
    for n in range(1, half + 1):
        np.add.at(d, (rows, np.minimum(rows + n, frames - 1)), n / norm)
        np.add.at(d, (rows, np.maximum(rows - n, 0)), -n / norm)
    return d


def along_time(a, m):
    """a M for each row of ``a`` (..., T) along its last axis: one (rows, T) x (T, T) product,
    where NumPy's stacked 4-D matmul ran 1.3x slower on a quiet host and up to 40x beside a
    training run (docs/speed.md, "Time deltas as one product")."""
    return blas.matmul(a.reshape(-1, a.shape[-1]), m).reshape(a.shape)


class TimeDeltas(Layer):
    """x (N, C, F, T) -> [x, D x, D^2 x] (N, C (1 + order), F, T) along the channel axis,
    D = :func:`delta_matrix` acting on the time axis: the deltas and delta-deltas of speech
    recognition's features, here as the first layer of a network, without parameters.  The
    delta-deltas are the deltas of the deltas, as HTK computes them (librosa's order 2 fits a
    parabola instead).

    Forward: with x a row vector along time, y_k = x (D^T)^k for k = 0..order.

    Backward.  Each y_k is linear in x, so dL/dx = sum_k dL/dy_k (dy_k/dx) and, for
    y = x A, dL/dx = dL/dy A^T; with A = (D^T)^k, A^T = D^k:
        dL/dx = sum_{k=0}^{order} g_k D^k,   g_k = dL/dy_k (the k-th block of channels),
    evaluated by Horner's rule, dL/dx = g_0 + (g_1 + (g_2 + ...) D) D."""

    def __init__(self, order=2, width=9):
        super().__init__()
        if order not in (1, 2):
            raise ValueError(f"TimeDeltas: order must be 1 (deltas) or 2 (and delta-deltas), "
                             f"got {order!r}")
        delta_matrix(3, width)  # checks the width now, not at the first forward pass
        self.order, self.width = order, width
        self._operators = {}  # (frames, dtype, array module) -> D on that device
        self._cache = None

    def _operator(self, x):
        xp = get_array_module(x)
        key = (x.shape[-1], x.dtype.str, xp.__name__)
        if key not in self._operators:
            self._operators[key] = xp.asarray(delta_matrix(x.shape[-1], self.width),
                                              dtype=x.dtype)
        return self._operators[key]

    def forward(self, x):
        check_input(x, 4, "TimeDeltas")
        xp = get_array_module(x)
        d = self._operator(x)
        blocks = [x]
        for _ in range(self.order):
            blocks.append(along_time(blocks[-1], d.T))
        self._cache = (d, x.shape[1])
        return xp.concatenate(blocks, axis=1)

    def backward(self, dy):
        d, channels = self.saved()
        g = [dy[:, k * channels:(k + 1) * channels] for k in range(self.order + 1)]
        dx = g[-1]
        for k in range(self.order - 1, -1, -1):
            dx = g[k] + along_time(dx, d)
        return dx

    def __repr__(self):
        return f"TimeDeltas(order={self.order}, width={self.width})"
