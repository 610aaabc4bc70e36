"""Stride-1 convolution as shifted GEMMs (scratchnet.kernels.shifted) against im2col."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.kernels import conv_cost, conv_policy
from scratchnet.gradcheck import check_layer
from scratchnet.kernels.im2col import im2col
from scratchnet.kernels import shifted
from scratchnet.runtime import parallel
from scratchnet.kernels.shifted import (correlate_shifted, crop, grid_geometry,
                                        position_blocks, row_blocks, row_patches, to_grid,
                                        weight_gradient_shifted)


def test_to_grid_lays_image_rows_out_row_index_outermost(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    p = 2
    wq, r, lead = grid_geometry(3, 5, 6, p)
    assert (wq, r, lead) == (8, 3 * 8, 2)
    flat = to_grid(x, p)
    assert flat.shape == (2 * lead + 5 * r, 4)
    grid = flat[lead:lead + 5 * r].reshape(5, 3, wq, 4)     # (i, n, j, c)
    np.testing.assert_array_equal(grid[:, :, :6], x.transpose(2, 0, 3, 1))
    assert not flat[:lead].any() and not flat[lead + 5 * r:].any()
    assert not grid[:, :, 6:].any()


def test_row_blocks_are_the_output_rows_each_kernel_row_meets():
    assert row_blocks(6, 3) == [(1, 0, 6), (0, 1, 6), (2, 0, 5)]
    assert row_blocks(6, 5) == [(2, 0, 6), (0, 2, 6), (1, 1, 6), (3, 0, 5), (4, 0, 4)]
    assert row_blocks(1, 5) == [(2, 0, 1), (0, 2, 1), (1, 1, 1), (3, 0, 0), (4, 0, -1)]


@pytest.mark.parametrize("k,h,w", [(3, 9, 11), (5, 8, 6), (3, 1, 7), (5, 1, 1), (3, 2, 1),
                                   (5, 2, 3)])
def test_correlate_shifted_is_the_im2col_convolution(rng, k, h, w):
    """Including maps no wider or taller than the kernel's reach, where kernel rows meet no
    image row and every horizontal neighbour outside is a zero column or the lead zeros."""
    p = (k - 1) // 2
    x = rng.standard_normal((3, 4, h, w))
    weight = rng.standard_normal((5, 4, k, k))
    expected = im2col(x, k, k, 1, p) @ weight.transpose(0, 2, 3, 1).reshape(5, -1).T
    _, r, _ = grid_geometry(3, h, w, p)
    y = correlate_shifted(to_grid(x, p), h, weight)
    assert y.shape == (h * r, 5)
    np.testing.assert_allclose(crop(y, 3, h, w).reshape(-1, 5), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_the_sums_in_blocks_are_the_convolution(rng, monkeypatch, k):
    """Blocks of grid positions small enough that kernel rows start and end inside blocks:
    the im2col convolution, and on these small products (one thread either way) bit for bit
    the sums over the whole grid in one block: every output row gets the same products in
    the same order; and so is the crop taken block by block."""
    n, c, h, w, c_out = 3, 4, 9, 11, 5
    p = (k - 1) // 2
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((c_out, c, k, k))
    grid = to_grid(x, p)
    whole = correlate_shifted(grid, h, weight)        # 9 * 3 * 13 positions: one block
    expected = im2col(x, k, k, 1, p) @ weight.transpose(0, 2, 3, 1).reshape(c_out, -1).T
    monkeypatch.setattr(shifted, "BLOCK_BYTES", 0)
    for rows in (7, 30):                              # 16 and 8 blocks
        monkeypatch.setattr(shifted, "BLOCK_ROWS", rows)
        assert len(position_blocks(grid.shape[0] - 2 * p, c, c_out, grid)) > 2
        blocked = correlate_shifted(grid, h, weight)
        np.testing.assert_allclose(crop(blocked, n, h, w).reshape(-1, c_out), expected,
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(crop(blocked, n, h, w), crop(whole, n, h, w))
        # Cropped block by block as the sums go (image rows that two or three blocks share
        # at the end), with a bias: the same as the crop of the whole grid's sums.
        bias = rng.standard_normal(c_out)
        out = np.full((n, h, w, c_out), np.nan)
        assert correlate_shifted(grid, h, weight, cropped=(out, bias)) is out
        np.testing.assert_array_equal(out, crop(whole, n, h, w, bias))


def test_position_blocks_cover_the_grid_evenly_from_the_shapes_alone():
    rows = max(shifted.BLOCK_ROWS, shifted.BLOCK_BYTES // (32 * 4))
    multiple = parallel.BLOCK_MULTIPLE
    f32 = np.zeros(1, np.float32)                                     # rows of float32
    assert position_blocks(2 * rows - 1, 16, 16, f32) == [0, 2 * rows - 1]   # one block
    for positions in (2 * rows, 5 * rows + 3, 3 * rows, 17 * rows):
        bounds = position_blocks(positions, 16, 16, f32)
        sizes = np.diff(bounds)
        assert bounds[0] == 0 and bounds[-1] == positions
        assert len(sizes) % multiple == 0 and len(sizes) >= positions // rows
        assert sizes.max() - sizes.min() <= 1
    # Wider rows, fewer of them per block: the bytes bound.
    wide = shifted.BLOCK_BYTES // (1024 * 4)
    least = max(wide, shifted.BLOCK_ROWS)
    assert np.diff(position_blocks(100 * least, 512, 512, f32)).min() >= least * 25 // 26


def test_crop_takes_the_images_columns_adds_the_bias_and_is_contiguous(rng):
    y = rng.standard_normal((4 * 2 * 7, 3))                 # 2 images of 4 rows, Wq = 7
    bias = np.array([1.0, -2.0, 0.5])
    out = crop(y, 2, 4, 5, bias)
    assert out.shape == (2, 4, 5, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, y.reshape(4, 2, 7, 3)[:, :, :5].transpose(1, 0, 2, 3)
                                  + bias)


def cpu_choice(conv, h, w):
    return conv_policy.choose(np, conv.geometry((2, conv.in_channels, h, w)))


# Convolutions timed by `python -m benchmarks.conv_algorithms` (2-core host, 2026-12-07), where
# one algorithm beat the others by more than 10%: (C, H, W, k, C_out, batch) -> the fastest.
MEASURED = {
    (1, 40, 100, 3, 16, 64): "im2col",      # 4.3 ms against shifted's 11.7: one channel
    (1, 64, 200, 5, 24, 32): "im2col",      # 18.3 against 58.4
    (1, 64, 128, 3, 128, 16): "im2col",     # 12.5 against 47.9
    (32, 32, 63, 3, 32, 32): "shifted",     # 27.1 against im2col's 40.8
    (16, 40, 100, 3, 16, 64): "shifted",    # 44.8 against 51.9
    (48, 16, 50, 3, 48, 32): "shifted",     # 19.8 against 25.0
    (64, 10, 25, 3, 64, 64): "shifted",     # 18.2 against 22.1
    (512, 1, 7, 3, 512, 32): "short",       # 7.4 against shifted's 10.5 and im2col's 16.6
}


@pytest.mark.parametrize("shape, fastest", list(MEASURED.items()))
def test_the_cpu_policy_takes_the_algorithm_measured_fastest(shape, fastest):
    c, h, w, k, c_out, batch = shape
    conv = sn.Conv2d(c, c_out, k, 1, (k - 1) // 2, bias=False)
    assert conv_policy.choose(np, conv.geometry((batch, c, h, w))) == fastest


def test_the_cpu_policy_is_the_cost_models_cheapest_and_runs_only_what_can():
    """Its choice is the cheapest of conv_cost's charges, a function of the shape alone; where
    only im2col can run (strided, unpadded, 1x1), it is im2col."""
    conv = sn.Conv2d(24, 24, 3, 1, 1)
    g = conv.geometry((2, 24, 32, 100))         # cpu_choice's batch
    costs = {a: conv_cost.COSTS[a](g, conv_cost.CPU) for a in ("im2col", "shifted")}
    assert cpu_choice(conv, 32, 100) == min(costs, key=costs.get)
    assert all(cpu_choice(conv, 32, 100) == cpu_choice(conv, 32, 100) for _ in range(3))
    assert cpu_choice(sn.Conv2d(2, 2, 3, 2, 1), 32, 63) == "im2col"   # stride 2
    assert cpu_choice(sn.Conv2d(2, 2, 3, 1, 0), 32, 63) == "im2col"   # not "same" padding
    assert cpu_choice(sn.Conv2d(2, 2, 1, 1, 0), 32, 63) == "im2col"   # 1x1: im2col is a view


def test_the_gpu_policy_takes_the_plain_gemm_everywhere():
    for conv, h, w in [(sn.Conv2d(2, 2, 3, 1, 1), 32, 63), (sn.Conv2d(2, 2, 3, 1, 1), 2, 8),
                       (sn.Conv2d(1, 4, 7, 2, 3), 128, 251)]:
        assert conv_policy.DEFAULT["gpu"](conv.geometry((2, conv.in_channels, h, w))) == \
            "im2col"


def test_a_policy_choosing_what_cannot_run_is_an_error(rng):
    conv = sn.Conv2d(2, 2, 3, 2, 1)
    with conv_policy.using(lambda g: "shifted"):
        with pytest.raises(ValueError, match="chose 'shifted', which cannot compute"):
            conv.forward(rng.standard_normal((1, 2, 8, 8)))
    with pytest.raises(ValueError, match="unknown convolution algorithm 'winograd'"):
        conv_policy.prefer("winograd")


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_both_paths_agree_on_a_full_size_map(rng, training, bias):
    """A 3x3 convolution on stage 1's map, shifted against im2col (each forced)."""
    x = rng.standard_normal((2, 3, 20, 33))
    results = []
    for policy, path in ((conv_policy.prefer("shifted"), "shifted"),
                         (conv_policy.prefer("im2col"), "im2col")):
        conv = sn.Conv2d(3, 4, 3, 1, 1, bias=bias, rng=np.random.default_rng(1)).astype(
            np.float64)
        conv.train(training)
        with conv_policy.using(policy):
            y = conv.forward(x)
            dy = np.random.default_rng(2).standard_normal(y.shape)
            dx = conv.backward(dy)
        assert conv.algorithm == path
        grads = [p.grad.copy() for p in conv.parameters()]
        results.append((y, dx, grads))
    (y0, dx0, g0), (y1, dx1, g1) = results
    np.testing.assert_allclose(y0, y1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx0, dx1, rtol=1e-12, atol=1e-12)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_shifted_5x5_gradients(rng):
    layer = sn.Conv2d(2, 3, 5, 1, 2, rng=rng).astype(np.float64)
    with conv_policy.using(conv_policy.prefer("shifted")):
        errors = check_layer(layer, rng.standard_normal((2, 2, 6, 7)))
    assert layer.algorithm == "shifted"
    assert max(errors.values()) < 1e-6, errors


