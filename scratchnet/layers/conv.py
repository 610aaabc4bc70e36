"""2-D convolution (cross-correlation, as in every deep-learning library): the maths, over the
kernels of scratchnet.kernels.convolution."""
from ..runtime.backend import get_array_module
from ..kernels.convolution import conv2d_backward, conv2d_forward, geometry
from ..kernels.im2col import conv_output_size
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
    of ones (scratchnet.kernels.im2col.tap_planes), instead of a pass over the stem's large Y.
    Stride 1: dL/dx is itself a convolution.  Written per pixel, the sum above is
        dx[c, u, v] = sum_{o, a, b'} dy[o, u + p - a, v + p - b'] W[o, c, a, b']
    over the (i, j) = (u + p - a, v + p - b') inside dy.  Substituting a = kh-1-a~, b' = kw-1-b~:
        dx[c, u, v] = sum_{o, a~, b~} dypad[o, u + a~, v + b~] W[o, c, kh-1-a~, kw-1-b~],
    with dy zero-padded by kh-1-p: the convolution of dy with the kernel flipped in space and
    transposed in channels, W~[c, o, a~, b~] = W[o, c, kh-1-a~, kw-1-b~].  Its output is H x W
    again.  Backward then runs as im2col(dy) W~m^T, a gather and one GEMM, instead of a GEMM
    with kh*kw times more outputs followed by kh*kw slice-adds in col2im.

    Algorithms.  These sums can be computed in several ways that give the same numbers: the
    patch matrix above; for stride-1 "same" convolutions on large maps, k*k GEMMs over
    shifted slices of one padded grid (scratchnet.kernels.shifted); on maps of at most p + 1
    rows, one shared patch matrix of whole rows (scratchnet.kernels.short_maps).
    scratchnet.kernels.convolution runs the one scratchnet.kernels.conv_policy chooses for the
    device and records it in ``self.algorithm``.
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
        return geometry(x_shape, self.weight.data, self.bias is not None, self.stride,
                        self.padding)

    def forward(self, x):
        check_input(x, 4, "Conv2d", self.in_channels)
        h, w = x.shape[2:]
        if min(conv_output_size(size, k, self.stride, self.padding)
               for size, k in zip((h, w), self.kernel_size)) < 1:
            raise ValueError(f"Conv2d: input {tuple(x.shape)} is smaller than the kernel "
                             f"{self.kernel_size} with padding {self.padding}")
        b = None if self.bias is None else self.bias.data
        y, self._cache = conv2d_forward(x, self.weight.data, b, self.stride, self.padding,
                                        self.training)
        self.algorithm = self._cache.algorithm
        return y

    def backward(self, dy):
        dx, dw, db = conv2d_backward(dy, self.saved(), self.needs_input_grad)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None})")
