"""The same layers on CuPy and NumPy must agree.  Skipped without CuPy or a CUDA device."""
import numpy as np
import pytest

import dsp
import scratchnet as sn
from scratchnet.runtime.backend import get_array_module, gpu_available, to_numpy

pytestmark = pytest.mark.skipif(not gpu_available(), reason="CuPy or a CUDA device is missing")


def run(layer, x, dy):
    layer.zero_grad()
    y = layer.forward(x)
    dx = layer.backward(dy)
    return to_numpy(y), to_numpy(dx), {k: to_numpy(p.grad) for k, p in layer.named_parameters()}


@pytest.mark.parametrize("make,shape", [
    (lambda r: sn.Conv2d(3, 5, 3, 2, 1, rng=r), (2, 3, 9, 8)),
    (lambda r: sn.Conv2d(3, 5, 3, 1, 1, rng=r), (2, 3, 20, 33)),   # shifted GEMMs
    (lambda r: sn.BatchNorm2d(3), (4, 3, 5, 6)),
    (lambda r: sn.MaxPool2d(3, 2, 1), (2, 3, 9, 8)),
    (lambda r: sn.GlobalAvgPool2d(), (2, 3, 4, 5)),
    (lambda r: sn.TimeMaxMeanPool(), (2, 3, 4, 5)),
    (lambda r: sn.Linear(6, 4, rng=r), (3, 6)),
    (lambda r: sn.BasicBlock(3, 6, 2, rng=r), (2, 3, 9, 8)),
    (lambda r: sn.ResNet(1, 5, (4, 8), (1, 1), stem_kernel=3, stem_stride=1, seed=0),
     (3, 1, 16, 12)),
])
def test_layer_forward_backward_match_numpy(make, shape):
    import cupy
    rng = np.random.default_rng(0)
    cpu = make(np.random.default_rng(1)).astype(np.float64)
    gpu = make(np.random.default_rng(1)).astype(np.float64).to("gpu")
    x = rng.standard_normal(shape)
    y_shape = cpu.forward(x).shape
    dy = rng.standard_normal(y_shape)
    a = run(cpu, x, dy)
    b = run(gpu, cupy.asarray(x), cupy.asarray(dy))
    np.testing.assert_allclose(b[0], a[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-10, atol=1e-10)
    for k in a[2]:
        np.testing.assert_allclose(b[2][k], a[2][k], rtol=1e-9, atol=1e-10, err_msg=k)


def test_gradients_on_gpu_pass_finite_differences():
    import cupy
    from scratchnet.gradcheck import check_layer
    layer = sn.BasicBlock(2, 3, 2, rng=np.random.default_rng(0)).astype(np.float64).to("gpu")
    errors = check_layer(layer, cupy.asarray(np.random.default_rng(1).standard_normal(
        (2, 2, 5, 5))))
    assert max(errors.values()) < 1e-6, errors


def test_loss_and_adamw_match_numpy():
    import cupy
    rng = np.random.default_rng(0)
    z, t = rng.standard_normal((4, 5)), np.array([0, 1, 4, 2])
    a, b = sn.SoftmaxCrossEntropy(0.1), sn.SoftmaxCrossEntropy(0.1)
    assert float(b.forward(cupy.asarray(z), cupy.asarray(t))) == pytest.approx(
        float(a.forward(z, t)), rel=1e-12)
    np.testing.assert_allclose(to_numpy(b.backward()), a.backward(), rtol=1e-12)
    p_cpu, p_gpu = sn.Parameter(z.copy()), sn.Parameter(cupy.asarray(z))
    p_cpu.grad[...] = 1.0
    p_gpu.grad[...] = 1.0
    for p in (p_cpu, p_gpu):
        sn.AdamW([p], lr=0.1).step()
    np.testing.assert_allclose(to_numpy(p_gpu.data), p_cpu.data, rtol=1e-12)


def test_logmel_matches_numpy():
    import cupy
    y = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32)
    logmel = dsp.LogMel()
    a = logmel(y)
    b = logmel(cupy.asarray(y))
    assert isinstance(b, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(b), a, atol=2e-3)


def test_weight_average_matches_numpy():
    def averaged(device):
        model = sn.Sequential(sn.Conv2d(1, 2, 3, rng=np.random.default_rng(0)),
                              sn.BatchNorm2d(2)).astype(np.float64).to(device)
        ema = sn.ExponentialMovingAverage(model, decay=0.9)
        rng = np.random.default_rng(1)
        for _ in range(5):
            for value in model.state_dict().values():
                value += get_array_module(value).asarray(rng.standard_normal(value.shape))
            ema.update()
        return {k: to_numpy(v) for k, v in ema.model.state_dict().items()}
    a, b = averaged("cpu"), averaged("gpu")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_folded_network_matches_numpy():
    import cupy

    def folded_logits(device):
        model = sn.ResNet(1, 5, (4, 8), (1, 1), stem_kernel=3, stem_stride=1, dropout=0.2,
                          seed=0).astype(np.float64).to(device)
        xp = cupy if device == "gpu" else np
        rng = np.random.default_rng(2)
        model.train()
        model.forward(xp.asarray(rng.standard_normal((4, 1, 16, 12)) * 2 + 1))  # move stats
        folded = sn.fold_batchnorm(model)
        x = xp.asarray(rng.standard_normal((3, 1, 16, 12)))
        return to_numpy(folded.forward(x)), to_numpy(model.eval().forward(x))
    (a, a_bn), (b, b_bn) = folded_logits("cpu"), folded_logits("gpu")
    np.testing.assert_allclose(a, a_bn, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b, b_bn, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)
