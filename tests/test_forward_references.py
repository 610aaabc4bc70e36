"""Forward passes against independent references: direct loops and scipy."""
import numpy as np
import pytest
from scipy.signal import correlate

import scratchnet as sn
import scratchnet.layers.conv as conv_module
from scratchnet.kernels.convolution import weight_matrix
from scratchnet.kernels.im2col import (col2im, im2col, padded_tap_planes, patch_matrix,
                                      tap_planes, to_channels_last)


def conv_loops(x, w, b, stride, padding):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(n):
        for k in range(o):
            for r in range(ho):
                for s in range(wo):
                    patch = xp[i, :, r * stride:r * stride + kh, s * stride:s * stride + kw]
                    y[i, k, r, s] = (patch * w[k]).sum() + b[k]
    return y


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2)])
def test_conv2d_matches_direct_loops(rng, stride, padding):
    layer = sn.Conv2d(3, 4, (3, 2), stride, padding, rng=rng).astype(np.float64)
    x = rng.standard_normal((2, 3, 8, 7))
    expected = conv_loops(x, layer.weight.data, layer.bias.data, stride, padding)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_matches_scipy_correlate(rng):
    """Stride 1, no padding: sum over input channels of 2-D cross-correlations ('valid')."""
    layer = sn.Conv2d(2, 3, 3, rng=rng).astype(np.float64)
    x = rng.standard_normal((1, 2, 9, 6))
    w, b = layer.weight.data, layer.bias.data
    expected = np.stack([sum(correlate(x[0, c], w[o, c], mode="valid") for c in range(2)) + b[o]
                         for o in range(3)])
    np.testing.assert_allclose(layer.forward(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_conv2d_float32_stays_float32(rng):
    layer = sn.Conv2d(2, 3, 3, padding=1, rng=rng)
    y = layer.forward(rng.standard_normal((2, 2, 5, 5)).astype(np.float32))
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


def test_conv2d_weight_lives_in_channels_last_memory(rng):
    """The weight keeps PyTorch's (C_out, C_in, kh, kw) shape over (C_out, kh, kw, C_in)
    memory, so that the weight matrix is a view of it and the gradient has the same layout."""
    layer = sn.Conv2d(3, 4, (3, 2), rng=rng)
    w = layer.weight.data
    assert w.shape == (4, 3, 3, 2) and not w.flags.c_contiguous
    assert w.transpose(0, 2, 3, 1).flags.c_contiguous
    assert np.shares_memory(weight_matrix(layer.weight.data), w)
    assert layer.weight.grad.strides == w.strides
    same = conv_module.channels_last_weight(np.ascontiguousarray(w))
    np.testing.assert_array_equal(same, w)


@pytest.mark.parametrize("stride,padding,size", [(1, 1, 6), (1, 1, 12), (2, 1, 6), (1, 0, 6)])
def test_conv2d_gives_the_same_results_whatever_the_weight_layout(rng, stride, padding, size):
    """Any strided weight (here C-contiguous) computes what channels-last memory computes, on
    the im2col and the shifted paths, forward and backward."""
    layers = [sn.Conv2d(3, 5, 3, stride, padding, rng=np.random.default_rng(1)).astype(np.float64)
              for _ in range(2)]
    layers[1].weight = sn.Parameter(np.ascontiguousarray(layers[0].weight.data))
    assert layers[1].weight.data.flags.c_contiguous and not layers[0].weight.data.flags.c_contiguous
    x = rng.standard_normal((2, 3, size, size + 1))
    ys = [layer.forward(x) for layer in layers]
    dy = rng.standard_normal(ys[0].shape)
    dxs = [layer.backward(dy) for layer in layers]
    np.testing.assert_allclose(ys[1], ys[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dxs[1], dxs[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layers[1].weight.grad, layers[0].weight.grad, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 2)])
def test_col2im_is_the_adjoint_of_im2col(rng, stride, padding):
    """<im2col(x), c> = <x, col2im(c)> for all x, c: the defining property of the adjoint."""
    shape = (2, 3, 7, 6)
    x = rng.standard_normal(shape)
    cols = im2col(x, 3, 2, stride, padding)
    c = rng.standard_normal(cols.shape)
    lhs = (cols * c).sum()
    rhs = (x * col2im(c, shape, 3, 2, stride, padding)).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


@pytest.mark.parametrize("kernel,padding", [(3, 0), (3, 1), (3, 2), (5, 2), (1, 0)])
def test_stride1_input_gradient_is_the_flipped_kernel_convolution(rng, kernel, padding):
    """Conv2d's stride-1 backward (a convolution of dy with the flipped, transposed kernel)
    equals the general route dL/dx = col2im(dY Wm)."""
    layer = sn.Conv2d(3, 4, kernel, 1, padding, bias=False, rng=rng).astype(np.float64)
    x = rng.standard_normal((2, 3, 7, 6))
    dy = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dy)
    dy_mat = dy.transpose(0, 2, 3, 1).reshape(-1, 4)
    expected = col2im(dy_mat @ weight_matrix(layer.weight.data), x.shape, kernel, kernel, 1,
                      padding)
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


def test_im2col_rows_are_patches(rng):
    x = rng.standard_normal((2, 3, 5, 4))
    cols = im2col(x, 2, 3, stride=1, padding=0)
    assert cols.shape == (2 * 4 * 2, 2 * 3 * 3)
    # Row (n=1, i=2, j=1) holds x[1, :, 2:4, 1:4] in (a, b, c) order.
    row = cols[1 * 8 + 2 * 2 + 1]
    np.testing.assert_array_equal(row, x[1, :, 2:4, 1:4].transpose(1, 2, 0).ravel())


@pytest.mark.parametrize("kh,kw,stride,padding", [(7, 7, 2, 3), (3, 2, 1, 1), (5, 5, 3, 2),
                                                  (2, 3, 2, 0), (1, 1, 2, 0), (1, 3, 2, 0),
                                                  (4, 1, 3, 1)])
def test_one_channel_patches_are_the_gathered_ones(rng, kh, kw, stride, padding):
    """im2col of a one-channel input builds its transpose from the input's polyphase
    components, one strided copy a phase (tap_planes), kernels narrower than the stride
    included; the matrix is the same gather's, element for element, for the whole batch and
    for a slice of its samples (the blocks of the patch GEMM)."""
    x = rng.standard_normal((3, 1, 11, 14))
    expected = patch_matrix(to_channels_last(x, padding), kh, kw, stride)
    cols = im2col(x, kh, kw, stride, padding)
    assert cols.shape == expected.shape
    np.testing.assert_array_equal(cols, expected)
    if kh * kw > 1:
        np.testing.assert_array_equal(tap_planes(x, kh, kw, stride, padding), expected.T)
        rows = expected.shape[0] // 3                      # one sample's patches
        out = np.full((kh * kw, 2 * rows), np.nan)
        padded_tap_planes(to_channels_last(x, padding)[1:], kh, kw, stride, out)
        np.testing.assert_array_equal(out, expected[rows:].T)


# (2, 2, 1) and (4, 3, 2): even windows with p = k/2, where no offset reads inside the image
# at every output, so the first one leaves -inf bands for the others to fill (MaxPool2d).
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 2, 1),
                                                   (4, 3, 2), (5, 2, 2)])
