"""Max pooling, global average pooling, and clip-level time max + mean pooling."""
from ..kernels.pooling import max_pool_backward, max_pool_forward
from ..runtime.backend import get_array_module
from .base import Layer, check_input


class MaxPool2d(Layer):
    """y[n, c, i, j] = max_{a, b} xpad[n, c, s*i + a, s*j + b], xpad padded with -inf.

    The maxima never form the padding.  Offset a of a window reads input row u = s*i + a - p,
    which lies inside the image for the outputs lo_a <= i < hi_a,
        lo_a = max(0, ceil((p - a) / s)),   hi_a = min(Ho, floor((H - 1 + p - a) / s) + 1),
    and a -inf never wins a maximum, so each offset is taken over its own block of outputs
    (and likewise for the columns, offset b).  Every window holds at least one input
    (p <= k/2), so every output gets a value.

    Forward, separably.  The maximum over a k x k window is the maximum over its k columns of
    the maximum down each column; taken down the columns first,
        r[n, i, v, c] = max_a x[n, s*i + a - p, v, c]        (every image column v)
        y[n, i, j, c] = max_b r[n, i, s*j + b - p, c],
    the first k - 1 maxima compare whole image rows (channels-last memory: runs of W*C numbers,
    long loops), and only the k - 1 that step through columns (runs of C numbers) run on r, s
    times smaller than x.  Windows that overlap (s < k) share r, so this takes 2(k - 1)
    element-wise maxima instead of k^2 - 1.

    Backward.  The max is locally the identity on its winning input and constant in the others,
    so dy[n, c, i, j] flows to the single argmax of its window: the first offset (a, b) in
    row-major order whose value equals y, as PyTorch does on ties (routing dy to every tied input
    would multiply the gradient).  Training keeps one boolean mask per offset,
        first[a, b] = (xpad at offset (a, b) == y)  and no earlier offset was equal,
    compared on a copy of x padded with -inf (each offset one strided view over every output:
    whole-array comparisons, faster than the blocks above in pieces), and backward adds
    dy * first[a, b] onto the inputs at offset (a, b) over that offset's block: k*k strided
    slice-adds, each touching every input at most once; windows overlap when s < k, so one
    input may receive contributions from several of them.  dx is written channels-last and
    unpadded, the layout the layer before reads without a copy.
    Both passes run on pieces of the batch shared by the CPU's cores (every step above is per
    sample), in scratchnet.kernels.pooling.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        if padding > kernel_size // 2:
            raise ValueError("MaxPool2d: padding must be at most half the kernel size")
        self._cache = None

    def forward(self, x):
        check_input(x, 4, "MaxPool2d")
        y, self._cache = max_pool_forward(x, self.kernel_size, self.stride, self.padding,
                                          self.training)
        return y

    def backward(self, dy):
        return max_pool_backward(dy, self.saved())


class GlobalAvgPool2d(Layer):
    """y[n, c] = (1 / (H W)) sum_{i, j} x[n, c, i, j]  ->  (N, C).
    Backward: every pixel contributed with weight 1/(H W): dx[n, c, i, j] = dy[n, c] / (H W)."""

    def forward(self, x):
        check_input(x, 4, "GlobalAvgPool2d")
        self._cache = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy):
        xp = get_array_module(dy)
        n, c, h, w = self.saved()
        dx = xp.empty((n, h, w, c), dtype=dy.dtype)
        dx[...] = (dy / (h * w))[:, None, None, :]
        return dx.transpose(0, 3, 1, 2)


class TimeMaxMeanPool(Layer):
    """Clip-level pooling of a (N, C, F, T) map (frequency x time), as in PANNs (Kong et al.,
    2020): the mean over frequency, then the maximum plus the mean over time,

        m[n, c, t] = (1 / F) sum_f x[n, c, f, t],
        y[n, c]    = max_t m[n, c, t] + (1 / T) sum_t m[n, c, t]      ->  (N, C).

    Why: a short event (a bark, a door knock) lights up a few frames of a 5 s clip, and the
    plain average over every pixel dilutes it by the silent rest; the max keeps it, and the
    mean keeps evidence spread over the whole clip.

    Backward.  The max is locally the identity on its winning frame and constant in the others,
    so with t* the first maximiser of m[n, c, :] (the first on ties, as argmax):
        dm[n, c, t] = dy[n, c] ([t = t*] + 1 / T),
    and every frequency bin contributed to m with weight 1/F:
        dx[n, c, f, t] = dm[n, c, t] / F.
    """

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        check_input(x, 4, "TimeMaxMeanPool")
        xp = get_array_module(x)
        m = x.mean(axis=2)                                       # (N, C, T)
        winner = m.argmax(axis=2)                                # (N, C), first on ties
        peak = xp.take_along_axis(m, winner[:, :, None], axis=2)[:, :, 0]
        self._cache = (winner, x.shape)
        return peak + m.mean(axis=2)

    def backward(self, dy):
        xp = get_array_module(dy)
        winner, (n, c, f, t) = self.saved()
        at_winner = xp.arange(t) == winner[:, :, None]          # (N, C, T)
        dm = dy[:, :, None] * (at_winner + dy.dtype.type(1.0 / t))
        # Channels-last memory behind an NCHW view, like the convolutions' maps.
        dx = xp.empty((n, f, t, c), dtype=dy.dtype)
        dx[...] = (dm / f).transpose(0, 2, 1)[:, None, :, :]
        return dx.transpose(0, 3, 1, 2)
