"""The convolution's kernels behind one pair of functions: ``conv2d_forward`` picks an algorithm
through scratchnet.kernels.conv_policy and records it, with what backward needs, in a
:class:`ConvContext`; ``conv2d_backward`` reads the context and runs the same algorithm's
gradients.  Conv2d (scratchnet.layers.conv) derives the maths; each algorithm's own module
derives why it computes the same sums, and tests/test_conv_algorithms.py holds every one to
the reference (scratchnet.kernels.im2col.conv2d_reference).
"""
from typing import NamedTuple

from . import conv_policy
from ..runtime.backend import get_array_module
from .im2col import col2im, conv_output_size, im2col, tap_planes
from .long_rows import map_long_rows
from .shifted import correlate_shifted, crop, to_grid, weight_gradient_shifted
from .short_maps import (correlate_short, input_gradient_short, row_window_patches,
                         weight_gradient_short)


class ConvContext(NamedTuple):
    """What a forward pass leaves for its backward: the algorithm it ran, whether it was in
    training mode, what it kept (training: the patches, or the grid they come from; eval: a
    reference to x, from which backward rebuilds them if it is ever called), the input's
    shape, and the weight (kept as a reference: read again by dL/dx)."""
    algorithm: str
    training: bool
    saved: object
    x_shape: tuple
    weight: object
    has_bias: bool
    stride: int
    padding: int


def weight_matrix(w):
    """(C_out, C_in, kh, kw) -> Wm (C_out, kh*kw*C_in) in im2col's (a, b, c) column order: a view
    of channels-last weight memory (scratchnet.layers.conv.channels_last_weight), else a copy."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def weight_gradient_matrix(cols, dy_mat):
    """dL/dWm = dY^T X (C_out, K) from the patches X (M, K) and dY (M, C_out): a sum over the M
    rows, which BLAS runs faster with the wider factor giving the rows of its output, so it is
    (X^T dY)^T when K > C_out and dY^T X otherwise (benchmarks.profile_layers; docs/speed.md)."""
    if cols.shape[1] > dy_mat.shape[1]:
        return (cols.T @ dy_mat).T
    return dy_mat.T @ cols


def geometry(x_shape, w, has_bias, stride, padding):
    """The convolution policy's view of a call (scratchnet.kernels.conv_policy.ConvGeometry)."""
    return conv_policy.ConvGeometry(w.shape[1], x_shape[2], x_shape[3], tuple(w.shape[2:]),
                                    stride, padding, has_bias)


def conv2d_forward(x, w, b, stride, padding, training):
    """y = conv(x, W) + b as (N, C_out, Ho, Wo) (channels-last memory behind the NCHW view),
    and the context its backward needs."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    algorithm = conv_policy.choose(xp, geometry(x.shape, w, b is not None, stride, padding))

    def context(kept):
        return ConvContext(algorithm, training, kept if training else x, x.shape, w,
                           b is not None, stride, padding)

    if algorithm == "short":
        patches = row_window_patches(x, kh, padding)
        y = correlate_short(patches, weight_matrix(w), n, h, wd, kh, padding)
        if b is not None:
            y += b
        return y.transpose(0, 3, 1, 2), context(patches)
    if algorithm == "shifted":
        grid = to_grid(x, padding)
        y = crop(correlate_shifted(grid, h, w), n, h, wd, b)
        return y.transpose(0, 3, 1, 2), context(grid)
    if algorithm == "bias_column":  # [X | 1] [Wm | b]^T = X Wm^T + 1 b^T
        planes = tap_planes(x, kh, kw, stride, padding, ones=True)
        y = planes.T @ xp.concatenate([weight_matrix(w), b[:, None]], axis=1).T
        cols = planes[:-1].T
    else:
        cols = im2col(x, kh, kw, stride, padding)
        y = cols @ weight_matrix(w).T
        if b is not None:  # over long rows: scratchnet.kernels.long_rows
            map_long_rows(lambda out, bias: xp.add(out, bias, out=out), y, [], [b])
    return y.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2), context(cols)


def conv2d_backward(dy, ctx, needs_input_grad=True):
    """(dL/dx or None, dL/dW (C_out, C_in, kh, kw), dL/db or None) from dL/dy and the forward
    pass's context, by the algorithm that pass ran."""
    xp = get_array_module(dy)
    w, p, s = ctx.weight, ctx.padding, ctx.stride
    n, c, h, wd = ctx.x_shape
    c_out, _, kh, kw = w.shape
    dy_mat = xp.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, c_out)
    db = dy_mat.sum(axis=0) if ctx.has_bias else None
    if ctx.algorithm == "short":
        patches = ctx.saved if ctx.training else row_window_patches(ctx.saved, kh, p)
        dw = weight_gradient_short(patches, dy, kh, p).reshape(c_out, kh, kw, c)
        dx = input_gradient_short(dy, weight_matrix(w), c, kh, p) if needs_input_grad else None
        return dx, dw.transpose(0, 3, 1, 2), db
    if ctx.algorithm == "shifted":
        # dy on its own grid serves both dL/dW (dY at the grid positions) and dL/dx.
        grid = ctx.saved if ctx.training else to_grid(ctx.saved, p)
        dy_grid = to_grid(dy, kh - 1 - p)
        dw = weight_gradient_shifted(grid, dy_grid, h, kh)
        dx = None
        if needs_input_grad:
            flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # W~ (C_in, C_out, kh, kw)
            dx = crop(correlate_shifted(dy_grid, h, flipped), n, h, wd).transpose(0, 3, 1, 2)
        return dx, dw.transpose(0, 3, 1, 2), db
    cols = ctx.saved if ctx.training else im2col(ctx.saved, kh, kw, s, p)
    dw = weight_gradient_matrix(cols, dy_mat).reshape(c_out, kh, kw, c).transpose(0, 3, 1, 2)
    if not needs_input_grad:
        return None, dw, db
    if s == 1 and kh == kw and p <= kh - 1:
        # The flipped-kernel convolution: W~m^T (kh*kw*C_out, C_in), row (a~, b~, o) being
        # W[o, :, kh-1-a~, kw-1-b~], copied in runs of C_in numbers from channels-last memory.
        flipped_t = w.transpose(2, 3, 0, 1)[::-1, ::-1].reshape(-1, c)
        dx = im2col(dy, kh, kw, 1, kh - 1 - p) @ flipped_t
        return dx.reshape(n, h, wd, c).transpose(0, 3, 1, 2), dw, db
    return col2im(dy_mat @ weight_matrix(w), ctx.x_shape, kh, kw, s, p), dw, db