def test_maxpool_matches_loops(rng, kernel, stride, padding):
    x = rng.standard_normal((2, 3, 7, 8))
    y = sn.MaxPool2d(kernel, stride, padding).forward(x)
    xp = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=-np.inf)
    ho, wo = y.shape[2:]
    expected = np.empty_like(y)
    for r in range(ho):
        for s in range(wo):
            expected[:, :, r, s] = xp[:, :, r * stride:r * stride + kernel,
                                      s * stride:s * stride + kernel].max(axis=(2, 3))
    np.testing.assert_array_equal(y, expected)


def test_maxpool_ties_route_to_first_maximum():
    x = np.ones((1, 1, 2, 2))
    pool = sn.MaxPool2d(2)
    pool.forward(x)
    np.testing.assert_array_equal(pool.backward(np.ones((1, 1, 1, 1)))[0, 0], [[1, 0], [0, 0]])


def test_global_avg_pool_is_the_spatial_mean(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(sn.GlobalAvgPool2d().forward(x), x.mean(axis=(2, 3)))


def test_time_max_mean_pool_against_loops(rng):
    x = rng.standard_normal((2, 3, 4, 6))
    pool = sn.TimeMaxMeanPool()
    y = pool.forward(x)
    dy = rng.standard_normal((2, 3))
    dx = pool.backward(dy)
    for n in range(2):
        for c in range(3):
            frames = [sum(x[n, c, f, t] for f in range(4)) / 4 for t in range(6)]
            assert np.isclose(y[n, c], max(frames) + sum(frames) / 6, rtol=1e-12)
            winner = frames.index(max(frames))
            for t in range(6):
                expected = dy[n, c] * ((t == winner) + 1 / 6) / 4
                np.testing.assert_allclose(dx[n, c, :, t], expected, rtol=1e-12)


@pytest.mark.parametrize("frames", [3, 9, 30])
def test_time_deltas_are_savitzky_golay_slopes_with_replicated_edges(rng, frames):
    """Independent reference: scipy's Savitzky-Golay first derivative of a straight-line fit
    over 9 frames, the signal extended by its edge values (mode="nearest")."""
    from scipy.signal import savgol_filter
    x = rng.standard_normal((2, 2, 3, frames))
    y = sn.TimeDeltas(order=2).forward(x)
    assert y.shape == (2, 6, 3, frames)
    slope = savgol_filter(x, 9, 1, deriv=1, mode="nearest", axis=-1)
    np.testing.assert_allclose(y[:, :2], x, rtol=0)  # channels [x, dx, ddx] per input channel
    np.testing.assert_allclose(y[:, 2:4], slope, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y[:, 4:], savgol_filter(slope, 9, 1, deriv=1, mode="nearest",
                                                       axis=-1), rtol=1e-10, atol=1e-12)
    # A line's delta is its slope, away from the edges (N = 4 frames each side).
    ramp = np.broadcast_to(0.5 * np.arange(frames, dtype=np.float64), (1, 1, 1, frames))
    np.testing.assert_allclose(sn.TimeDeltas(1).forward(ramp)[0, 1, 0, 4:frames - 4], 0.5)


def test_time_deltas_check_their_settings():
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError, match="order must be 1 \\(deltas\\) or 2"):
            sn.TimeDeltas(bad)
    for bad in (4, 1, 9.0):
        with pytest.raises(ValueError, match="delta width must be an odd whole number >= 3"):
            sn.TimeDeltas(2, width=bad)
    with pytest.raises(ValueError, match="TimeDeltas expects a 4-D input, got shape"):
        sn.TimeDeltas(1).forward(np.zeros((2, 3, 4)))


