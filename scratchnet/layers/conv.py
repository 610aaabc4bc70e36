"""2-D convolution (cross-correlation, as in every deep-learning library) through im2col, or for
stride-1 "same" convolutions through shifted GEMMs on large maps (scratchnet.shifted) and one
shared patch matrix on maps of at most p + 1 rows (scratchnet.short_maps)."""
from .. import conv_policy
from ..backend import get_array_module
from ..im2col import col2im, conv_output_size, im2col, tap_planes
from ..long_rows import map_long_rows
from ..shifted import correlate_shifted, crop, to_grid, weight_gradient_shifted
from ..short_maps import (correlate_short, input_gradient_short, row_window_patches,
                          weight_gradient_short)
from .base import Layer, Parameter, check_input
from .init import kaiming_normal, uniform_fan_in


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def channels_last_weight(w):
    """The (C_out, C_in, kh, kw) array w with its numbers in (C_out, kh, kw, C_in) memory: the
    same values and shape (PyTorch's layout at the interface), the memory order of the patch
    matrix's columns (a, b, c).  Then Wm = W as (C_out, kh*kw*C_in) is a free view, dL/dWm adds
    into the gradient without a transpose, and every per-tap slice W[:, :, a, b] has
    contiguous rows of C_in numbers: the GEMMs read them in place instead of a strided copy
    of every weight on every call."""
    xp = get_array_module(w)
    return xp.ascontiguousarray(w.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def weight_gradient_matrix(cols, dy_mat):
    """dL/dWm = dY^T X (C_out, K) from the patches X (M, K) and dY (M, C_out): a sum over the M
    rows, which BLAS runs faster with the wider of the two factors giving the rows of its
    output, so it is computed as (X^T dY)^T when K > C_out (min of 9 calls: the stem's
    (128000 x 49) patches 7.1-8.3 -> 4.4-4.6 ms; stage 3's 1.6 -> 1.1-1.5 ms) and as dY^T X
    otherwise (the 1x1 shortcuts, K = C_in < C_out: 0.34 against 0.49 ms)."""
    if cols.shape[1] > dy_mat.shape[1]:
        return (cols.T @ dy_mat).T
    return dy_mat.T @ cols


class Conv2d(Layer):
    """y[n, o, i, j] = b[o] + sum_{c, a, b'} W[o, c, a, b'] * xpad[n, c, s*i + a, s*j + b']

    Shapes: x (N, C_in, H, W), W (C_out, C_in, kh, kw), b (C_out,), y (N, C_out, Ho, Wo),
    Ho = (H + 2p - kh) // s + 1.  Initialisation: Kaiming normal, fan_in = C_in*kh*kw (convs
    here feed ReLUs); bias U(±1/sqrt(fan_in)).  W keeps its numbers in (C_out, kh, kw, C_in)
    memory behind that shape (:func:`channels_last_weight`); any other layout gives the same
    results, through copies.
    ``needs_input_grad=False`` (for a first layer, whose input is data) makes backward skip
    dL/dx, i.e. the dY Wm GEMM and col2im, and return None.

    As a matrix product.  With X = im2col(x) of shape (M, K), M = N*Ho*Wo, K = kh*kw*C_in, and
    Wm = W laid out as (C_out, K) in the same (a, b', c) column order:
        Y = X Wm^T + b                                   (M, C_out)
    Backward.  Y is linear in X and in Wm, so for an upstream gradient dY (M, C_out):
        dL/dWm = dY^T X          (each weight meets every row of X it multiplied)
        dL/db  = sum_rows dY     (b is added to every row)
        dL/dX  = dY Wm           and dL/dx = col2im(dL/dX), the adjoint of im2col, which adds
                                 the gradient of every patch back onto the pixels it copied.
    With one input channel (the stem) and a bias (a folded BatchNorm's shift), the bias is one
    more column of the same GEMM, [X | 1] [Wm | b]^T = X Wm^T + 1 b^T, from one more tap plane
    of ones (scratchnet.im2col.tap_planes), instead of a pass over the stem's large Y.
    Stride 1: dL/dx is itself a convolution.  Written per pixel, the sum above is
        dx[c, u, v] = sum_{o, a, b'} dy[o, u + p - a, v + p - b'] W[o, c, a, b']
    over the (i, j) = (u + p - a, v + p - b') inside dy.  Substituting a = kh-1-a~, b' = kw-1-b~:
        dx[c, u, v] = sum_{o, a~, b~} dypad[o, u + a~, v + b~] W[o, c, kh-1-a~, kw-1-b~],
    with dy zero-padded by kh-1-p: the convolution of dy with the kernel flipped in space and
    transposed in channels, W~[c, o, a~, b~] = W[o, c, kh-1-a~, kw-1-b~].  Its output is H x W
    again.  Backward then runs as im2col(dy) W~m^T, a gather and one GEMM, instead of a GEMM
    with kh*kw times more outputs followed by kh*kw slice-adds in col2im.

    Which algorithm runs is chosen per call by scratchnet.conv_policy, from the geometry and
    the device, and recorded in ``self.algorithm`` and the cache that backward reads.

    Shifted GEMMs.  A stride-1 "same" convolution (odd k, p = (k-1)/2) on a map large enough
    (on the CPU: stages 1-3 of cpu128 and of cpu) skips im2col in the forward pass: the image
    rows are laid out row index outermost, each followed by p shared zero columns, and Y is a
    sum of k*k GEMMs over shifted slices of that flattened grid, each kernel row only over the
    output rows it meets (derived in scratchnet.shifted); training keeps only the grid, not
    the k*k times larger patch matrix.
    Its dL/dx is the flipped-kernel convolution above, summed the same way; with p = (k-1)/2
    the flipped convolution's padding k-1-p is p again, so it reads dy on the same grid as x.
    dL/dWm = dY^T X sums over the same shifted rows: one GEMM per kernel row over "row
    patches" of the kept grid (its k horizontal neighbours side by side, a gather k times the
    input instead of im2col's k*k), with dy's grid as dY.

    Short maps.  On a map of H <= p + 1 rows (one or two for k = 3: the last stage on 64 mel
    bands) every output row reads every input row, with kernel row r - i + p for input row r,
    so one patch matrix of the H rows' windows (H*k*C_in columns instead of k*k*C_in) serves
    all output rows, each a GEMM with its own block of kernel rows; training keeps those
    patches, H/k of im2col's (derived in scratchnet.short_maps).  The CPU's policy prefers it
    to the other two paths: it multiplies no padding at all.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, needs_input_grad=True):
        super().__init__()
        self.needs_input_grad = needs_input_grad
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding = stride, padding
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        self.weight = Parameter(channels_last_weight(
            kaiming_normal((out_channels, in_channels, kh, kw), fan_in, rng)))
        self.bias = Parameter(uniform_fan_in((out_channels,), fan_in, rng)) if bias else None
        self._cache = None
        self.algorithm = None  # the algorithm of the last forward pass (conv_policy)

    def geometry(self, x_shape):
        """What the convolution policy chooses by, for an input of shape ``x_shape``."""
        return conv_policy.ConvGeometry(self.in_channels, x_shape[2], x_shape[3],
                                        self.kernel_size, self.stride, self.padding,
                                        self.bias is not None)

    def _weight_matrix(self):
        # (C_out, C_in, kh, kw) -> (C_out, kh*kw*C_in), matching im2col's (a, b, c) columns:
        # a view of channels-last weight memory (channels_last_weight), a copy otherwise.
        return self.weight.data.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def forward(self, x):
        check_input(x, 4, "Conv2d", self.in_channels)
        xp = get_array_module(x)
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        ho = conv_output_size(h, kh, self.stride, self.padding)
        wo = conv_output_size(w, kw, self.stride, self.padding)
        if ho < 1 or wo < 1:
            raise ValueError(f"Conv2d: input {tuple(x.shape)} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        algorithm = self.algorithm = conv_policy.choose(xp, self.geometry(x.shape))
        if algorithm == "short":
            patches = row_window_patches(x, kh, self.padding)
            y = correlate_short(patches, self._weight_matrix(), n, h, w, kh, self.padding)
            if self.bias is not None:
                y += self.bias.data
            self._cache = (algorithm, self.training, patches if self.training else x, x.shape)
            return y.transpose(0, 3, 1, 2)
        if algorithm == "shifted":
            grid = to_grid(x, self.padding)
            y = correlate_shifted(grid, h, self.weight.data)
            y = crop(y, n, h, w, None if self.bias is None else self.bias.data)
            # Training keeps the grid (the patches' source); eval a reference to x.
            self._cache = (algorithm, self.training, grid if self.training else x, x.shape)
            return y.transpose(0, 3, 1, 2)
        if algorithm == "bias_column":
            # One channel (a folded stem): the bias rides in the GEMM, [X | 1] [Wm | b]^T =
            # X Wm^T + 1 b^T, from one more tap plane of ones, instead of a pass over Y.
            planes = tap_planes(x, kh, kw, self.stride, self.padding, ones=True)
            weights = xp.concatenate([self._weight_matrix(), self.bias.data[:, None]], axis=1)
            y = planes.T @ weights.T
            cols = planes[:-1].T
        else:
            cols = im2col(x, kh, kw, self.stride, self.padding)
            y = cols @ self._weight_matrix().T
        if self.bias is not None and algorithm == "im2col":  # (a folded BatchNorm's shift)
            map_long_rows(lambda out, bias: xp.add(out, bias, out=out), y, [], [self.bias.data])
        # Training keeps the patch matrix for dL/dWm; inference keeps only a reference to x
        # (kh*kw times smaller), from which backward can rebuild the patches if it is called.
        # The cache starts with the mode it was made in (the convention of every layer here).
        self._cache = (algorithm, self.training, cols if self.training else x, x.shape)
        # Channels-last memory behind an NCHW view (see scratchnet.im2col).
        return y.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, dy):
        xp = get_array_module(dy)
        algorithm, trained, saved, x_shape = self._cache
        kh, kw = self.kernel_size
        p = self.padding
        n, c, h, w = x_shape
        dy_mat = xp.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, self.out_channels)
        short, shifted = algorithm == "short", algorithm == "shifted"
        if short:
            patches = saved if trained else row_window_patches(saved, kh, p)
            dw = weight_gradient_short(patches, dy, kh, p).reshape(self.out_channels, kh, kw, c)
        elif shifted:
            # Training kept x's grid; eval kept x, laid out here.  dy on its own grid serves
            # both dL/dW (dY at the grid positions) and dL/dx.
            grid = saved if trained else to_grid(saved, p)
            dy_grid = to_grid(dy, kh - 1 - p)
            dw = weight_gradient_shifted(grid, dy_grid, h, kh)
        else:
            cols = saved if trained else im2col(saved, kh, kw, self.stride, p)
            dw = weight_gradient_matrix(cols, dy_mat).reshape(self.out_channels, kh, kw,
                                                              self.in_channels)
        self.weight.grad += dw.transpose(0, 3, 1, 2)
        if self.bias is not None:
            self.bias.grad += dy_mat.sum(axis=0)
        self._cache = None
        if not self.needs_input_grad:
            return None
        if short:
            return input_gradient_short(dy, self._weight_matrix(), c, kh, p)
        if shifted:
            flipped = self.weight.data[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # W~ (C_in, C_out)
            return crop(correlate_shifted(dy_grid, h, flipped), n, h, w).transpose(0, 3, 1, 2)
        if self.stride == 1 and kh == kw and p <= kh - 1:
            # W~m^T (kh*kw*C_out, C_in): row (a~, b~, o) is W[o, :, kh-1-a~, kw-1-b~], a copy
            # in runs of C_in numbers from channels-last weight memory.
            flipped_t = self.weight.data.transpose(2, 3, 0, 1)[::-1, ::-1].reshape(-1, c)
            dx = im2col(dy, kh, kw, 1, kh - 1 - p) @ flipped_t
            return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2)
        dcols = dy_mat @ self._weight_matrix()
        return col2im(dcols, x_shape, kh, kw, self.stride, p)

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None})")
