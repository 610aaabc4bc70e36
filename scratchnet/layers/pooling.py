"""Max pooling, global average pooling, and clip-level time max + mean pooling."""
from ..backend import get_array_module
from ..im2col import conv_output_size, taps, to_channels_last
from ..parallel import parallel_slices
from .base import Layer, check_input


class MaxPool2d(Layer):
    """y[n, c, i, j] = max_{a, b} xpad[n, c, s*i + a, s*j + b], xpad padded with -inf.

    Forward, separably.  The maximum over a k x k window is the maximum over its k rows of the
    maximum within each row:  r[n, c, u, j] = max_b xpad[n, c, u, s*j + b],
    y[n, c, i, j] = max_a r[n, c, s*i + a, j].  When windows overlap (s < k) neighbouring
    windows share these row maxima, so this takes 2(k - 1) element-wise maxima instead of k^2 - 1.

    Backward.  The max is locally the identity on its winning input and constant in the others,
    so dy[n, c, i, j] flows to the single argmax of its window: the first offset (a, b) in
    row-major order whose value equals y, as PyTorch does on ties (routing dy to every tied input
    would multiply the gradient).  Training keeps one boolean mask per offset,
        first[a, b] = (xpad at offset (a, b) == y)  and no earlier offset was equal,
    and backward adds dy * first[a, b] onto the inputs at offset (a, b): k*k strided slice-adds,
    each touching every input position at most once; windows overlap when s < k, so one input
    may receive contributions from several of them.
    Both passes run on pieces of the batch shared by the CPU's cores (scratchnet.parallel):
    every step above is per sample.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        if padding > kernel_size // 2:
            raise ValueError("MaxPool2d: padding must be at most half the kernel size")
        self._cache = None

    def _offset(self, a, b, ho, wo):
        """Index of the inputs at window offset (a, b) of every output position."""
        return slice(None), taps(a, ho, self.stride), taps(b, wo, self.stride)

    def forward(self, x):
        check_input(x, 4, "MaxPool2d")
        xp = get_array_module(x)
        k, s, p = self.kernel_size, self.stride, self.padding
        ho, wo = conv_output_size(x.shape[2], k, s, p), conv_output_size(x.shape[3], k, s, p)
        if ho < 1 or wo < 1:
            raise ValueError(f"MaxPool2d: input {tuple(x.shape)} is smaller than the window {k}")
        xpad = to_channels_last(x, p, fill=-xp.inf)
        n, c = x.shape[:2]
        y = xp.empty((n, ho, wo, c), dtype=x.dtype)
        first = xp.empty((k * k, n, ho, wo, c), dtype=bool) if self.training else None

        def pool(part):  # the samples of ``part``, one piece of the batch at a time
            xs, ys = xpad[part], y[part]
            rows = xs[:, :, taps(0, wo, s)].copy()        # r: max within each row
            for b in range(1, k):
                xp.maximum(rows, xs[:, :, taps(b, wo, s)], out=rows)
            ys[...] = rows[:, taps(0, ho, s)]             # y: max over the k rows
            for a in range(1, k):
                xp.maximum(ys, rows[:, taps(a, ho, s)], out=ys)
            if first is not None:
                self._first_maximum_masks(xs, ys, first[:, part])

        parallel_slices(pool, n, xpad.size, xp)
        # Inference needs no masks; it keeps the padded input in case backward is called in
        # eval mode all the same.
        self._cache = (self.training, first if self.training else (xpad, y), x.shape)
        return y.transpose(0, 3, 1, 2)

    def _first_maximum_masks(self, xpad, y, first):
        """first[a*k + b] = where offset (a, b) is the first in row-major order to equal y."""
        xp = get_array_module(y)
        ho, wo = y.shape[1:3]
        k = self.kernel_size
        claimed = xp.zeros(y.shape, dtype=bool)
        for a in range(k):
            for b in range(k):
                hit = xpad[self._offset(a, b, ho, wo)] == y
                xp.greater(hit, claimed, out=first[a * k + b])   # hit and not claimed
                claimed |= hit

    def backward(self, dy):
        xp = get_array_module(dy)
        trained, saved, (n, c, h, w) = self._cache
        k, p = self.kernel_size, self.padding
        dy = dy.transpose(0, 2, 3, 1)
        ho, wo = dy.shape[1:3]
        if trained:
            first = saved
        else:
            xpad, y = saved
            first = xp.empty((k * k,) + y.shape, dtype=bool)
            self._first_maximum_masks(xpad, y, first)
        dx = xp.empty((n, h + 2 * p, w + 2 * p, c), dtype=dy.dtype)

        def route(part):
            dxs, dys = dx[part], dy[part]
            dxs[...] = 0
            for a in range(k):
                for b in range(k):
                    dxs[self._offset(a, b, ho, wo)] += dys * first[a * k + b][part]

        parallel_slices(route, n, dx.size, xp)
        self._cache = None
        return dx[:, p:p + h, p:p + w].transpose(0, 3, 1, 2)


class GlobalAvgPool2d(Layer):
    """y[n, c] = (1 / (H W)) sum_{i, j} x[n, c, i, j]  ->  (N, C).
    Backward: every pixel contributed with weight 1/(H W): dx[n, c, i, j] = dy[n, c] / (H W)."""

    def __init__(self):
        super().__init__()
        self._shape = None

    def forward(self, x):
        check_input(x, 4, "GlobalAvgPool2d")
        self._shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy):
        xp = get_array_module(dy)
        n, c, h, w = self._shape
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
        (winner, (n, c, f, t)), self._cache = self._cache, None
        at_winner = xp.arange(t) == winner[:, :, None]          # (N, C, T)
        dm = dy[:, :, None] * (at_winner + dy.dtype.type(1.0 / t))
        # Channels-last memory behind an NCHW view, like the convolutions' maps.
        dx = xp.empty((n, f, t, c), dtype=dy.dtype)
        dx[...] = (dm / f).transpose(0, 2, 1)[:, None, :, :]
        return dx.transpose(0, 3, 1, 2)
