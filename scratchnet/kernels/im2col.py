"""Patch extraction for convolution (im2col) and its adjoint (col2im).

Layout.  Tensors are NCHW at every interface, but patches are laid out channels-last: a row of
the patch matrix is one output pixel (n, i, j) and holds the receptive field in (kh, kw, C)
order.  In channels-last memory the receptive field of a pixel is kh runs of kw*C contiguous
numbers, so im2col is a strided *view* plus one copy, and the whole batch folds into the rows
of a single GEMM:

    cols[(n, i, j), (a, b, c)] = xpad[n, s*i + a, s*j + b, c]          (N*Ho*Wo, kh*kw*C)
    conv(x, W)[n, o, i, j]     = sum_{a,b,c} cols[(n,i,j), (a,b,c)] * W[o, c, a, b]

with Ho = (H + 2p - kh) // s + 1 (and likewise Wo).  A convolution's output keeps this
channels-last memory behind an NCHW view (``y.transpose(0, 3, 1, 2)``); element-wise layers
preserve it, so the next im2col needs no transpose copy.

Why col2im is the adjoint.  im2col is a linear map P: x -> cols that copies entries; every
column entry reads exactly one input entry.  Its adjoint P^T (defined by <P x, c> = <x, P^T c>
for all x, c) must therefore send each column entry back to the input entry it was read from and
*add* the contributions of all patches that read the same pixel.  That is the backward pass of
im2col: dL/dx = P^T (dL/dcols).  For a fixed kernel offset (a, b) the pixels read by the
different output positions are distinct (they are a strided grid), so P^T is kh*kw strided
slice-adds, each touching every index at most once: no ``add.at`` and no loop over pixels.
"""
from typing import NamedTuple

from ..runtime import blas
from ..runtime.backend import as_strided, get_array_module
from ..runtime.parallel import parallel_slices


def conv_output_size(size, kernel, stride, padding):
    """Number of positions a kernel of width ``kernel`` takes along an axis of length ``size``."""
    return (size + 2 * padding - kernel) // stride + 1