def test_resnet_with_deltas_feeds_three_channels_to_its_stem_and_is_otherwise_the_same():
    plain = sn.ResNet(1, 5, widths=(4, 8), depths=(1, 1), seed=3)
    with_deltas = sn.ResNet(1, 5, widths=(4, 8), depths=(1, 1), seed=3, deltas=2)
    assert with_deltas.stem.conv.in_channels == 3 and with_deltas.config["deltas"] == 2
    assert "deltas" not in plain.config  # earlier checkpoints' configs read the same
    assert list(plain.state_dict()) == list(with_deltas.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 20)).astype(np.float32)
    assert with_deltas.eval().forward(x).shape == (2, 5)
    # deltas=0 builds exactly the network without the argument (same draws, same order).
    unchanged = sn.ResNet(1, 5, widths=(4, 8), depths=(1, 1), seed=3, deltas=0)
    for key, value in plain.state_dict().items():
        np.testing.assert_array_equal(unchanged.state_dict()[key], value)


def test_time_max_mean_pool_ties_route_to_the_first_frame():
    x = np.ones((1, 1, 2, 3))  # every frame ties
    pool = sn.TimeMaxMeanPool()
    np.testing.assert_allclose(pool.forward(x), [[2.0]])
    dx = pool.backward(np.array([[3.0]]))
    np.testing.assert_allclose(dx[0, 0], [[2.0, 0.5, 0.5], [2.0, 0.5, 0.5]])  # 3 (1 + 1/3) / 2


def test_batchnorm_training_normalises_and_updates_running_stats(rng):
    bn = sn.BatchNorm2d(3, momentum=0.1).astype(np.float64)
    x = rng.standard_normal((4, 3, 5, 6)) * 3 + 2
    y = bn.forward(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)  # eps = 1e-5 shrinks it
    m = 4 * 5 * 6
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(bn.running_var,
                               0.9 + 0.1 * x.var(axis=(0, 2, 3)) * m / (m - 1))


