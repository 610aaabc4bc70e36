"""What each convolution algorithm costs: seconds for a training pass (forward and backward) of
a geometry on a machine, from the shape alone.  scratchnet.kernels.conv_policy picks the
cheapest algorithm that can run; no timing at run time enters, so the same shapes always get
the same algorithms (and a resumed run the same numbers).

The model.  Every algorithm is a few matrix products and a few copies (the patch matrices,
the grids, the crops); each is charged by the roofline, the slower of its arithmetic and its
memory traffic, plus a fixed cost per call (the Python, the BLAS dispatch, a thread wake-up):

    product (m x k)(k x n):  max(2 m k n / F,  b (m k + k n + m n (1 + beta)) / B) + c
    copy of e numbers:       2 b e / B + c      (read once, written once)

with b bytes per number, F the machine's GEMM rate, B its memory bandwidth and c the cost of a
call (:class:`Machine`).  beta = 1 for a product added into its output (read and written).

What the model says, in words.  The patch matrix (im2col) copies every input number k*k times
and then runs one large product: cheap calls, much traffic.  The shifted sum (k*k products
over one padded grid) copies the input once, but each of its k*k products reads and writes the
whole output again, so it wins when the products have enough channels to be arithmetic-bound
and loses on a one-channel input, where each product is an outer product and all traffic.
(On the CPU the sums and dW's row patches run a cache-sized block of positions at a time, and
the patch matrix of several channels a block of samples at a time, so much of that traffic
stays in cache: the model charges it all the same, and still ordered the algorithms as timed
on all 31 convolutions after each change, docs/speed.md.)
Short maps multiply no padding rows.  Small maps pay the calls.

The constants are read off measurements, not taken from a data sheet: of a grid of rates,
bandwidths and call costs, :data:`CPU` charged the algorithms in the order that
``python -m benchmarks.conv_algorithms`` timed them on the 31 convolutions of the presets and
the shape set (2-core host, 2026-12-07), losing least where it ordered them wrongly
(docs/speed.md, "A cost model picks the convolution").  The bandwidth it settles on, 80 GB/s,
is a cache's rather than memory's: much of the traffic it counts stays in cache.  What
matters to the choice is the constants' ratios, not their scale.
"""
from typing import NamedTuple

from .im2col import conv_output_size
from .shifted import grid_geometry


class Machine(NamedTuple):
    """gemm_flops: a large float32 GEMM's rate (FLOP/s); bandwidth: bytes/s of a streaming
    copy; call_seconds: the fixed cost of one kernel call; itemsize: bytes per number."""
    gemm_flops: float
    bandwidth: float
    call_seconds: float
    itemsize: int = 4


# Fitted to the 2-core host of 2026-12-07 (above; its 2048^3 float32 GEMMs ran at 210-222
# GFLOP/s on OpenBLAS's Haswell kernels).
CPU = Machine(gemm_flops=200e9, bandwidth=80e9, call_seconds=30e-6)


def product(m, k, n, machine, accumulate=False):
    """Seconds for one (m x k)(k x n) product (added into its output when ``accumulate``)."""
    b = machine.itemsize
    flops = 2.0 * m * k * n / machine.gemm_flops
    traffic = b * (m * k + k * n + m * n * (2 if accumulate else 1)) / machine.bandwidth
    return max(flops, traffic) + machine.call_seconds


def copy(elements, machine):
    """Seconds to read and write ``elements`` numbers once."""
    return 2.0 * machine.itemsize * elements / machine.bandwidth + machine.call_seconds


def output_size(g):
    """(Ho, Wo) of geometry ``g``."""
    return (conv_output_size(g.height, g.kernel[0], g.stride, g.padding),
            conv_output_size(g.width, g.kernel[1], g.stride, g.padding))


def im2col(g, machine):
    """The patch matrix (M, K), M = N Ho Wo, K = k k C: forward one product, backward one for
    dW and, for dx, the flipped kernel's patches of dy and one product (stride 1) or a
    product and col2im's scatter (strided)."""
    kh, kw = g.kernel
    ho, wo = output_size(g)
    m, k, o = g.batch * ho * wo, kh * kw * g.in_channels, g.out_channels
    seconds = copy(m * k, machine) + product(m, k, o, machine)      # forward
    seconds += product(o, m, k, machine)                            # dW
    if g.stride == 1:
        pixels = g.batch * g.height * g.width
        seconds += copy(pixels * kh * kw * o, machine)
        seconds += product(pixels, kh * kw * o, g.in_channels, machine)
    else:
        seconds += product(m, o, k, machine) + copy(m * k, machine)
    if g.bias:
        seconds += 1.5 * copy(m * o, machine)                       # add b; sum db (a read)
    return seconds


def bias_column(g, machine):
    """im2col with the bias as one more column of the patches: no pass over Y for it."""
    kh, kw = g.kernel
    ho, wo = output_size(g)
    m, k, o = g.batch * ho * wo, kh * kw * g.in_channels, g.out_channels
    return im2col(g._replace(bias=False), machine) + copy(m, machine) \
        + product(m, k + 1, o, machine) - product(m, k, o, machine)


def shifted(g, machine):
    """k*k products over the padded grid of H (N (W + p)) positions, each added into the whole
    output (kernel row a skipping the rows it would read as padding), for the forward and
    for dx; dW from row patches (k times the input) in k products; the grids and crops."""
    k, p, c, o = g.kernel[0], g.padding, g.in_channels, g.out_channels
    grid = g.height * grid_geometry(g.batch, g.height, g.width, p)[1]   # H rows of N (W + p)
    rows = grid * (k * g.height - p * (p + 1)) / (k * g.height)     # per product, on average
    seconds = copy(grid * c, machine) + copy(grid * o, machine)     # x's grid; the crop of y
    seconds += k * k * product(rows, c, o, machine, accumulate=True)
    seconds += copy(grid * o, machine) + copy(grid * k * c, machine)  # dy's grid; row patches
    seconds += k * product(k * c, rows, o, machine)                   # dW
    seconds += k * k * product(rows, o, c, machine, accumulate=True) + copy(grid * c, machine)
    if g.bias:
        seconds += copy(grid * o, machine) / 2
    return seconds


def short(g, machine):
    """On h <= p + 1 rows: one patch matrix (N W, h k C) of the rows' windows, h products for
    y, h for dW and h for the patches' gradient, scattered back to dx."""
    k, h, c, o = g.kernel[0], g.height, g.in_channels, g.out_channels
    m, width = g.batch * g.width, h * k * c
    seconds = copy(m * width, machine) + h * product(m, width, o, machine)
    seconds += copy(g.batch * h * g.width * o, machine)               # rows to NHWC; dy's rows
    seconds += h * product(o, m, width, machine) + h * product(m, o, width, machine, True)
    seconds += copy(m * width, machine)                               # scatter to dx
    if g.bias:
        seconds += copy(m * h * o, machine)
    return seconds


COSTS = {"im2col": im2col, "bias_column": bias_column, "shifted": shifted, "short": short}
