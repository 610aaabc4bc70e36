"""Every convolution algorithm of scratchnet.kernels.conv_policy, forced through the policy, against
the plain reference (scratchnet.kernels.im2col.conv2d_reference): forward, dL/dx, dL/dW, dL/db, in
training and in eval mode, on NumPy and (through the fixture ``xp``) on the CuPy stand-in."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.kernels import conv_policy
from scratchnet.runtime import parallel
from scratchnet.runtime.backend import to_numpy
from scratchnet.kernels.im2col import conv2d_reference, conv2d_reference_backward

# (algorithm, C_in, H, W, k, stride, padding): each where it runs, odd sizes, a 1x1 stride 2.
CASES = [
    ("im2col", 3, 7, 6, 3, 2, 1), ("im2col", 3, 5, 5, 1, 2, 0), ("im2col", 2, 6, 7, 3, 1, 0),
    ("im2col", 1, 9, 8, 5, 2, 2),
    ("bias_column", 1, 9, 8, 3, 2, 1), ("bias_column", 1, 16, 13, 7, 2, 3),
    ("shifted", 3, 9, 11, 3, 1, 1), ("shifted", 2, 6, 7, 5, 1, 2),
    ("short", 3, 2, 7, 3, 1, 1), ("short", 3, 1, 5, 3, 1, 1), ("short", 2, 3, 6, 5, 1, 2),
    ("reference", 3, 7, 6, 3, 2, 1), ("reference", 2, 6, 7, 3, 1, 1),
]


def case_id(case):
    return "{}-c{}-{}x{}-k{}s{}p{}".format(*case)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_every_algorithm_matches_the_reference(xp, case, bias, training):
    algorithm, c_in, h, w, k, stride, padding = case
    if algorithm == "bias_column" and not bias:
        pytest.skip("the bias column needs a bias")
    rng = np.random.default_rng(0)
    conv = sn.Conv2d(c_in, 4, k, stride, padding, bias=bias, rng=rng).astype(np.float64)
    conv.bias is None or conv.bias.data.__setitem__(Ellipsis, rng.standard_normal(4))
    conv.train(training)
    x = rng.standard_normal((2, c_in, h, w))
    y_ref = conv2d_reference(x, conv.weight.data, None if conv.bias is None else
                             conv.bias.data, stride, padding)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dw_ref, db_ref = conv2d_reference_backward(dy, x, conv.weight.data, stride, padding)
    conv.to("gpu" if xp is not np else "cpu")
    with conv_policy.using(conv_policy.prefer(algorithm)):
        y = conv.forward(xp.asarray(x))
        dx = conv.backward(xp.asarray(dy))
    assert conv.algorithm == algorithm
    np.testing.assert_allclose(to_numpy(y), y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(dx), dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(conv.weight.grad), dw_ref, rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(to_numpy(conv.bias.grad), db_ref, rtol=1e-10, atol=1e-12)


def test_the_reference_is_the_direct_sum(rng):
    """y[n, o, i, j] = b[o] + sum_{c, a, b'} W[o, c, a, b'] xpad[n, c, s i + a, s j + b']."""
    x, w, b = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2)), \
        rng.standard_normal(4)
    s, p = 2, 1
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = conv2d_reference(x, w, b, s, p)
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            window = xpad[:, :, s * i:s * i + 3, s * j:s * j + 2]
            np.testing.assert_allclose(y[:, :, i, j],
                                       np.einsum("ncab,ocab->no", window, w) + b, rtol=1e-12)


def test_every_algorithm_is_one_module_with_one_signature():
    """The dispatcher is a table: each name the policy can give has a module with
    forward(x, w, b, stride, padding) -> (y, saved) and backward(dy, saved,
    needs_input_grad) -> (dx, dw, db)."""
    import inspect

    from scratchnet.kernels.convolution import ALGORITHMS
    assert set(ALGORITHMS) == set(conv_policy.ALGORITHMS)
    for name, module in ALGORITHMS.items():
        assert list(inspect.signature(module.forward).parameters) == \
            ["x", "w", "b", "stride", "padding"], name
        assert list(inspect.signature(module.backward).parameters) == \
            ["dy", "saved", "needs_input_grad"], name