def taps(offset, count, stride):
    """The input positions that kernel offset ``offset`` reads at ``count`` output positions
    along one axis: offset, offset + stride, ..., offset + stride * (count - 1)."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def to_channels_last(x, padding=0, fill=0.0, out=None):
    """Return x (N, C, H, W) as a C-contiguous (N, H+2p, W+2p, C) array, padded with ``fill``,
    written into ``out`` when given.

    When x already lives in channels-last memory and needs no padding this is a free view
    (and ``out`` is left alone).
    """
    xp = get_array_module(x)
    x_nhwc = x.transpose(0, 2, 3, 1)
    if padding == 0:
        if out is None or x_nhwc.flags.c_contiguous:
            return xp.ascontiguousarray(x_nhwc)
        out[...] = x_nhwc
        return out
    n, h, w, c = x_nhwc.shape
    if out is None:
        out = xp.empty((n, h + 2 * padding, w + 2 * padding, c), dtype=x.dtype)
    # Fill only the border, then copy the interior once.
    out[:, :padding] = fill
    out[:, h + padding:] = fill
    out[:, :, :padding] = fill
    out[:, :, w + padding:] = fill

    def copy_interior(part):
        out[part, padding:h + padding, padding:w + padding] = x_nhwc[part]

    parallel_slices(copy_interior, n, out.size, xp)
    return out


def sliding_windows(x_nhwc, kh, kw, stride):
    """Read-only view (N, Ho, Wo, kh, kw, C) of every kh x kw window of a channels-last array."""
    n, hp, wp, c = x_nhwc.shape
    ho = (hp - kh) // stride + 1
    wo = (wp - kw) // stride + 1
    sn, sh, sw, sc = x_nhwc.strides
    return as_strided(x_nhwc, (n, ho, wo, kh, kw, c),
                      (sn, stride * sh, stride * sw, sh, sw, sc))


def im2col(x, kh, kw, stride=1, padding=0):
    """Patch matrix of x (N, C, H, W): shape (N*Ho*Wo, kh*kw*C), rows ordered (n, i, j),
    columns ordered (a, b, c).  One padding copy (if p > 0) and one gather copy.  For one
    channel (the stem's log-Mel input) it is built transposed, a plane per tap, and returned
    as a (column-major) view of that: :func:`tap_planes`."""
    if x.shape[1] == 1 and kh * kw > 1:
        return tap_planes(x, kh, kw, stride, padding).T
    return patch_matrix(to_channels_last(x, padding), kh, kw, stride)


def tap_planes(x, kh, kw, stride=1, padding=0, ones=False):
    """The transposed patch matrix of a one-channel x (N, 1, H, W): (kh*kw, N*Ho*Wo), row
    a*kw + b holding xpad[n, s*i + a, s*j + b] for every output pixel (n, i, j) in order;
    with ``ones``, one more row of ones after them (a convolution's bias as a GEMM column:
    Conv2d).

    Why transposed.  With C = 1 a row of the patch matrix is kh runs of kw numbers, so the
    (M, K) gather copies in runs of 7 numbers on the stem (one short inner loop per run); a
    row of the transpose is one whole output-sized plane, copied in rows of Wo numbers.
    Why polyphase.  The plane of offset (a, b) reads every s-th input in each direction.
    Split xpad into its s*s phases, phase[u, v][n, i', j'] = xpad[n, s*i' + u, s*j' + v];
    then with a = s*(a // s) + (a mod s),
        xpad[n, s*i + a, s*j + b] = phase[a mod s, b mod s][n, i + a // s, j + b // s],
    a slice of one phase with unit strides: each plane is a copy of rows of Wo contiguous
    numbers, after s*s strided copies of the (k*k / s*s times smaller) input.
    """
    xp = get_array_module(x)
    n, _, h, w = x.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    planes = xp.empty((kh * kw + (1 if ones else 0), n * ho * wo), dtype=x.dtype)
    if ones:
        planes[-1] = 1
    padded_tap_planes(to_channels_last(x, padding), kh, kw, stride, planes)
    return planes


def padded_tap_planes(x_nhwc, kh, kw, stride, out):
    """The tap planes (:func:`tap_planes`) of an already padded one-channel channels-last
    array (N, Hp, Wp, 1), written into the first kh*kw rows of ``out`` (rows of N*Ho*Wo);
    returns ``out``.

    One copy a phase.  The taps that read phase (u, v) are a = u + s a', b = v + s b', and
    their planes are phase[u, v][n, i + a', j + b']: one strided view of the phase, (a', b',
    n, i, j), with the phase's row and column strides doing double duty for (a', i) and
    (b', j).  Their rows of the output, a*kw + b, are the (u::s, v::s) slice of the planes
    seen as (kh, kw, ...).  So s*s copies (each in rows of Wo numbers) write every plane,
    where a copy a plane took kh*kw calls, most of a one-sample block's time on the 7x7 stems
    (docs/speed.md, "The convolution algorithms, one table")."""
    xp = get_array_module(x_nhwc)
    s = stride
    xpad = x_nhwc[..., 0]                                           # (N, Hp, Wp)
    n, hp, wp = xpad.shape
    ho, wo = (hp - kh) // s + 1, (wp - kw) // s + 1
    planes = out[:kh * kw].reshape(kh, kw, n, ho, wo)

    def gather(part):  # samples, each piece s*s copies
        for u in range(min(s, kh)):
            for v in range(min(s, kw)):
                phase = xp.ascontiguousarray(xpad[part, u::s, v::s])
                sn, sr, sc = phase.strides
                taps = as_strided(phase, (len(range(u, kh, s)), len(range(v, kw, s)),
                                          phase.shape[0], ho, wo), (sr, sc, sn, sr, sc))
                planes[u::s, v::s, part] = taps

    parallel_slices(gather, n, planes.size, xp)
    return out


def patch_matrix(x_nhwc, kh, kw, stride=1):
    """im2col of an already padded channels-last array (N, Hp, Wp, C): the gather copy."""
    xp = get_array_module(x_nhwc)
    windows = sliding_windows(x_nhwc, kh, kw, stride)
    n, ho, wo = windows.shape[:3]
    c = x_nhwc.shape[3]
    cols = xp.empty((n, ho, wo, kh, kw, c), dtype=x_nhwc.dtype)

    def gather(part):
        cols[part] = windows[part]

    parallel_slices(gather, n, cols.size, xp)  # runs of kw*C numbers: bound by the copy loop
    return cols.reshape(n * ho * wo, kh * kw * c)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """Adjoint of :func:`im2col`: scatter-add a (N*Ho*Wo, kh*kw*C) matrix back to (N, C, H, W).

    The result is an NCHW view of channels-last memory (see the module docstring).
    """
    xp = get_array_module(cols)
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    cols = cols.reshape(n, ho, wo, kh, kw, c)
    dx = xp.empty((n, h + 2 * padding, w + 2 * padding, c), dtype=cols.dtype)
    parallel_slices(lambda part: scatter_patches(dx[part], cols[part], stride), n, cols.size,
                    xp)
    dx = dx[:, padding:padding + h, padding:padding + w]
    return dx.transpose(0, 3, 1, 2)


def scatter_patches(dx_padded, cols, stride):
    """dx_padded (n, Hp, Wp, C) = the sum of the patches cols (n, Ho, Wo, kh, kw, C) put back
    where im2col read them: zeroed, then kh*kw strided slice-adds (module docstring)."""
    _, ho, wo, kh, kw, _ = cols.shape
    dx_padded[...] = 0
    for a in range(kh):
        for b in range(kw):
            dx_padded[:, taps(a, ho, stride), taps(b, wo, stride)] += cols[:, :, :, a, b]


def weight_matrix(w):
    """(C_out, C_in, kh, kw) -> Wm (C_out, kh*kw*C_in) in im2col's (a, b, c) column order: a view
    of channels-last weight memory (scratchnet.layers.conv.channels_last_weight), else a copy."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


# From this many numbers up a weight gradient is formed in the weight's own memory order:
# Conv2d adds it into a gradient of (C_out, kh, kw, C_in) memory, and an addition across
# transposed memory that outgrows the cache costs more than the transposed product saves
# (docs/speed.md, "The convolution algorithms, one table").
LARGE_GRADIENT = 2 ** 18


def gradient_transposed(k, c_out):
    """Whether the kernels form dL/dWm (C_out, K), a sum over the patch rows, as its transpose
    X^T dY (K, C_out): BLAS runs the sum faster with the wider factor giving the rows of its
    output (K > C_out), unless the gradient has LARGE_GRADIENT numbers or more."""
    return k > c_out and k * c_out < LARGE_GRADIENT


def output_rows(dy):
    """dL/dy (N, C_out, Ho, Wo) as the rows of the patch matrix's product: (N*Ho*Wo, C_out)."""
    xp = get_array_module(dy)
    return xp.ascontiguousarray(dy.transpose(0, 2, 3, 1)).reshape(-1, dy.shape[1])


class Saved(NamedTuple):
    """What the reference's backward reads: the input, weight, bias presence, stride and
    padding (the reference rebuilds its patches)."""
    x: object
    weight: object
    has_bias: bool
    stride: int
    padding: int


def forward(x, w, b, stride, padding):
    """The reference as a convolution algorithm: (y, saved) (scratchnet.kernels.convolution)."""
    return conv2d_reference(x, w, b, stride, padding), Saved(x, w, b is not None, stride,
                                                              padding)


def backward(dy, saved, needs_input_grad=True):
    """(dL/dx or None, dL/dW, dL/db or None) of :func:`forward`."""
    dx, dw, db = conv2d_reference_backward(dy, saved.x, saved.weight, saved.stride,
                                           saved.padding)
    return dx if needs_input_grad else None, dw, db if saved.has_bias else None


def conv2d_reference(x, w, b, stride=1, padding=0):
    """The plain convolution every fast path is tested against (CS231n's naive layer, as
    one GEMM): y = im2col(x) Wm^T + b as (N, C_out, Ho, Wo), Wm = W in (a, b, c) columns."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    cols = patch_matrix(to_channels_last(x, padding), kh, kw, stride)
    y = blas.matmul(cols, w.transpose(0, 2, 3, 1).reshape(c_out, -1).T)
    if b is not None:
        y = y + b
    return y.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2)


def conv2d_reference_backward(dy, x, w, stride=1, padding=0):
    """(dL/dx, dL/dW, dL/db) of :func:`conv2d_reference`: dWm = dY^T X, db = sum_rows dY,
    dx = col2im(dY Wm)."""
    c_out, c_in, kh, kw = w.shape
    cols = patch_matrix(to_channels_last(x, padding), kh, kw, stride)
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, c_out)
    w_mat = w.transpose(0, 2, 3, 1).reshape(c_out, -1)
    dw = blas.matmul(dy_mat.T, cols).reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)
    dx = col2im(blas.matmul(dy_mat, w_mat), x.shape, kh, kw, stride, padding)
    return dx, dw, dy_mat.sum(axis=0)
