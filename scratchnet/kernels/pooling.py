"""Max pooling's kernels: the separable forward pass, the first-maximum masks and the routing
of dL/dy (the derivation is MaxPool2d's, in scratchnet.layers.pooling)."""
from typing import NamedTuple

from ..runtime.backend import get_array_module
from ..runtime.parallel import parallel_slices
from .im2col import conv_output_size, taps, to_channels_last


class PoolContext(NamedTuple):
    """What a forward pass leaves for backward: training's first-maximum masks, or in eval
    mode the input (channels-last) and output to form them from; the input's shape."""
    training: bool
    saved: object
    x_shape: tuple
    kernel: int
    stride: int
    padding: int


def inside(offset, count, size, s, p):
    """(outputs, inputs): the block lo <= i < hi of ``count`` output positions whose window
    offset ``offset`` reads inside an axis of ``size`` inputs, and those inputs,
    s*i + offset - p; None if there are none."""
    lo = max(0, -((offset - p) // s))
    hi = min(count, (size - 1 + p - offset) // s + 1)
    if hi <= lo:
        return None
    return slice(lo, hi), taps(s * lo + offset - p, hi - lo, s)


def max_along(out, src, axis, k, s, p):
    """out = max over the k offsets along ``axis`` (1: rows, 2: columns) of src, each offset
    over the outputs it reads inside src."""
    xp = get_array_module(src)
    count, size = out.shape[axis], src.shape[axis]

    def along(index):
        at = [slice(None)] * out.ndim
        at[axis] = index
        return tuple(at)

    started = False
    for offset in range(k):
        block = inside(offset, count, size, s, p)
        if block is None:
            continue
        outputs, inputs = block
        if not started:
            out[along(slice(0, outputs.start))] = -xp.inf   # (p <= k/2: filled later)
            out[along(slice(outputs.stop, count))] = -xp.inf
            out[along(outputs)] = src[along(inputs)]
            started = True
        else:
            xp.maximum(out[along(outputs)], src[along(inputs)], out=out[along(outputs)])


def blocks(ho, wo, h, w, k, s, p):
    """[(a*k + b, output block, input block)] for every offset that reads inside x."""
    rows = [inside(a, ho, h, s, p) for a in range(k)]
    cols = [inside(b, wo, w, s, p) for b in range(k)]
    return [(a * k + b, (slice(None), rows[a][0], cols[b][0]),
             (slice(None), rows[a][1], cols[b][1]))
            for a in range(k) for b in range(k)
            if rows[a] is not None and cols[b] is not None]


def first_maximum_masks(x, y, first, k, s, p):
    """first[a*k + b] = where offset (a, b) is the first in row-major order to equal y, for
    x (N, H, W, C).  On x padded with -inf (padding never equals y), where every offset's
    inputs are one strided view over all outputs: the comparisons run whole."""
    xp = get_array_module(y)
    xpad = to_channels_last(x.transpose(0, 3, 1, 2), p, fill=-xp.inf)
    ho, wo = y.shape[1:3]
    claimed = xp.zeros(y.shape, dtype=bool)
    for a in range(k):
        for b in range(k):
            hit = xpad[:, taps(a, ho, s), taps(b, wo, s)] == y
            xp.greater(hit, claimed, out=first[a * k + b])   # hit and not claimed
            claimed |= hit


def max_pool_forward(x, k, s, p, training):
    """y (N, C, Ho, Wo), an NCHW view of channels-last memory, and the context of backward."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    if ho < 1 or wo < 1:
        raise ValueError(f"MaxPool2d: input {tuple(x.shape)} is smaller than the window {k}")
    x_nhwc = to_channels_last(x)  # free for channels-last memory
    y = xp.empty((n, ho, wo, c), dtype=x.dtype)
    first = xp.empty((k * k, n, ho, wo, c), dtype=bool) if training else None

    def pool(part):  # the samples of ``part``, one piece of the batch at a time
        xs, ys = x_nhwc[part], y[part]
        rows = xp.empty((xs.shape[0], ho, w, c), dtype=x.dtype)
        max_along(rows, xs, 1, k, s, p)                 # r: down the window's columns
        max_along(ys, rows, 2, k, s, p)                 # y: then across them
        if first is not None:
            first_maximum_masks(xs, ys, first[:, part], k, s, p)

    parallel_slices(pool, n, x_nhwc.size, xp)
    # Inference needs no masks; it keeps the input in case backward is called all the same.
    saved = first if training else (x_nhwc, y)
    return y.transpose(0, 3, 1, 2), PoolContext(training, saved, x.shape, k, s, p)


def max_pool_backward(dy, ctx, into=None):
    """dL/dx: every dy onto its window's first maximum.  Written into a new channels-last
    array, or added into ``into`` (N, C, H, W), an NCHW view of channels-last memory."""
    xp = get_array_module(dy)
    n, c, h, w = ctx.x_shape
    k, s, p = ctx.kernel, ctx.stride, ctx.padding
    dx = into if into is not None else xp.empty((n, h, w, c), dtype=dy.dtype).transpose(
        0, 3, 1, 2)
    dy, dx_nhwc = dy.transpose(0, 2, 3, 1), dx.transpose(0, 2, 3, 1)
    ho, wo = dy.shape[1:3]
    if ctx.training:
        first = ctx.saved
    else:
        x_nhwc, y = ctx.saved
        first = xp.empty((k * k,) + y.shape, dtype=bool)
        first_maximum_masks(x_nhwc, y, first, k, s, p)
    offsets = blocks(ho, wo, h, w, k, s, p)

    def route(part):
        dxs, dys = dx_nhwc[part], dy[part]
        if into is None:
            dxs[...] = 0
        for t, outputs, inputs in offsets:
            dxs[inputs] += dys[outputs] * first[t][part][outputs]

    parallel_slices(route, n, dx_nhwc.size, xp)
    return dx
