"""Max pooling and global average pooling."""
from ..backend import get_array_module
from ..im2col import conv_output_size, sliding_windows, to_channels_last
from .base import Layer, check_input


class MaxPool2d(Layer):
    """y[n, c, i, j] = max_{a, b} xpad[n, c, s*i + a, s*j + b], xpad padded with -inf.

    Backward.  The max is locally the identity on its winning input and constant in the others,
    so dy[n, c, i, j] flows to the single argmax of its window (the first one on ties, as
    PyTorch).  Windows overlap when s < k, so one input may receive several contributions;
    they are added with kh*kw strided slice-adds, one per window offset (a, b), each of which
    touches every input position at most once.
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
        xp = get_array_module(x)
        k, s, p = self.kernel_size, self.stride, self.padding
        if conv_output_size(x.shape[2], k, s, p) < 1 or conv_output_size(x.shape[3], k, s, p) < 1:
            raise ValueError(f"MaxPool2d: input {tuple(x.shape)} is smaller than the window {k}")
        windows = sliding_windows(to_channels_last(x, p, fill=-xp.inf), k, k, s)
        if self.training:
            y, argmax = self._max_and_argmax(windows)
            self._cache = (argmax, x.shape)
        else:
            # Inference needs no argmax: a plain running maximum.  The windows are kept (a
            # view, no copy) in case backward is called in eval mode all the same.
            y = windows[:, :, :, 0, 0].copy()
            for a in range(k):
                for b in range(k):
                    xp.maximum(y, windows[:, :, :, a, b], out=y)
            self._cache = (windows, x.shape)
        return y.transpose(0, 3, 1, 2)

    def _max_and_argmax(self, windows):
        """Running max over the k*k offsets, and which offset won (the first, on ties); no
        (N, Ho, Wo, k*k, C) copy is ever made."""
        xp = get_array_module(windows)
        k = self.kernel_size
        y = windows[:, :, :, 0, 0].copy()
        argmax = xp.zeros(y.shape, dtype=xp.uint8)
        for a in range(k):
            for b in range(k):
                if a == 0 and b == 0:
                    continue
                candidate = windows[:, :, :, a, b]
                better = candidate > y
                xp.copyto(y, candidate, where=better)
                xp.copyto(argmax, a * k + b, where=better)
        return y, argmax

    def backward(self, dy):
        xp = get_array_module(dy)
        argmax, (n, c, h, w) = self._cache
        if argmax.ndim == 6:  # forward ran in eval mode and kept the windows
            argmax = self._max_and_argmax(argmax)[1]
        k, s, p = self.kernel_size, self.stride, self.padding
        dy = dy.transpose(0, 2, 3, 1)
        ho, wo = dy.shape[1:3]
        dx = xp.zeros((n, h + 2 * p, w + 2 * p, c), dtype=dy.dtype)
        for a in range(k):
            for b in range(k):
                routed = xp.where(argmax == a * k + b, dy, 0)
                dx[:, a:a + s * (ho - 1) + 1:s, b:b + s * (wo - 1) + 1:s] += routed
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