def test_batchnorm_eval_uses_running_stats(rng):
    bn = sn.BatchNorm2d(2).astype(np.float64)
    bn.running_mean[...] = [1.0, -2.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.weight.data[...] = [2.0, 1.0]
    bn.bias.data[...] = [0.5, 0.0]
    bn.eval()
    x = rng.standard_normal((2, 2, 3, 3))
    expected = (x - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None]
                                                              + 1e-5)
    expected = expected * bn.weight.data[:, None, None] + bn.bias.data[:, None, None]
    np.testing.assert_allclose(bn.forward(x), expected, rtol=1e-12)


@pytest.mark.parametrize("train", [True, False])
def test_relu_is_the_maximum_with_zero_in_the_layout_of_its_input(rng, train):
    x = rng.standard_normal((3, 5, 4, 6)).astype(np.float32).transpose(0, 3, 1, 2)  # NHWC memory
    x[0, 0, 0, :2] = [0.0, -0.0]
    layer = sn.ReLU().train(train)
    y = layer.forward(x)
    assert y.shape == x.shape and y.strides == x.strides
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0.0))


def test_dropout_is_inverted_and_off_in_eval(rng):
    layer = sn.Dropout(0.25, seed=0)
    x = np.ones((200, 500))
    y = layer.forward(x)
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.01
    layer.eval()
    assert layer.forward(x) is x


def test_loss_matches_definition(rng):
    z = rng.standard_normal((3, 4))
    t = np.array([1, 0, 3])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    q = np.eye(4)[t] * 0.8 + 0.2 / 4
    expected = -(q * np.log(p)).sum() / 3
    assert abs(float(sn.SoftmaxCrossEntropy(0.2).forward(z, t)) - expected) < 1e-12


def test_smoothed_loss_of_probability_targets_matches_definition(rng):
    """Mixup's targets are probability rows q; smoothing applies to them as to one-hot rows:
    L = -(1/N) sum q' log p with q' = (1 - eps) q + eps / K, and dL/dz = (p - q') / N."""
    z = rng.standard_normal((4, 5))
    q = rng.dirichlet(np.ones(5), size=4)
    eps, k = 0.3, 5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    smoothed = (1 - eps) * q + eps / k
    loss = sn.SoftmaxCrossEntropy(eps)
    assert float(loss.forward(z, q)) == pytest.approx(-(smoothed * np.log(p)).sum() / 4,
                                                      rel=1e-12)
    np.testing.assert_allclose(loss.backward(), (p - smoothed) / 4, rtol=1e-12, atol=1e-15)


def test_loss_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0]])
    loss = sn.SoftmaxCrossEntropy()
    assert float(loss.forward(z, np.array([0]))) == pytest.approx(0.0, abs=1e-12)
    assert float(loss.forward(z, np.array([1]))) == pytest.approx(1000.0)


def test_maxpool_eval_mode_gives_the_same_maximum(rng):
    x = rng.standard_normal((2, 3, 9, 8))
    pool = sn.MaxPool2d(3, 2, 1)
    train_y = pool.forward(x)
    np.testing.assert_array_equal(pool.eval().forward(x), train_y)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (3, 3, 0),
                                                   (2, 2, 1), (4, 3, 2)])
@pytest.mark.parametrize("train", [True, False])
def test_maxpool_backward_routes_to_first_maximum_like_loops(rng, kernel, stride, padding, train):
    """Integer inputs, so most windows hold ties; every dy must reach the window's first
    maximum in row-major order, summed where windows overlap.  A dy sent anywhere else would
    be off by a whole standard-normal value."""
    x = rng.integers(-2, 3, size=(2, 3, 8, 9)).astype(np.float64)
    pool = sn.MaxPool2d(kernel, stride, padding)
    pool.training = train
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = pool.backward(dy)
    xp = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2), constant_values=-np.inf)
    expected = np.zeros_like(xp)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            window = xp[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
            first = window.reshape(2, 3, -1).argmax(axis=2)     # argmax: first in row-major
            a, b = np.divmod(first, kernel)
            for n in range(2):
                for c in range(3):
                    expected[n, c, i * stride + a[n, c], j * stride + b[n, c]] += dy[n, c, i, j]
    h, w = x.shape[2:]
    # Overlapping windows add in another order than these loops: float64 rounding only.
    np.testing.assert_allclose(dx, expected[:, :, padding:padding + h, padding:padding + w],
                               rtol=0, atol=1e-12)
