"""Stride-1 "same" convolution on maps of at most p + 1 rows, where every output row reads the
whole image.

Output row i of a k x k correlation with padding p reads input rows i + a - p for the kernel
rows a it meets inside the image, a in [max(0, p - i), min(k, H + p - i)).  When H <= p + 1
(for k = 3: maps of one or two rows, such as the last stage of a ResNet on 64 mel bands),
i - p <= 0 and i + p + 1 >= H for every i, so each output row reads all H input rows, and its
kernel rows are exactly a = r - i + p for input row r:

    y[n, i, j, o] = sum_{r < H, b, c} xh[n, r, j + b, c] W[o, c, r - i + p, b],

xh padded by p columns on each side (the vertical padding is never read).  im2col would build
k rows of taps per pixel, k - H of them on zero padding; here one patch matrix serves every
output row,

    P[(n, j), (r, b, c)] = xh[n, r, j + b, c]                     (N*W, H*k*C),

and output row i is one GEMM with the block of kernel rows p - i .. p - i + H - 1 of the
weight matrix Wm (C_out, k*k*C) (columns in (a, b, c) order, as Conv2d lays them out),

    Y_i = P Wm_i^T,   Wm_i = Wm[:, (p - i) k C : (p - i + H) k C]     (N*W, C_out),

H GEMMs with K = H*k*C instead of one with K = k*k*C for all rows: H/k of the products and a
patch matrix H/k of im2col's (2/3 on a 2-row map with k = 3).

Backward.  Each Y_i is linear in P and in Wm_i, so with dY_i the gradient of output row i:
    dL/dWm_i += dY_i^T P     (the rows i meet kernel rows p - H + 1 .. p + H - 1; the other
                              k - 2H + 1, none when H = p + 1, only ever met padding: zero),
    dL/dP     = sum_i dY_i Wm_i,
and dL/dx adds dL/dP back onto the pixels it copied: for each column offset b,
    dxh[n, r, j + b, c] += dP[(n, j), (r, b, c)].
"""
from typing import NamedTuple

from ..runtime.backend import get_array_module
from ..runtime import blas
from .im2col import output_rows, patch_matrix, weight_matrix


def is_short(h, k, padding):
    """Whether an h-row map is short for a k x k "same" convolution with this padding:
    every output row reads every input row (h <= p + 1)."""
    return 2 * padding == k - 1 and h <= padding + 1


def row_window_patches(x, k, padding):
    """P (N*W, H*k*C) of x (N, C, H, W): row (n, j) holds xh[n, r, j + b, c] in (r, b, c)
    order, xh = x channels-last with ``padding`` zero columns on each side."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    xh = xp.zeros((n, h, w + 2 * padding, c), dtype=x.dtype)
    xh[:, :, padding:padding + w] = x.transpose(0, 2, 3, 1)
    # The im2col gather with an h x k window: one window position down, w across.
    return patch_matrix(xh, h, k)


def _kernel_rows(weight_matrix, i, h, k, padding):
    """Wm_i: the columns of kernel rows p - i .. p - i + h - 1 (a view)."""
    width = weight_matrix.shape[1] // k
    start = (padding - i) * width
    return weight_matrix[:, start:start + h * width]


def correlate_short(patches, weight_matrix, n, h, w, k, padding):
    """y (N, h, w, C_out), C-contiguous: output row i is P Wm_i^T."""
    xp = get_array_module(patches)
    c_out = weight_matrix.shape[0]
    rows = xp.empty((h, n * w, c_out), dtype=patches.dtype)      # output row i outermost
    for i in range(h):
        blas.matmul(patches, _kernel_rows(weight_matrix, i, h, k, padding).T, out=rows[i])
    rows = rows.reshape(h, n, w, c_out)
    if h == 1:  # (1, n, j, o) memory is already (n, 1, j, o)
        return rows.reshape(n, 1, w, c_out)
    return xp.ascontiguousarray(rows.transpose(1, 0, 2, 3))


def _rows_of(dy):
    """dy (N, C_out, h, w) as (h, N*w, C_out): dY_i = result[i], C-contiguous."""
    xp = get_array_module(dy)
    n, c_out, h, w = dy.shape
    return xp.ascontiguousarray(dy.transpose(2, 0, 3, 1)).reshape(h, n * w, c_out)


def weight_gradient_short(patches, dy, k, padding):
    """dL/dWm (C_out, k*k*C) from the patches and dy (N, C_out, h, w)."""
    xp = get_array_module(patches)
    n, c_out, h, w = dy.shape
    d_rows = _rows_of(dy)
    dwm = xp.zeros((c_out, k * patches.shape[1] // h), dtype=patches.dtype)
    for i in range(h):
        _kernel_rows(dwm, i, h, k, padding)[...] += blas.matmul(d_rows[i].T, patches)
    return dwm


def input_gradient_short(dy, weight_matrix, c, k, padding):
    """dL/dx (N, C, h, w), an NCHW view of channels-last memory, from dy (N, C_out, h, w)."""
    xp = get_array_module(dy)
    n, _, h, w = dy.shape
    d_rows = _rows_of(dy)
    d_patches = blas.matmul(d_rows[0], _kernel_rows(weight_matrix, 0, h, k, padding))
    for i in range(1, h):
        blas.matmul(d_rows[i], _kernel_rows(weight_matrix, i, h, k, padding), out=d_patches,
               beta=1.0)
    d_patches = d_patches.reshape(n, w, h, k, c)
    dxh = xp.zeros((n, h, w + 2 * padding, c), dtype=dy.dtype)
    for b in range(k):
        dxh[:, :, b:b + w] += d_patches[:, :, :, b].transpose(0, 2, 1, 3)
    return xp.ascontiguousarray(dxh[:, :, padding:padding + w]).transpose(0, 3, 1, 2)


class Saved(NamedTuple):
    """The shared patches, the input's shape, the weight (a reference), the bias presence,
    padding."""
    patches: object
    x_shape: tuple
    weight: object
    has_bias: bool
    padding: int


def forward(x, w, b, stride, padding):
    """(y (N, C_out, H, W), channels-last behind the NCHW view; saved), for stride-1 "same"
    convolutions on maps of at most p + 1 rows (conv_policy.can_run says where)."""
    n, _, h, wd = x.shape
    kh = w.shape[2]
    patches = row_window_patches(x, kh, padding)
    y = correlate_short(patches, weight_matrix(w), n, h, wd, kh, padding)
    if b is not None:
        y += b
    return y.transpose(0, 3, 1, 2), Saved(patches, x.shape, w, b is not None, padding)


def backward(dy, saved, needs_input_grad=True):
    """(dL/dx or None, dL/dW, dL/db or None), from the shared patches (module docstring)."""
    w, p = saved.weight, saved.padding
    c_out, c, kh, kw = w.shape
    db = output_rows(dy).sum(axis=0) if saved.has_bias else None
    dw = weight_gradient_short(saved.patches, dy, kh, p).reshape(c_out, kh, kw, c)
    dx = input_gradient_short(dy, weight_matrix(w), c, kh, p) if needs_input_grad else None
    return dx, dw.transpose(0, 3, 1, 2), db
