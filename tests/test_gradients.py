"""Finite-difference checks (central differences, float64) of every layer's backward pass,
w.r.t. the input and every parameter."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.kernels import conv_policy
from scratchnet.gradcheck import check_layer, \
    network_directional_error, numerical_gradient, relative_error

TOL = 1e-6


class ConvPath:
    """One convolution algorithm, forced where it can run (else im2col), and the checks that
    the convolutions of a test really took it."""

    def __init__(self, name):
        self.name = name

    def expected(self, geometry):
        return self.name if conv_policy.can_run(self.name, geometry) else "im2col"

    def check(self, model):
        """Every convolution of ``model`` took this algorithm or im2col, and one took this."""
        taken = {m.algorithm for m in model.modules() if isinstance(m, sn.Conv2d)}
        assert taken <= {self.name, "im2col"} and self.name in taken, taken


@pytest.fixture(params=["im2col", "shifted"])
def conv_path(request):
    """Run a test through both convolution algorithms: im2col, and (for every stride-1 "same"
    convolution, however small its map) the shifted GEMMs of scratchnet.kernels.shifted."""
    with conv_policy.using(conv_policy.prefer(request.param)):
        yield ConvPath(request.param)


def f64(layer):
    return layer.astype(np.float64)


def assert_all_small(errors):
    bad = {k: v for k, v in errors.items() if not v < TOL}
    assert not bad, f"relative errors above {TOL}: {bad}"


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradients(rng, n, stride, padding, bias, conv_path):
    layer = f64(sn.Conv2d(3, 4, 3, stride, padding, bias=bias, rng=rng))
    errors = check_layer(layer, rng.standard_normal((n, 3, 7, 6)))
    assert layer.algorithm == conv_path.expected(layer.geometry((n, 3, 7, 6)))
    assert layer.algorithm == conv_path.name or (stride, padding) != (1, 1)
    assert set(errors) == {"input", "weight"} | ({"bias"} if bias else set())
    assert_all_small(errors)


def test_numerical_gradient_perturbs_strided_arrays_in_place(rng):
    """A transposed (non-contiguous) x gets the gradient of L = sum_i dy_i sum_j x_ij m_ij,
    dy_i m_ij: the perturbations land in x itself, by index."""
    m = rng.standard_normal((3, 4))
    x = np.ascontiguousarray(rng.standard_normal((4, 3))).T      # (3, 4), not contiguous
    dy = rng.standard_normal(3)
    grad = numerical_gradient(lambda: (x * m).sum(axis=1), x, dy)
    np.testing.assert_allclose(grad, dy[:, None] * m, rtol=1e-7)


@pytest.mark.parametrize("k,h,w", [(3, 1, 5), (3, 2, 4), (5, 2, 4), (5, 3, 6)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_conv2d_gradients_on_short_maps(rng, k, h, w, bias, train):
    """Maps of at most p + 1 rows, on the shared-patch path (scratchnet.kernels.short_maps)."""
    layer = f64(sn.Conv2d(3, 4, k, 1, (k - 1) // 2, bias=bias, rng=rng)).train(train)
    with conv_policy.using(conv_policy.prefer("short")):
        assert_all_small(check_layer(layer, rng.standard_normal((2, 3, h, w))))
    assert layer.algorithm == "short"


def test_conv2d_rectangular_kernel_and_1x1(rng):
    assert_all_small(check_layer(f64(sn.Conv2d(2, 3, (3, 2), 2, 1, rng=rng)),
                                 rng.standard_normal((2, 2, 5, 7))))
    assert_all_small(check_layer(f64(sn.Conv2d(3, 2, 1, 2, 0, rng=rng)),
                                 rng.standard_normal((2, 3, 5, 5))))
    # K = C_in = 2 < C_out = 5: dL/dW is computed as dY^T X rather than (X^T dY)^T.
    assert_all_small(check_layer(f64(sn.Conv2d(2, 5, 1, 2, 0, rng=rng)),
                                 rng.standard_normal((2, 2, 5, 5))))


@pytest.mark.parametrize("train", [True, False])
def test_one_channel_conv_with_bias_gradients(rng, train):
    """One input channel and a bias (a folded stem): the bias rides in the GEMM as a column
    of ones in the patches, which the cached patch matrix must not keep."""
    layer = f64(sn.Conv2d(1, 3, 3, 2, 1, rng=rng))
    layer.bias.data[...] = rng.standard_normal(3)
    layer.training = train
    x = rng.standard_normal((2, 1, 7, 6))
    without = f64(sn.Conv2d(1, 3, 3, 2, 1, bias=False, rng=rng))
    without.weight.data[...] = layer.weight.data
    np.testing.assert_allclose(layer.forward(x),
                               without.forward(x) + layer.bias.data[:, None, None], rtol=1e-12)
    assert_all_small(check_layer(layer, x))


@pytest.mark.parametrize("n", [1, 4])
def test_batchnorm_training_gradients(rng, n):
    layer = f64(sn.BatchNorm2d(3))
    layer.weight.data[...] = rng.standard_normal(3)
    layer.bias.data[...] = rng.standard_normal(3)
    assert_all_small(check_layer(layer, rng.standard_normal((n, 3, 3, 5)) * 2 + 1))


def test_batchnorm_eval_gradients(rng):
    layer = f64(sn.BatchNorm2d(3))
    layer.running_mean[...] = rng.standard_normal(3)
    layer.running_var[...] = rng.random(3) + 0.5
    layer.weight.data[...] = rng.standard_normal(3)
    layer.eval()
    assert_all_small(check_layer(layer, rng.standard_normal((2, 3, 4, 3))))


def test_relu_gradient(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink, where the derivative is undefined
    assert_all_small(check_layer(sn.ReLU(), x))


def test_relu_gradient_in_eval_mode(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5
    assert_all_small(check_layer(sn.ReLU().eval(), x))


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (3, 3, 0)])
@pytest.mark.parametrize("n", [1, 2])
def test_maxpool_gradients(rng, kernel, stride, padding, n):
    # Distinct values: the max of every window is unique, so the function is smooth around x.
    x = rng.permutation(n * 2 * 7 * 6).reshape(n, 2, 7, 6).astype(np.float64) * 0.1
    assert_all_small(check_layer(sn.MaxPool2d(kernel, stride, padding), x, h=1e-4))


def test_global_avg_pool_gradient(rng):
    assert_all_small(check_layer(sn.GlobalAvgPool2d(), rng.standard_normal((3, 4, 3, 5))))


def test_time_max_mean_pool_gradient(rng):
    # Gaussian maps: the frequency means of different frames differ, so every argmax over time
    # is unique and stays put under the finite-difference steps.
    assert_all_small(check_layer(sn.TimeMaxMeanPool(), rng.standard_normal((3, 4, 3, 5))))


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("frames", [1, 4, 11])
def test_time_deltas_gradient(rng, order, frames):
    # Fewer frames than the width (4 < 9, and 1) exercise the replicated edges.
    assert_all_small(check_layer(sn.TimeDeltas(order), rng.standard_normal((2, 3, 2, frames))))


@pytest.mark.parametrize("n", [1, 5])
def test_linear_gradients(rng, n):
    assert_all_small(check_layer(f64(sn.Linear(7, 3, rng=rng)), rng.standard_normal((n, 7))))


def test_flatten_gradient(rng):
    assert_all_small(check_layer(sn.Flatten(), rng.standard_normal((2, 3, 2, 2))))


def test_dropout_gradient_with_fixed_mask(rng):
    layer = sn.Dropout(0.4, seed=7)
    assert_all_small(check_layer(layer, rng.standard_normal((4, 6)), reset=lambda: layer.reseed(7)))


def test_sequential_gradients(rng, conv_path):
    # No conv bias before BatchNorm: BN subtracts any per-channel constant, so that gradient is
    # exactly zero and a relative error of two round-off values would be meaningless.
    model = f64(sn.Sequential(sn.Conv2d(2, 3, 3, 1, 1, bias=False, rng=rng), sn.BatchNorm2d(3),
                              sn.ReLU(),
                              sn.MaxPool2d(2), sn.Flatten(), sn.Linear(3 * 3 * 2, 4, rng=rng)))
    x = rng.standard_normal((3, 2, 6, 5))
    assert_all_small(check_layer(model, x))
    conv_path.check(model)


@pytest.mark.parametrize("cin,cout,stride", [(3, 3, 1), (3, 5, 1), (3, 4, 2)])
@pytest.mark.parametrize("n", [1, 3])
def test_basic_block_gradients(rng, cin, cout, stride, n, conv_path):
    block = f64(sn.BasicBlock(cin, cout, stride, rng=rng))
    names = {name for name, _ in block.named_parameters()}
    assert ("downsample.0.weight" in names) == (stride != 1 or cin != cout)
    assert_all_small(check_layer(block, rng.standard_normal((n, cin, 5, 6))))
    conv_path.check(block)


def _tiny_resnet(seed=0, dropout=0.0, pool="avg", deltas=0):
    return f64(sn.ResNet(in_channels=1, num_classes=5, widths=(3, 4), depths=(1, 1),
                         stem_kernel=3, stem_stride=1, stem_pool=True, dropout=dropout,
                         seed=seed, pool=pool, deltas=deltas))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_gradient_hard_labels(rng, smoothing):
    loss = sn.SoftmaxCrossEntropy(label_smoothing=smoothing)
    z = rng.standard_normal((4, 5)) * 3
    t = np.array([0, 4, 2, 2])
    loss.forward(z, t)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(z, t), z, np.array(1.0))
    assert relative_error(analytic, numeric) < TOL


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_loss_gradient_soft_targets(rng, smoothing):
    loss = sn.SoftmaxCrossEntropy(label_smoothing=smoothing)
    z = rng.standard_normal((3, 6))
    q = rng.random((3, 6))
    q /= q.sum(axis=1, keepdims=True)
    loss.forward(z, q)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(z, q), z, np.array(1.0))
    assert relative_error(analytic, numeric) < TOL


@pytest.mark.parametrize("pool, deltas", [("avg", 0), ("time_max_mean", 0), ("avg", 2)])
def test_resnet_end_to_end_every_parameter(rng, pool, deltas, conv_path):
    """loss(ResNet(x)) -> every parameter and the input, element by element."""
    model = _tiny_resnet(dropout=0.3, pool=pool, deltas=deltas)
    loss = sn.SoftmaxCrossEntropy(label_smoothing=0.1)
    x = rng.standard_normal((3, 1, 8, 7))
    t = np.array([1, 4, 0])

    def value():
        model.dropout.reseed(3)
        return loss.forward(model.forward(x), t)

    value()
    model.zero_grad()
    dx = model.backward(loss.backward())
    one = np.array(1.0)
    errors = {"input": relative_error(dx, numerical_gradient(value, x, one))}
    params = list(model.named_parameters())
    assert len(params) == 3 + 2 * 6 + 3 + 2  # stem, two blocks (one projected), head
    analytic = {name: p.grad.copy() for name, p in params}
    for name, p in params:
        errors[name] = relative_error(analytic[name], numerical_gradient(value, p.data, one))
    assert_all_small(errors)
    conv_path.check(model)


def test_resnet_directional_derivative(rng, conv_path):
    """Chainer-style check on a deeper net: two forward passes along a random direction."""
    model = f64(sn.ResNet(1, 7, widths=(4, 6, 8), depths=(2, 1, 1), stem_kernel=5,
                          stem_stride=2, seed=2))
    loss = sn.SoftmaxCrossEntropy(0.1)
    x = rng.standard_normal((4, 1, 16, 13))
    t = np.array([0, 3, 6, 1])
    assert network_directional_error(model, loss, x, t) < TOL
    conv_path.check(model)


def test_first_layer_may_skip_its_input_gradient(rng, conv_path):
    """needs_input_grad=False returns None from backward and leaves dW unchanged."""
    full = f64(sn.ResNet(1, 4, (3,), (1,), stem_kernel=3, seed=5))
    lean = f64(sn.ResNet(1, 4, (3,), (1,), stem_kernel=3, seed=5, input_grad=False))
    x = rng.standard_normal((2, 1, 9, 8))
    dy = rng.standard_normal((2, 4))
    full.forward(x), lean.forward(x)
    assert full.backward(dy).shape == x.shape
    assert lean.backward(dy) is None
    for (name, a), (_, b) in zip(full.named_parameters(), lean.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
    conv_path.check(lean)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_gradients_in_eval_mode(rng, stride, conv_path):
    layer = f64(sn.Conv2d(3, 4, 3, stride, 1, rng=rng)).eval()
    assert_all_small(check_layer(layer, rng.standard_normal((2, 3, 7, 6))))
    assert layer.algorithm == conv_path.expected(layer.geometry((2, 3, 7, 6)))


def test_maxpool_gradient_in_eval_mode(rng):
    x = rng.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6).astype(np.float64) * 0.1
    assert_all_small(check_layer(sn.MaxPool2d(3, 2, 1).eval(), x, h=1e-4))


def test_pool_before_relu_is_relu_before_pool(rng):
    """The stem pools before its ReLU (see ResNet): same output and same input gradient, bit
    for bit, including windows with ties, all-negative windows and exact zeros."""
    x = rng.integers(-3, 4, size=(2, 3, 9, 8)).astype(np.float32)  # many ties and zeros
    x[0, 0, :4, :4] = -1.0                                         # a wholly negative corner
    dy = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    relu_pool = sn.Sequential(sn.ReLU(), sn.MaxPool2d(3, 2, 1))
    pool_relu = sn.Sequential(sn.MaxPool2d(3, 2, 1), sn.ReLU())
    y1, y2 = relu_pool.forward(x), pool_relu.forward(x)
    assert np.array_equal(y1, y2)
    dx1, dx2 = relu_pool.backward(dy), pool_relu.backward(dy)
    assert np.array_equal(dx1, dx2)
    assert np.count_nonzero(dx1) > 0
    model = sn.ResNet(1, 5, widths=(4,), depths=(1,), stem_kernel=3)
    assert list(model.stem.named_children())[-2:] == [("pool", model.stem.pool),
                                                      ("relu", model.stem.relu)]


def stem_pair(rng, dtype):
    """A fused Stem and a plain Sequential of the same layers (copies, same numbers)."""
    import copy
    model = sn.ResNet(1, 5, widths=(4,), depths=(1,), stem_kernel=3, seed=1).astype(dtype)
    stem = model.stem
    plain = sn.Sequential({name: copy.deepcopy(layer) for name, layer in stem.named_children()})
    return stem, plain


def assert_stem_matches_plain(rng, stem, plain, in_own_order, negative_gamma):
    """The Stem's output equals the plain Sequential's bit for bit and every parameter gradient
    to rounding (none of them zero); in_own_order() says, after the forward, whether the stem
    ran the layers in their own order, which it must do exactly when ``negative_gamma``."""
    x = rng.standard_normal((3, 1, 9, 11)).astype(np.float32)
    y, y_plain = stem.forward(x), plain.forward(x)
    assert in_own_order() == negative_gamma                     # which order ran
    assert np.array_equal(y, y_plain)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    stem.zero_grad()
    plain.zero_grad()
    stem.backward(dy)
    plain.backward(dy)
    for (name, p), (_, q) in zip(stem.named_parameters(), plain.named_parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("negative_gamma", [False, True])
def test_stem_applies_batchnorm_after_the_pool_with_the_same_numbers(rng, negative_gamma):
    """Training: y bit for bit as conv -> BN -> pool -> ReLU in their own order (the affine map
    is increasing, rounding monotone), dx, dW and the BN gradients to rounding; a channel with
    gamma < 0 makes the stem run the layers in their own order."""
    stem, plain = stem_pair(rng, np.float32)
    if negative_gamma:
        for s in (stem, plain):
            s.bn.weight.data[1] = -0.5
    assert_stem_matches_plain(rng, stem, plain, lambda: not stem._cache.pool_first,
                              negative_gamma)
    np.testing.assert_array_equal(stem.bn.running_var, plain.bn.running_var)


@pytest.mark.parametrize("negative_gamma", [False, True])
def test_stem_gradients_in_training(rng, negative_gamma):
    """Both orders the training stem takes: pool first, and (a channel with gamma < 0) the
    layers' own order, each with BatchNorm's gradient computed by the stem."""
    stem, _ = stem_pair(rng, np.float64)
    stem.conv.needs_input_grad = True
    if negative_gamma:
        stem.bn.weight.data[1] = -0.5
    x = rng.standard_normal((2, 1, 8, 7))
    stem.forward(x)
    assert stem._cache.pool_first != negative_gamma  # the pool-first order, unless gamma < 0
    assert_all_small(check_layer(stem, x))


def eval_stem_pair(rng, dtype, negative_gamma):
    """stem_pair in eval mode, with running statistics and a BatchNorm that are not the
    identity (and one channel's gamma < 0 if ``negative_gamma``)."""
    stem, plain = stem_pair(rng, dtype)
    gamma = rng.uniform(0.5, 2.0, 4).astype(dtype)
    if negative_gamma:
        gamma[2] = -0.7
    stats = [rng.standard_normal(4).astype(dtype), rng.uniform(0.5, 2.0, 4).astype(dtype),
             rng.standard_normal(4).astype(dtype)]
    for s in (stem, plain):
        s.bn.weight.data[...] = gamma
        s.bn.running_mean[...], s.bn.running_var[...], s.bn.bias.data[...] = stats
        s.eval()
    return stem, plain


@pytest.mark.parametrize("negative_gamma", [False, True])
def test_stem_in_eval_mode_pools_before_its_batchnorm_with_the_same_numbers(rng,
                                                                           negative_gamma):
    """Eval mode: conv -> pool -> BN -> ReLU when every running scale is positive, y bit for
    bit as the layers in their own order, and the gradients (eval-mode backward) to rounding;
    a channel with gamma < 0 makes the stem run the layers in their own order."""
    stem, plain = eval_stem_pair(rng, np.float32, negative_gamma)
    assert_stem_matches_plain(rng, stem, plain, lambda: not stem._cache.pool_first,
                              negative_gamma)


def test_stem_gradients_in_eval_mode(rng):
    stem, _ = eval_stem_pair(rng, np.float64, negative_gamma=False)
    stem.conv.needs_input_grad = True
    x = rng.standard_normal((2, 1, 8, 7))
    stem.forward(x)
    assert stem._cache.pool_first               # the pool-first order
    assert_all_small(check_layer(stem, x))