@pytest.mark.parametrize("algorithm, stride", [("shifted", 1), ("im2col", 2)])
def test_weight_gradients_summed_in_parts_match_the_reference(algorithm, stride):
    """Batches large enough that the weight gradient's sum runs in parts on the runtime's
    threads (scratchnet.runtime.blas.summed_matmul): the reference's gradients, float64."""
    from scratchnet.kernels.convolution import ALGORITHMS
    from scratchnet.runtime import blas
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 64 * stride, 130 * stride))
    w = rng.standard_normal((6, 4, 3, 3))
    module = ALGORITHMS[algorithm]
    y, saved = module.forward(x, w, None, stride, 1)
    assert y.shape[0] * y.shape[2] * y.shape[3] >= blas.LONG_SUM   # the sum is cut
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = module.backward(dy, saved, needs_input_grad=True)
    ref_dx, ref_dw, _ = conv2d_reference_backward(dy, x, w, stride, 1)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("algorithm, c_in, c_out, stride", [("shifted", 192, 192, 1),
                                                            ("im2col", 128, 256, 2)])
def test_large_weight_gradients_come_in_the_weights_memory_order(algorithm, c_in, c_out,
                                                                 stride):
    """From im2col.LARGE_GRADIENT numbers up the kernels form dL/dW as dY^T X, whose rows
    run along C_in as Conv2d's weight memory does, instead of its transpose; both forms hold
    to the reference in float64, and the small form keeps the transposed product."""
    from scratchnet.kernels.convolution import ALGORITHMS
    from scratchnet.kernels.im2col import LARGE_GRADIENT, gradient_transposed
    assert c_in * c_out * 9 >= LARGE_GRADIENT
    assert gradient_transposed(9 * c_in, c_out // 4) and not gradient_transposed(9 * c_in, c_out)
    rng = np.random.default_rng(0)
    for c_o in (c_out // 4, c_out):       # below the threshold, then above it
        x = rng.standard_normal((2, c_in, 5, 6))
        w = sn.layers.conv.channels_last_weight(rng.standard_normal((c_o, c_in, 3, 3)))
        y, saved = ALGORITHMS[algorithm].forward(x, w, None, stride, 1)
        dy = rng.standard_normal(y.shape)
        _, dw, _ = ALGORITHMS[algorithm].backward(dy, saved, needs_input_grad=False)
        _, ref_dw, _ = conv2d_reference_backward(dy, x, w, stride, 1)
        np.testing.assert_allclose(dw, ref_dw, rtol=1e-10, atol=1e-9)
        c_in_unit = dw.strides[1] == dw.itemsize
        assert c_in_unit == (c_o == c_out), (c_o, dw.strides)


@pytest.mark.parametrize("c_in, h, w, kernel, stride, padding", [
    (3, 7, 6, 3, 2, 1),            # dL/dx scattered back a block at a time
    (4, 5, 5, (1, 3), 2, 0),       # strided, not square
    (3, 7, 8, 1, 2, 0),            # a 1x1 shortcut, stride 2: scattered back
    (2, 6, 7, 3, 1, 0),            # stride 1: dL/dx the flipped kernel's, whole
    (3, 6, 7, (3, 1), 1, 1),       # stride 1, not square: scattered back
    (1, 9, 11, 5, 2, 2),           # one channel, its tap planes: scattered back
    (1, 8, 7, 3, 1, 1)])           # one channel, stride 1: the flipped kernel's dL/dx
@pytest.mark.parametrize("bias", [True, False])
def test_the_patch_gemm_in_blocks_of_samples_matches_the_reference(monkeypatch, c_in, h, w,
                                                                     kernel, stride, padding,
                                                                     bias):
    """Blocks of one or two samples (patch_gemm.sample_blocks), uneven over 5 samples: the
    forward, dL/dx, dL/dW and dL/db of the reference, in float64, with no patch matrix saved;
    a one-channel input's patches gathered as their tap planes (im2col.padded_tap_planes)."""
    from scratchnet.kernels import patch_gemm
    monkeypatch.setattr(patch_gemm, "BLOCK_BYTES", 1)
    monkeypatch.setattr(patch_gemm, "WEIGHT_SHARE", 0)
    rng = np.random.default_rng(0)
    conv = sn.Conv2d(c_in, 4, kernel, stride, padding, bias=bias, rng=rng).astype(np.float64)
    x = rng.standard_normal((5, c_in, h, w))
    y_ref = conv2d_reference(x, conv.weight.data, None if conv.bias is None else
                             conv.bias.data, stride, padding)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dw_ref, db_ref = conv2d_reference_backward(dy, x, conv.weight.data, stride, padding)
    with conv_policy.using(conv_policy.prefer("im2col")):
        y = conv.forward(x)
        saved = conv._cache.saved
        dx = conv.backward(dy)
    assert saved.cols is None and len(saved.blocks) == 6          # five blocks of one sample
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.weight.grad, dw_ref, rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(conv.bias.grad, db_ref, rtol=1e-10, atol=1e-12)


def test_sample_blocks_follow_the_shapes_alone():
    from scratchnet.kernels import patch_gemm
    x = np.zeros((64, 16, 40, 100), np.float32)
    for c in (16, 1):            # a sample's patches and output rows, 3x3 stride 2, 32 out
        per_sample = 20 * 50 * (9 * c + 32) * 4
        blocks = patch_gemm.sample_blocks(x[:, :c], 3, 3, 2, 1, 32)
        sizes = np.diff(blocks)
        assert blocks[0] == 0 and blocks[-1] == 64
        assert len(sizes) > 1 and len(sizes) % parallel.BLOCK_MULTIPLE == 0
        assert sizes.max() - sizes.min() <= 1
        assert patch_gemm.BLOCK_BYTES / 2 <= sizes.max() * per_sample <= 2 * patch_gemm.BLOCK_BYTES
    shortcut = patch_gemm.sample_blocks(x, 1, 1, 2, 0, 32)                   # 1x1/2: blocks
    assert len(shortcut) - 1 == 8 and np.ptp(np.diff(shortcut)) == 0    # 20*50*48*4 B a sample
    assert patch_gemm.sample_blocks(x[:2], 3, 3, 2, 1, 32) == (0, 2)         # two blocks: whole
    wide = np.zeros((64, 256, 8, 27), np.float32)        # a 2304 x 512 weight matrix, 4.7 MB
    assert patch_gemm.sample_blocks(wide, 3, 3, 2, 1, 512) == (0, 64)


def test_the_blocks_benchmark_times_both_settings_and_gives_the_blocks_back(capsys):
    """benchmarks.cache_blocks: each model's training step and eval pass whole and in blocks,
    the named kernels' block sizes switched (and given back), the others left alone."""
    from benchmarks import cache_blocks
    from scratchnet.kernels import patch_gemm, shifted
    kept = shifted.BLOCK_ROWS, patch_gemm.BLOCK_BYTES
    settings, apply = cache_blocks.block_settings(["patch_gemm"])
    apply(settings["whole"])
    assert patch_gemm.BLOCK_BYTES == cache_blocks.WHOLE and shifted.BLOCK_ROWS == kept[0]
    apply(settings["blocks"])
    assert (shifted.BLOCK_ROWS, patch_gemm.BLOCK_BYTES) == kept
    results = cache_blocks.main(["--models", "shape:s3-w16-40x100-b64", "--batch", "2",
                                 "--rounds", "2"])
    assert (shifted.BLOCK_ROWS, patch_gemm.BLOCK_BYTES) == kept
    runs = results["shape:s3-w16-40x100-b64"]
    assert set(runs) == {"training", "eval"}
    for run in runs.values():
        assert len(run["times"]["blocks"]) == len(run["times"]["whole"]) == 2
        assert run["ratio"] > 0
    assert "blocks / whole" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cache_blocks.main(["--rounds", "0"])


@pytest.mark.parametrize("algorithm, stride, c_in", [("shifted", 1, 16), ("im2col", 2, 16),
                                                     ("im2col", 2, 1)])
def test_convolutions_in_blocks_are_the_same_on_any_number_of_cores(monkeypatch, algorithm,
                                                                   stride, c_in):
    """The blocks follow the shapes alone and each is a one-thread product, so one thread
    gives the numbers of two bit for bit, in float32: forward, dL/dx, dL/dW."""
    from scratchnet.kernels import patch_gemm, shifted
    monkeypatch.setattr(shifted, "BLOCK_ROWS", 256)
    monkeypatch.setattr(shifted, "BLOCK_BYTES", 0)
    monkeypatch.setattr(patch_gemm, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(patch_gemm, "WEIGHT_SHARE", 0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, c_in, 20, 30)).astype(np.float32)
    runs = []
    for threads in ("2", "1"):
        monkeypatch.setenv("SCRATCHNET_THREADS", threads)
        conv = sn.Conv2d(c_in, 24, 3, stride, 1, rng=np.random.default_rng(6))
        with conv_policy.using(conv_policy.prefer(algorithm)):
            y = conv.forward(x)
            blocks = conv._cache.saved.blocks if algorithm == "im2col" else None
            dx = conv.backward(np.ones_like(y) + y)
        runs.append((y.copy(), dx.copy(), conv.weight.grad.copy()))
    assert algorithm == "shifted" or len(blocks) > 3
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)
