"""benchmarks.gemm_ceiling lists the GEMMs a training step performs; its bound is only as good
as those lists, so they are checked against the products the layers really compute."""
import numpy as np
import pytest

from scratchnet.runtime import blas
from benchmarks.gemm_ceiling import (im2col_products, network_products, shifted_products,
                                     short_products)
from benchmarks.bench import forward_flops
from experiments.models import build_model
from scratchnet.kernels import conv_policy
from scratchnet.layers.conv import Conv2d


def recorded_gemms(run):
    """(m, k, n, transpose_a, accumulate) of every product the kernels run on the runtime's
    BLAS (scratchnet.runtime.blas.matmul) while ``run()`` executes: on these small maps the
    shifted sums run in one block, each product through matmul."""
    calls = []
    matmul = blas.matmul

    def is_transposed(a):
        return not a.flags.c_contiguous and a.flags.f_contiguous

    def record(a, b, out=None, beta=0.0):
        calls.append((a.shape[0], a.shape[1], b.shape[1], is_transposed(a), beta != 0))
        return matmul(a, b, out=out, beta=beta)

    blas.matmul = record
    try:
        run()
    finally:
        blas.matmul = matmul
    return sorted(calls)


def step_gemms(conv, x):
    """The recorded GEMMs of one forward and backward of conv at x."""
    def step():
        y = conv.forward(x)
        conv.backward(np.ones_like(y))

    return recorded_gemms(step)


@pytest.mark.parametrize("shape, k", [((2, 3, 9, 11), 3), ((2, 2, 6, 12), 5), ((1, 2, 4, 9), 5)])
def test_shifted_products_are_the_gemms_the_grid_computes(shape, k):
    rng = np.random.default_rng(0)
    conv = Conv2d(shape[1], 4, k, padding=(k - 1) // 2, bias=False, rng=rng)
    listed = sorted(p[1:] for p in shifted_products(conv, shape))
    with conv_policy.using(conv_policy.prefer("shifted")):
        assert step_gemms(conv, rng.standard_normal(shape)) == listed
    assert conv.algorithm == "shifted"


@pytest.mark.parametrize("shape, k", [((2, 3, 2, 7), 3), ((2, 3, 1, 5), 3), ((1, 2, 3, 6), 5)])
def test_short_products_are_the_gemms_a_short_map_computes(shape, k):
    rng = np.random.default_rng(0)
    conv = Conv2d(shape[1], 4, k, padding=(k - 1) // 2, bias=False, rng=rng)
    x = rng.standard_normal(shape)
    listed = sorted(p[1:] for p in short_products(conv, shape))
    with conv_policy.using(conv_policy.prefer("short")):
        assert step_gemms(conv, x) == listed
        assert network_products(conv, x)[0][1] == short_products(conv, shape)
    assert conv.algorithm == "short"


def test_im2col_products_count_the_network_forward_flops():
    """With every convolution on im2col, the forward products' FLOPs are the network's
    (benchmarks.bench.forward_flops), and each weight gradient multiplies as many."""
    cfg = dict(widths=[4, 8], depths=[1, 2], stem_kernel=5, stem_stride=2, stem_pool=True,
               dropout=0.0)
    shape, batch = (1, 20, 24), 3
    model = build_model(cfg, 50, seed=0, input_grad=False).train()
    x = np.random.default_rng(0).standard_normal((batch,) + shape)
    with conv_policy.using(conv_policy.prefer("im2col")):
        listed = network_products(model, x)
    flops = {label: sum(2 * m * k * n for _, used, _ in listed
                        for lab, m, k, n, _, _ in used if lab == label)
             for label in ("forward", "dW")}
    assert flops["forward"] == batch * forward_flops(shape, cfg)
    assert flops["dW"] == flops["forward"]
    stem = [used for stage, used, _ in listed if stage == "stem"][0]
    assert [p[0] for p in stem] == ["forward", "dW"]  # input_grad=False: no dL/dx for data


def test_im2col_products_of_a_strided_convolution():
    conv = Conv2d(3, 5, 3, stride=2, padding=1, bias=False)
    # 2 images of 7 x 8 -> 4 x 4 outputs: M = 32 rows of K = 27 patch values.
    assert im2col_products(conv, (2, 3, 7, 8)) == [
        ("forward", 32, 27, 5, False, False), ("dW", 27, 32, 5, True, False),
        ("dX", 32, 5, 27, False, False)]
