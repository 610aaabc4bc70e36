"""The convolution's kernels behind one pair of functions, by a table of algorithms.

Every algorithm is one module with one signature:

    forward(x, w, b, stride, padding)   -> (y, saved)       y (N, C_out, Ho, Wo)
    backward(dy, saved, needs_input_grad) -> (dx or None, dW, db or None)

where ``saved`` is the algorithm's own record of what its backward reads.  ``conv2d_forward``
asks scratchnet.kernels.conv_policy which algorithm runs, looks it up in ALGORITHMS and keeps
(the algorithm's name, what it saved); ``conv2d_backward`` hands ``saved`` back to the same
module.  Conv2d (scratchnet.layers.conv) derives the maths; each module derives why it
computes the same sums, and tests/test_conv_algorithms.py holds every one to the reference
(``reference``: scratchnet.kernels.im2col's plain GEMM and col2im).  A new algorithm is one
module and one line below.
"""
from typing import NamedTuple

from . import bias_column, conv_policy, im2col, patch_gemm, shifted, short_maps
from .im2col import weight_matrix  # noqa: F401  (where tests and benchmarks take it from)
from ..runtime.backend import get_array_module

ALGORITHMS = {
    "reference": im2col,          # the plain patch GEMM and col2im every other is tested against
    "im2col": patch_gemm,         # the patch GEMM, its bias over long rows, the flipped-kernel dx
    "bias_column": bias_column,   # a one-channel input with a bias: the bias in the GEMM
    "shifted": shifted,           # stride-1 "same": k*k GEMMs over one padded grid
    "short": short_maps,          # stride-1 "same" on maps of at most p + 1 rows
}


class ConvContext(NamedTuple):
    """What a forward pass leaves for its backward: the algorithm it ran and what that
    algorithm saved; in eval mode nothing but the forward's arguments (``inputs``), from
    which a backward, if one is ever asked for, runs the forward again."""
    algorithm: str
    saved: object
    inputs: tuple


def geometry(x_shape, w, has_bias, stride, padding):
    """The convolution policy's view of a call (scratchnet.kernels.conv_policy.ConvGeometry)."""
    return conv_policy.ConvGeometry(w.shape[1], x_shape[2], x_shape[3], tuple(w.shape[2:]),
                                    stride, padding, has_bias, w.shape[0], x_shape[0])


def conv2d_forward(x, w, b, stride, padding, training):
    """y = conv(x, W) + b as (N, C_out, Ho, Wo) (channels-last memory behind the NCHW view),
    and the context its backward needs."""
    xp = get_array_module(x)
    algorithm = conv_policy.choose(xp, geometry(x.shape, w, b is not None, stride, padding))
    y, saved = ALGORITHMS[algorithm].forward(x, w, b, stride, padding)
    if training:
        return y, ConvContext(algorithm, saved, None)
    return y, ConvContext(algorithm, None, (x, w, b, stride, padding))  # no patches kept


def conv2d_backward(dy, ctx, needs_input_grad=True):
    """(dL/dx or None, dL/dW (C_out, C_in, kh, kw), dL/db or None) from dL/dy and the forward
    pass's context, by the algorithm that pass ran."""
    module = ALGORITHMS[ctx.algorithm]
    saved = ctx.saved if ctx.saved is not None else module.forward(*ctx.inputs)[1]
    return module.backward(dy, saved, needs_input_grad)
