"""One input channel with a bias (a folded stem): the bias rides in the GEMM as one more
column, [X | 1] [Wm | b]^T = X Wm^T + 1 b^T, instead of a pass over Y.

The patches of a one-channel input are built transposed, a plane per tap, with a row of ones
appended (scratchnet.kernels.im2col.tap_planes); the backward pass is the patch GEMM's
(scratchnet.kernels.patch_gemm), from the same patches without the ones.
"""
from ..runtime.backend import get_array_module
from ..runtime import blas
from . import patch_gemm
from .im2col import conv_output_size, tap_planes, weight_matrix


def forward(x, w, b, stride, padding):
    """(y (N, C_out, Ho, Wo), saved as patch_gemm's)."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    ho, wo = conv_output_size(h, kh, stride, padding), conv_output_size(wd, kw, stride, padding)
    planes = tap_planes(x, kh, kw, stride, padding, ones=True)
    y = blas.matmul(planes.T, xp.concatenate([weight_matrix(w), b[:, None]], axis=1).T)
    return (y.reshape(n, ho, wo, c_out).transpose(0, 3, 1, 2),
            patch_gemm.Saved(planes[:-1].T, x.shape, w, True, stride, padding))


backward = patch_gemm.backward
