"""The patch matrix and one GEMM (the "im2col" algorithm): Y = X Wm^T + b for any geometry.

X = im2col(x) (N*Ho*Wo, kh*kw*C) and Wm the weight in the same (a, b, c) column order
(scratchnet.kernels.im2col), so the convolution of the whole batch is one GEMM.  The bias is
added over long rows of Y (scratchnet.kernels.long_rows), where NumPy's broadcast add is
faster than over (N*Ho*Wo, C_out).

Backward (Conv2d derives it): dL/dWm = dY^T X, dL/db = sum of dY's rows, and dL/dx either
col2im(dY Wm) or, for a stride-1 square kernel with p <= k - 1, the correlation of dy with
the flipped kernel: im2col(dy, padding k-1-p) W~m^T, one GEMM with no scatter-add.
"""
from typing import NamedTuple

from ..runtime.backend import get_array_module
from ..runtime import blas
from .im2col import (col2im, conv_output_size, gradient_transposed, im2col, output_rows,
                     weight_matrix)
from .long_rows import map_long_rows


class Saved(NamedTuple):
    """The patches X, the input's shape, the weight (a reference), the bias presence, stride
    and padding."""
    cols: object
    x_shape: tuple
    weight: object
    has_bias: bool
    stride: int
    padding: int


def forward(x, w, b, stride, padding):
    """(y (N, C_out, Ho, Wo), channels-last behind the NCHW view; saved)."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    cols = im2col(x, kh, kw, stride, padding)
    y = blas.matmul(cols, weight_matrix(w).T)
    if b is not None:  # over long rows: scratchnet.kernels.long_rows
        map_long_rows(lambda out, bias: xp.add(out, bias, out=out), y, [], [b])
    return (y.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2),
            Saved(cols, x.shape, w, b is not None, stride, padding))


def weight_gradient_matrix(cols, dy_mat):
    """dL/dWm = dY^T X (C_out, K) from the patches X (M, K) and dY (M, C_out): a sum over the M
    rows, which BLAS runs faster with the wider factor giving the rows of its output, so it is
    (X^T dY)^T when K > C_out and dY^T X otherwise, and dY^T X, in the weight's memory order,
    for large gradients (im2col.gradient_transposed; docs/speed.md, "The convolution
    algorithms, one table")."""
    if gradient_transposed(cols.shape[1], dy_mat.shape[1]):
        return blas.summed_matmul(cols.T, dy_mat).T
    return blas.summed_matmul(dy_mat.T, cols)


def backward(dy, saved, needs_input_grad=True):
    """(dL/dx or None, dL/dW (C_out, C_in, kh, kw), dL/db or None)."""
    w, s, p = saved.weight, saved.stride, saved.padding
    n, c, h, wd = saved.x_shape
    c_out, _, kh, kw = w.shape
    dy_mat = output_rows(dy)
    db = dy_mat.sum(axis=0) if saved.has_bias else None
    dw = weight_gradient_matrix(saved.cols, dy_mat).reshape(c_out, kh, kw, c).transpose(
        0, 3, 1, 2)
    if not needs_input_grad:
        return None, dw, db
    if s == 1 and kh == kw and p <= kh - 1:
        # The flipped-kernel convolution: W~m^T (kh*kw*C_out, C_in), row (a~, b~, o) being
        # W[o, :, kh-1-a~, kw-1-b~], copied in runs of C_in numbers from channels-last memory.
        flipped_t = w.transpose(2, 3, 0, 1)[::-1, ::-1].reshape(-1, c)
        dx = blas.matmul(im2col(dy, kh, kw, 1, kh - 1 - p), flipped_t)
        return dx.reshape(n, h, wd, c).transpose(0, 3, 1, 2), dw, db
    return col2im(blas.matmul(dy_mat, weight_matrix(w)), saved.x_shape, kh, kw, s, p), dw, db