def test_shifted_path_skips_the_input_gradient(rng):
    conv = sn.Conv2d(2, 3, 3, 1, 1, rng=rng, needs_input_grad=False).astype(np.float64)
    with conv_policy.using(conv_policy.prefer("shifted")):
        y = conv.forward(rng.standard_normal((2, 2, 20, 30)))
    assert conv.algorithm == "shifted"
    assert conv.backward(np.ones_like(y)) is None
    assert np.abs(conv.weight.grad).sum() > 0


def test_row_patches_are_neighbouring_rows_side_by_side(rng):
    flat = rng.standard_normal((40, 3))
    q = row_patches(flat, 3)
    assert q.shape == (38, 9) and q.flags.c_contiguous
    for r in (0, 7, q.shape[0] - 1):
        np.testing.assert_array_equal(q[r], np.concatenate([flat[r], flat[r + 1], flat[r + 2]]))
    # Read through a view with overlapping rows: a strided F is made contiguous first.
    np.testing.assert_array_equal(row_patches(np.asfortranarray(flat), 3), q)
    np.testing.assert_array_equal(row_patches(flat[::2], 2)[3], np.concatenate(flat[6:9:2]))


@pytest.mark.parametrize("k,h,w", [(3, 9, 11), (5, 8, 6), (3, 1, 7), (5, 1, 1), (5, 2, 3)])
def test_weight_gradient_shifted_is_dy_transposed_times_the_patches(rng, k, h, w):
    """dL/dW from k GEMMs over row patches against dY^T im2col(x), including the grid's
    zero columns (they must contribute nothing) and kernel rows that meet no image row."""
    p = (k - 1) // 2
    x = rng.standard_normal((3, 4, h, w))
    dy = rng.standard_normal((3, 5, h, w))
    expected = (dy.transpose(0, 2, 3, 1).reshape(-1, 5).T @ im2col(x, k, k, 1, p))
    dw = weight_gradient_shifted(to_grid(x, p), to_grid(dy, p), h, k)
    assert dw.shape == (5, k, k, 4)
    np.testing.assert_allclose(dw.reshape(5, -1), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,h,w", [(3, 9, 11), (5, 8, 6), (3, 2, 7)])
@pytest.mark.parametrize("transposed", [False, True])
def test_weight_gradient_in_blocks_is_dy_transposed_times_the_patches(rng, monkeypatch, k, h, w,
                                                                      transposed):
    """The gradient a block of positions at a time (blocks so small that kernel rows start
    and end inside them, and some blocks meet no position of a kernel row), in either
    orientation: dY^T im2col(x), as over the whole grid's patches."""
    p = (k - 1) // 2
    x = rng.standard_normal((3, 4, h, w))
    dy = rng.standard_normal((3, 5, h, w))
    expected = (dy.transpose(0, 2, 3, 1).reshape(-1, 5).T @ im2col(x, k, k, 1, p))
    monkeypatch.setattr(shifted, "gradient_transposed", lambda k, c_out: transposed)
    monkeypatch.setattr(shifted, "BLOCK_BYTES", 0)
    monkeypatch.setattr(shifted, "BLOCK_ROWS", 5)
    positions = h * grid_geometry(3, h, w, p)[1]
    x_grid = to_grid(x, p)
    assert len(position_blocks(positions, k * 4, 5, x_grid)) > 5
    dw = weight_gradient_shifted(x_grid, to_grid(dy, p), h, k)
    assert dw.shape == (5, k, k, 4)
    assert (dw.strides[3] == dw.itemsize) != transposed     # dY^T Q: C_in innermost
    np.testing.assert_allclose(dw.reshape(5, -1), expected, rtol=1e-12, atol=1e-12)


def test_tap_matrices_in_any_weight_memory(rng):
    """taps[a, b] = W[:, :, a, b]^T (C_in, C_out) for weights in Conv2d's (C_out, k, k, C_in)
    memory, in NCHW memory, and for the flipped, channel-swapped kernel of dL/dx."""
    from scratchnet.kernels.shifted import tap_matrices
    from scratchnet.layers.conv import channels_last_weight
    w = rng.standard_normal((5, 4, 3, 3))
    for weight in (w, channels_last_weight(w),
                   channels_last_weight(w)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)):
        taps = tap_matrices(weight)
        assert taps.shape == (3, 3) + weight.shape[1::-1]
        for a in range(3):
            for b in range(3):
                np.testing.assert_array_equal(taps[a, b], weight[:, :, a, b].T)
                assert taps[a, b].flags.c_contiguous or taps[a, b].flags.f_contiguous
