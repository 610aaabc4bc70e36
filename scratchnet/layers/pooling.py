"""Max pooling, global average pooling, and clip-level time max + mean pooling."""
from ..runtime.backend import get_array_module
from ..kernels.im2col import conv_output_size, taps, to_channels_last
from ..runtime.parallel import parallel_slices
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
    Both passes run on pieces of the batch shared by the CPU's cores (scratchnet.runtime.parallel):
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

    def _inside(self, offset, count, size):
        """(outputs, inputs): the block lo <= i < hi of ``count`` output positions whose
        window offset ``offset`` reads inside an axis of ``size`` inputs, and those inputs,
        s*i + offset - p (see above); None if there are none."""
        s, p = self.stride, self.padding
        lo = max(0, -((offset - p) // s))
        hi = min(count, (size - 1 + p - offset) // s + 1)
        if hi <= lo:
            return None
        return slice(lo, hi), taps(s * lo + offset - p, hi - lo, s)

    def _max_along(self, out, src, axis):
        """out = max over the k offsets along ``axis`` (1: rows, 2: columns) of src, each
        offset over the outputs it reads inside src (see above)."""
        xp = get_array_module(src)
        count, size = out.shape[axis], src.shape[axis]

        def along(index):
            at = [slice(None)] * out.ndim
            at[axis] = index
            return tuple(at)

        started = False
        for offset in range(self.kernel_size):
            inside = self._inside(offset, count, size)
            if inside is None:
                continue
            outputs, inputs = inside
            if not started:
                out[along(slice(0, outputs.start))] = -xp.inf   # (p <= k/2: filled later)
                out[along(slice(outputs.stop, count))] = -xp.inf
                out[along(outputs)] = src[along(inputs)]
                started = True
            else:
                xp.maximum(out[along(outputs)], src[along(inputs)], out=out[along(outputs)])

    def _blocks(self, ho, wo, h, w):
        """[(a*k + b, output block, input block)] for every offset that reads inside x."""
        k = self.kernel_size
        rows = [self._inside(a, ho, h) for a in range(k)]
        cols = [self._inside(b, wo, w) for b in range(k)]
        return [(a * k + b, (slice(None), rows[a][0], cols[b][0]),
                 (slice(None), rows[a][1], cols[b][1]))
                for a in range(k) for b in range(k)
                if rows[a] is not None and cols[b] is not None]

    def forward(self, x):
        check_input(x, 4, "MaxPool2d")
        xp = get_array_module(x)
        k, s, p = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
        if ho < 1 or wo < 1:
            raise ValueError(f"MaxPool2d: input {tuple(x.shape)} is smaller than the window {k}")
        x_nhwc = to_channels_last(x)  # free for channels-last memory
        y = xp.empty((n, ho, wo, c), dtype=x.dtype)
        first = xp.empty((k * k, n, ho, wo, c), dtype=bool) if self.training else None

        def pool(part):  # the samples of ``part``, one piece of the batch at a time
            xs, ys = x_nhwc[part], y[part]
            rows = xp.empty((xs.shape[0], ho, w, c), dtype=x.dtype)
            self._max_along(rows, xs, 1)                    # r: down the window's columns
            self._max_along(ys, rows, 2)                    # y: then across them
            if first is not None:
                self._first_maximum_masks(xs, ys, first[:, part])

        parallel_slices(pool, n, x_nhwc.size, xp)
        # Inference needs no masks; it keeps the input in case backward is called in eval
        # mode all the same.
        self._cache = (self.training, first if self.training else (x_nhwc, y), x.shape)
        return y.transpose(0, 3, 1, 2)

    def _first_maximum_masks(self, x, y, first):
        """first[a*k + b] = where offset (a, b) is the first in row-major order to equal y,
        for x (N, H, W, C).  On x padded with -inf (padding never equals y), where every
        offset's inputs are one strided view over all outputs: the comparisons run whole."""
        xp = get_array_module(y)
        xpad = to_channels_last(x.transpose(0, 3, 1, 2), self.padding, fill=-xp.inf)
        ho, wo = y.shape[1:3]
        k, s = self.kernel_size, self.stride
        claimed = xp.zeros(y.shape, dtype=bool)
        for a in range(k):
            for b in range(k):
                hit = xpad[:, taps(a, ho, s), taps(b, wo, s)] == y
                xp.greater(hit, claimed, out=first[a * k + b])   # hit and not claimed
                claimed |= hit

    def backward(self, dy):
        n, c, h, w = self._cache[2]
        dx = get_array_module(dy).empty((n, h, w, c), dtype=dy.dtype)
        return self.backward_into(dx.transpose(0, 3, 1, 2), dy, zero=True)

    def backward_into(self, dx, dy, zero=False):
        """Add dL/dx into dx (N, C, H, W), an NCHW view of channels-last memory (cleared
        first with ``zero``: backward), and return it: every dy onto its window's first
        maximum.  Consumes the cache."""
        xp = get_array_module(dy)
        trained, saved, (n, c, h, w) = self._cache
        k = self.kernel_size
        dy, dx_nhwc = dy.transpose(0, 2, 3, 1), dx.transpose(0, 2, 3, 1)
        ho, wo = dy.shape[1:3]
        if trained:
            first = saved
        else:
            x_nhwc, y = saved
            first = xp.empty((k * k,) + y.shape, dtype=bool)
            self._first_maximum_masks(x_nhwc, y, first)
        blocks = self._blocks(ho, wo, h, w)

        def route(part):
            dxs, dys = dx_nhwc[part], dy[part]
            if zero:
                dxs[...] = 0
            for t, outputs, inputs in blocks:
                dxs[inputs] += dys[outputs] * first[t][part][outputs]

        parallel_slices(route, n, dx_nhwc.size, xp)
        self._cache = None
        return dx


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
