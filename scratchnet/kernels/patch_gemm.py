"""The patch matrix and one GEMM (the "im2col" algorithm): Y = X Wm^T + b for any geometry.

X = im2col(x) (N*Ho*Wo, kh*kw*C) and Wm the weight in the same (a, b, c) column order
(scratchnet.kernels.im2col), so the convolution of the whole batch is one GEMM.  The bias is
added over long rows of Y (scratchnet.kernels.long_rows), where NumPy's broadcast add is
faster than over (N*Ho*Wo, C_out).

Backward (Conv2d derives it): dL/dWm = dY^T X, dL/db = sum of dY's rows, and dL/dx either
col2im(dY Wm) or, for a stride-1 square kernel with p <= k - 1, the correlation of dy with
the flipped kernel: im2col(dy, padding k-1-p) W~m^T, one GEMM with no scatter-add.

In blocks of samples.  Every product above is a sum over the rows of X, one row per output
pixel, and the rows of a sample depend on that sample alone.  So on the CPU, for a batch whose
patches and output rows span several blocks (:func:`sample_blocks`), the batch runs a block of
samples at a time, each block on one core (blas.one_thread_products): its samples are
padded and its patches gathered into buffers of the block's size and multiplied while in
cache, Y's rows and dL/dx's samples written by their block alone, and dL/dWm = sum over
blocks of dY_j^T X_j, the blocks' parts added in order.  Neither the patch matrix, kh*kw
times the input, nor the padded input is then written whole and read back: the forward keeps
the input, and the backward pads and gathers each block's patches again.  A one-channel
input's patches are gathered as their tap planes, X_j^T (im2col.tap_planes), and multiplied
as the (column-major) view X_j.
"""
from typing import NamedTuple

from ..runtime.backend import device_of, get_array_module
from ..runtime import blas
from ..runtime.parallel import even_blocks
from .im2col import (col2im, conv_output_size, gradient_transposed, im2col, output_rows,
                     padded_tap_planes, scatter_patches, sliding_windows, to_channels_last,
                     weight_matrix)
from .long_rows import map_long_rows

# Blocks of samples whose patches and output rows take about BLOCK_BYTES, for weight matrices
# of at most BLOCK_BYTES / WEIGHT_SHARE (docs/speed.md, "The convolution algorithms, one table").
BLOCK_BYTES = 1 << 21
WEIGHT_SHARE = 4


class Saved(NamedTuple):
    """The patches X, the input's shape, the weight (a reference), the bias presence, stride
    and padding; in blocks (module docstring) X is None, and ``x`` is the input (a
    reference) and ``blocks`` the bounds of the blocks of samples."""
    cols: object
    x_shape: tuple
    weight: object
    has_bias: bool
    stride: int
    padding: int
    x: object = None
    blocks: tuple = None


