"""Which algorithm computes a convolution: an explicit policy per array module.

Every algorithm below computes the same cross-correlation (Conv2d's docstring derives each);
they differ in speed only, and which one is fastest depends on the device:

    "im2col"       the patch matrix and one GEMM, Y = X Wm^T (+ b): any geometry;
    "bias_column"  one input channel with a bias (a folded stem): the bias rides in the GEMM
                   as one more column, [X | 1] [Wm | b]^T, instead of a pass over Y;
    "shifted"      a stride-1 "same" convolution as k*k GEMMs over shifted slices of one
                   padded grid (scratchnet.kernels.shifted), with no k*k times larger patch
                   matrix;
    "short"        a stride-1 "same" convolution on a map of at most p + 1 rows, whose output
                   rows all read every input row: one shared patch matrix
                   (scratchnet.kernels.short_maps);
    "reference"    the plain patch GEMM and col2im every other is tested against.

A policy is a function of the convolution's geometry that names one of them.  The CPU's takes
the cheapest by a cost model of the shape and the machine (``cheapest``, with the costs of
scratchnet.kernels.conv_cost): a function of the shapes alone, so the same run and its
--resume pick the same algorithms and keep their numbers.  The GPU takes the plain GEMM
everywhere (``plain_gemm``): its many-core GEMM has no use for the CPU's cache-sized tricks,
and each shifted product is a kernel launch.  ``using(policy)`` replaces both for a block of
code; tests run every algorithm through it, with no module constant patched.
"""
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from . import conv_cost
from .short_maps import is_short

ALGORITHMS = ("im2col", "bias_column", "shifted", "short", "reference")


class ConvGeometry(NamedTuple):
    """What the choice depends on: the input's channels and map size, the kernel (kh, kw),
    stride, padding, whether the convolution adds a bias, its output channels and the
    batch."""
    in_channels: int
    height: int
    width: int
    kernel: tuple
    stride: int
    padding: int
    bias: bool
    out_channels: int = 1
    batch: int = 1


def gridded(g):
    """Stride 1, an odd square kernel wider than 1 and "same" padding p = (k-1)/2: the
    convolutions the shifted grid (and, on short maps, the shared patches) can compute."""
    kh, kw = g.kernel
    return g.stride == 1 and kh == kw and kh > 1 and 2 * g.padding == kh - 1


def can_run(algorithm, g):
    """Whether ``algorithm`` can compute a convolution of geometry ``g``."""
    if algorithm in ("im2col", "reference"):
        return True
    if algorithm == "bias_column":
        return g.in_channels == 1 and g.bias and g.kernel[0] * g.kernel[1] > 1
    if algorithm == "shifted":
        return gridded(g)
    if algorithm == "short":
        return gridded(g) and is_short(g.height, g.kernel[0], g.padding)
    raise ValueError(f"unknown convolution algorithm {algorithm!r}; one of {ALGORITHMS}")


def cheapest(machine=conv_cost.CPU):
    """The policy taking, of the algorithms that can run, the one the cost model
    (scratchnet.kernels.conv_cost) charges least on ``machine``; ties go to the earlier of
    conv_cost.COSTS."""
    def policy(g):
        costs = {a: cost(g, machine) for a, cost in conv_cost.COSTS.items() if can_run(a, g)}
        return min(costs, key=costs.get)
    policy.machine = machine
    return policy


def plain_gemm(g):
    """The GPU's choice: im2col and one GEMM, whatever the geometry."""
    return "im2col"


def prefer(*algorithms):
    """A policy taking the first of ``algorithms`` that can run, else im2col (for tests and
    benchmarks that hold one algorithm against another)."""
    for a in algorithms:
        can_run(a, ConvGeometry(1, 1, 1, (1, 1), 1, 0, False))  # an unknown name raises here

    def policy(g):
        return next((a for a in algorithms if can_run(a, g)), "im2col")
    return policy


DEFAULT = {"cpu": cheapest(), "gpu": plain_gemm}
_forced = []


def choose(xp, g):
    """The algorithm for geometry ``g`` on array module ``xp``: the forced policy inside
    ``using``, else the device's default."""
    policy = _forced[-1] if _forced else DEFAULT["cpu" if xp is np else "gpu"]
    algorithm = policy(g)
    if not can_run(algorithm, g):
        raise ValueError(f"the convolution policy chose {algorithm!r}, which cannot compute "
                         f"{g}")
    return algorithm


@contextmanager
def using(policy):
    """Inside the block every convolution, on any device, takes ``policy``'s choice."""
    _forced.append(policy)
    try:
        yield policy
    finally:
        _forced.pop()
