"""The shared-patch convolution on maps of at most p + 1 rows (scratchnet.kernels.short_maps),
against im2col's products and direct loops."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.kernels import conv_policy
from scratchnet.kernels.im2col import col2im, im2col
from scratchnet.kernels.short_maps import (correlate_short, input_gradient_short, is_short,
                                   row_window_patches, weight_gradient_short)

SHAPES = [(3, 1, 7), (3, 2, 5), (3, 2, 1), (5, 1, 4), (5, 2, 6), (5, 3, 3)]


def weight_matrix(weight):
    k = weight.shape[2]
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], k * k * weight.shape[1])


def test_short_maps_are_those_whose_output_rows_read_every_input_row():
    assert is_short(1, 3, 1) and is_short(2, 3, 1) and not is_short(3, 3, 1)
    assert is_short(3, 5, 2) and not is_short(4, 5, 2)
    assert not is_short(2, 3, 0)                       # not "same" padding
    def short(conv, h):
        return conv_policy.can_run("short", conv.geometry((1, 2, h, 5)))

    conv = sn.Conv2d(2, 2, 3, 1, 1)
    assert short(conv, 2) and not short(conv, 3)
    assert not short(sn.Conv2d(2, 2, 3, 2, 1), 2)      # stride 2
    assert not short(sn.Conv2d(2, 2, 1, 1, 0), 1)      # 1x1: im2col is a view
    wide = sn.Conv2d(512, 512, 3, 1, 1)    # measured 7.4 ms against shifted's 10.5 (test_shifted)
    assert conv_policy.DEFAULT["cpu"](wide.geometry((32, 512, 1, 7))) == "short"


def test_row_window_patches_hold_every_row_of_each_window(rng):
    x = rng.standard_normal((2, 3, 2, 4))
    patches = row_window_patches(x, 3, 1)
    assert patches.shape == (2 * 4, 2 * 3 * 3)
    xh = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1))).transpose(0, 2, 3, 1)  # (n, r, col, c)
    n, j = 1, 2
    expected = np.stack([xh[n, r, j + b] for r in range(2) for b in range(3)])
    np.testing.assert_array_equal(patches[n * 4 + j].reshape(6, 3), expected)


@pytest.mark.parametrize("k,h,w", SHAPES)
def test_correlate_short_is_the_im2col_convolution(rng, k, h, w):
    p = (k - 1) // 2
    x = rng.standard_normal((3, 4, h, w))
    weight = rng.standard_normal((5, 4, k, k))
    expected = (im2col(x, k, k, 1, p) @ weight_matrix(weight).T).reshape(3, h, w, 5)
    y = correlate_short(row_window_patches(x, k, p), weight_matrix(weight), 3, h, w, k, p)
    assert y.shape == (3, h, w, 5) and y.flags.c_contiguous
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,h,w", SHAPES)
def test_short_gradients_are_im2col_s_products(rng, k, h, w):
    """dL/dWm = dY^T im2col(x) (kernel rows that only meet padding get zero) and
    dL/dx = col2im(dY Wm)."""
    p = (k - 1) // 2
    x = rng.standard_normal((3, 4, h, w))
    dy = rng.standard_normal((3, 5, h, w))
    weight = rng.standard_normal((5, 4, k, k))
    d_y = dy.transpose(0, 2, 3, 1).reshape(-1, 5)
    dw = weight_gradient_short(row_window_patches(x, k, p), dy, k, p)
    np.testing.assert_allclose(dw, d_y.T @ im2col(x, k, k, 1, p), rtol=1e-12, atol=1e-12)
    dx = input_gradient_short(dy, weight_matrix(weight), 4, k, p)
    expected = col2im(d_y @ weight_matrix(weight), x.shape, k, k, 1, p)
    assert dx.shape == x.shape and dx.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train", [True, False])
def test_conv2d_on_a_two_row_map_matches_direct_loops(rng, train):
    layer = sn.Conv2d(3, 4, 3, 1, 1, rng=rng).astype(np.float64).train(train)
    x = rng.standard_normal((2, 3, 2, 5))
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w, b = layer.weight.data, layer.bias.data
    expected = np.empty((2, 4, 2, 5))
    for n in range(2):
        for o in range(4):
            for i in range(2):
                for j in range(5):
                    expected[n, o, i, j] = (xpad[n, :, i:i + 3, j:j + 3] * w[o]).sum() + b[o]
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