def sample_blocks(x, kh, kw, stride, padding, c_out):
    """The bounds of the blocks of samples the patch GEMM runs in (module docstring): even
    blocks of about BLOCK_BYTES of patches and output rows, kh*kw*C + C_out numbers an output
    pixel (one sample at least), from the shapes alone (scratchnet.runtime.parallel.
    even_blocks); or one block of the whole batch where two would not fit, where the weight
    matrix takes more than BLOCK_BYTES / WEIGHT_SHARE (each block reads it again, and its
    gradient's part is written and added once a block) and off the CPU.  A 1x1 kernel's
    patches are no larger than its input, but its blocks still keep their products' rows in
    cache and on one core each (docs/speed.md, "The convolution algorithms, one table")."""
    n, c, h, wd = x.shape
    if device_of(x) != "cpu" or kh * kw * c * c_out * x.itemsize * WEIGHT_SHARE > BLOCK_BYTES:
        return (0, n)
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    row_bytes = (kh * kw * c + c_out) * x.itemsize
    return tuple(even_blocks(n, max(1, BLOCK_BYTES // (ho * wo * row_bytes))))


def forward(x, w, b, stride, padding):
    """(y (N, C_out, Ho, Wo), channels-last behind the NCHW view; saved)."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    blocks = sample_blocks(x, kh, kw, stride, padding, c_out)
    if len(blocks) > 2:
        y = forward_in_blocks(x, weight_matrix(w).T, kh, kw, stride, padding, blocks)
        cols, kept = None, x
    else:
        kept, blocks = None, None
        cols = im2col(x, kh, kw, stride, padding)
        y = blas.matmul(cols, weight_matrix(w).T)
    if b is not None:  # over long rows: scratchnet.kernels.long_rows
        map_long_rows(lambda out, bias: xp.add(out, bias, out=out), y, [], [b])
    return (y.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2),
            Saved(cols, x.shape, w, b is not None, stride, padding, kept, blocks))


def block_buffers(x, blocks, kh, kw, stride, padding):
    """Buffers for the largest block of samples of x (N, C, H, W): its samples padded in
    channels-last memory (b, Hp, Wp, C), and its patches (rows, kh*kw*C)."""
    xp = get_array_module(x)
    _, c, h, wd = x.shape
    largest = max(b - a for a, b in zip(blocks, blocks[1:]))
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    return (xp.empty((largest, h + 2 * padding, wd + 2 * padding, c), dtype=x.dtype),
            xp.empty((largest * ho * wo, kh * kw * c), dtype=x.dtype))


def gather_block(buffers, x, a, b, kh, kw, stride, padding):
    """Samples a..b-1's patches X_j (rows, kh*kw*C), gathered into the start of the patch
    buffer (:func:`block_buffers`) from the sliding windows of the block's own samples,
    padded into the start of the other buffer first (im2col.to_channels_last): each block
    pads its samples while they are in cache, and the padded batch is never written whole.
    For one channel its tap planes X_j^T (im2col.padded_tap_planes, copies in rows of Wo
    numbers rather than runs of kw), returned as their column-major view X_j."""
    padded_samples, buffer = buffers
    padded = to_channels_last(x[a:b], padding, out=padded_samples[:b - a])
    windows = sliding_windows(padded, kh, kw, stride)           # (b - a, Ho, Wo, kh, kw, C)
    _, ho, wo, _, _, c = windows.shape
    rows = (b - a) * ho * wo
    if c == 1:
        planes = buffer.reshape(-1)[:rows * kh * kw].reshape(kh * kw, rows)
        return padded_tap_planes(padded, kh, kw, stride, planes).T
    cols = buffer[:rows]
    cols.reshape(windows.shape)[...] = windows
    return cols


def forward_in_blocks(x, wm_t, kh, kw, stride, padding, blocks):
    """Y = X Wm^T (N*Ho*Wo, C_out) a block of samples at a time."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    rows = conv_output_size(h, kh, stride, padding) * conv_output_size(wd, kw, stride, padding)
    y = xp.empty((n * rows, wm_t.shape[1]), dtype=x.dtype)

    def block_products(part, product):
        buffers = block_buffers(x, blocks, kh, kw, stride, padding)
        for j in range(part.start, part.stop):
            a, b = blocks[j], blocks[j + 1]
            product(gather_block(buffers, x, a, b, kh, kw, stride, padding), wm_t,
                    y[a * rows:b * rows])

    blas.one_thread_products(block_products, len(blocks) - 1, y.size)
    return y


def weight_gradient_matrix(cols, dy_mat):
    """dL/dWm = dY^T X (C_out, K) from the patches X (M, K) and dY (M, C_out): a sum over the M
    rows, which BLAS runs faster with the wider factor giving the rows of its output, so it is
    (X^T dY)^T when K > C_out and dY^T X otherwise, and dY^T X, in the weight's memory order,
    for large gradients (im2col.gradient_transposed; docs/speed.md, "The convolution
    algorithms, one table")."""
    if gradient_transposed(cols.shape[1], dy_mat.shape[1]):
        return blas.summed_matmul(cols.T, dy_mat).T
    return blas.summed_matmul(dy_mat.T, cols)


def flipped_kernel_applies(w, stride, padding):
    """Whether dL/dx is the correlation of dy with the flipped kernel (module docstring): a
    stride-1 square kernel with p <= k - 1."""
    kh, kw = w.shape[2:]
    return stride == 1 and kh == kw and padding <= kh - 1


def backward_in_blocks(dy_mat, saved, needs_input_grad):
    """(dL/dWm (C_out, K), and dL/dx's padded channels-last memory where dL/dx is not the
    flipped kernel's convolution, else None) a block of samples at a time: each block's
    patches gathered again from its samples (:func:`gather_block`), dY_j^T X_j (or its
    transpose, as :func:`weight_gradient_matrix`) into the block's part, and dY_j Wm
    scattered back into the block's samples (im2col.scatter_patches)."""
    xp = get_array_module(dy_mat)
    x, w, blocks, stride, p = saved.x, saved.weight, saved.blocks, saved.stride, saved.padding
    n, c, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, stride, p), conv_output_size(wd, kw, stride, p)
    k, rows = kh * kw * c, ho * wo
    transposed = gradient_transposed(k, c_out)
    parts = xp.empty((len(blocks) - 1,) + ((k, c_out) if transposed else (c_out, k)),
                     dtype=dy_mat.dtype)
    scatter = needs_input_grad and not flipped_kernel_applies(w, stride, p)
    dx_padded = (xp.empty((n, h + 2 * p, wd + 2 * p, c), dtype=dy_mat.dtype) if scatter
                 else None)
    wm = weight_matrix(w)

    def block_sums(part, product):
        buffers = block_buffers(x, blocks, kh, kw, stride, p)
        for j in range(part.start, part.stop):
            a, b = blocks[j], blocks[j + 1]
            cols = gather_block(buffers, x, a, b, kh, kw, stride, p)
            d = dy_mat[a * rows:b * rows]
            if transposed:
                product(cols.T, d, parts[j])
            else:
                product(d.T, cols, parts[j])
            if scatter:                                   # the buffer's patches are used
                d_cols = buffers[1][:cols.shape[0]]       # dY_j Wm, in rows (not the planes')
                product(d, wm, d_cols)
                scatter_patches(dx_padded[a:b], d_cols.reshape(b - a, ho, wo, kh, kw, c),
                                stride)

    blas.one_thread_products(block_sums, len(blocks) - 1, dy_mat.shape[0] * k)
    dw = blas.sum_in_order(parts)
    return (dw.T if transposed else dw), dx_padded


def backward(dy, saved, needs_input_grad=True):
    """(dL/dx or None, dL/dW (C_out, C_in, kh, kw), dL/db or None)."""
    w, s, p = saved.weight, saved.stride, saved.padding
    n, c, h, wd = saved.x_shape
    c_out, _, kh, kw = w.shape
    dy_mat = output_rows(dy)
    db = dy_mat.sum(axis=0) if saved.has_bias else None
    dx_padded = None
    if saved.cols is None:
        dw_mat, dx_padded = backward_in_blocks(dy_mat, saved, needs_input_grad)
    else:
        dw_mat = weight_gradient_matrix(saved.cols, dy_mat)
    dw = dw_mat.reshape(c_out, kh, kw, c).transpose(0, 3, 1, 2)
    if not needs_input_grad:
        return None, dw, db
    if flipped_kernel_applies(w, s, p):
        # The flipped-kernel convolution: W~m^T (kh*kw*C_out, C_in), row (a~, b~, o) being
        # W[o, :, kh-1-a~, kw-1-b~], copied in runs of C_in numbers from channels-last memory.
        flipped_t = w.transpose(2, 3, 0, 1)[::-1, ::-1].reshape(-1, c)
        dx = blas.matmul(im2col(dy, kh, kw, 1, kh - 1 - p), flipped_t)
        return dx.reshape(n, h, wd, c).transpose(0, 3, 1, 2), dw, db
    if dx_padded is not None:
        return dx_padded[:, p:p + h, p:p + wd].transpose(0, 3, 1, 2), dw, db
    return col2im(blas.matmul(dy_mat, weight_matrix(w)), saved.x_shape, kh, kw, s, p), dw, db
