"""PyTorch as an outside reference for layouts, update rules and numbers.  Optional: skipped
when torch is not installed (it is never a dependency of the package)."""
import numpy as np
import pytest

import scratchnet as sn

torch = pytest.importorskip("torch")


def t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


def test_conv2d_forward_and_backward(rng):
    layer = sn.Conv2d(3, 4, 3, 2, 1, rng=rng).astype(np.float64)
    x = rng.standard_normal((2, 3, 9, 8))
    dy = rng.standard_normal(layer.forward(x).shape)
    layer.zero_grad()
    dx = layer.backward(dy)
    xt, wt, bt = t(x), t(layer.weight.data), t(layer.bias.data)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=2, padding=1)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(layer.forward(x), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_batchnorm_training_step_and_running_stats(rng):
    bn = sn.BatchNorm2d(3).astype(np.float64)
    ref = torch.nn.BatchNorm2d(3).double()
    x = rng.standard_normal((4, 3, 5, 6)) * 2 + 1
    dy = rng.standard_normal(x.shape)
    y = bn.forward(x)
    bn.zero_grad()
    dx = bn.backward(dy)
    xt = t(x)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.weight.grad, ref.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean, ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, ref.running_var.numpy(), rtol=1e-12)


def test_maxpool_forward_and_backward(rng):
    x = rng.standard_normal((2, 3, 9, 8))
    pool = sn.MaxPool2d(3, 2, 1)
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    xt = t(x)
    yt = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
    yt.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(pool.backward(dy), xt.grad.numpy(), rtol=1e-12)


def test_time_max_mean_pool_forward_and_backward(rng):
    """Against the same formula in PyTorch (PANNs' pooling, Kong et al. 2020), autograd's
    gradient; Gaussian inputs, so no frame ties for its maximum."""
    x = rng.standard_normal((2, 3, 4, 7))
    pool = sn.TimeMaxMeanPool()
    y = pool.forward(x)
    dy = rng.standard_normal(y.shape)
    xt = t(x)
    m = xt.mean(dim=2)
    yt = m.amax(dim=2) + m.mean(dim=2)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(pool.backward(dy), xt.grad.numpy(), rtol=1e-12)


def test_loss_with_smoothing_and_soft_targets(rng):
    z = rng.standard_normal((4, 6))
    labels = np.array([0, 5, 2, 2])
    soft = rng.random((4, 6))
    soft /= soft.sum(axis=1, keepdims=True)
    for targets, ref_targets in [(labels, torch.tensor(labels)), (soft, torch.tensor(soft))]:
        loss = sn.SoftmaxCrossEntropy(0.1)
        value = float(loss.forward(z, targets))
        zt = t(z)
        ref = torch.nn.functional.cross_entropy(zt, ref_targets, label_smoothing=0.1)
        ref.backward()
        assert value == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(loss.backward(), zt.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["adamw", "sgd_nesterov"])
def test_optimiser_trajectories(rng, kind):
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    p = sn.Parameter(w0.copy())
    pt = torch.nn.Parameter(torch.tensor(w0.copy()))
    if kind == "adamw":
        ours = sn.AdamW([p], lr=0.01, weight_decay=0.1)
        ref = torch.optim.AdamW([pt], lr=0.01, weight_decay=0.1)
    else:
        ours = sn.SGD([p], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
        ref = torch.optim.SGD([pt], lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    for g in grads:
        p.grad[...] = g
        pt.grad = torch.tensor(g)
        ours.step()
        ref.step()
    np.testing.assert_allclose(p.data, pt.detach().numpy(), rtol=1e-12)


def test_one_cycle_matches_torch():
    opt = sn.SGD([sn.Parameter(np.zeros(1))], lr=1.0)
    ours = sn.OneCycleLR(opt, max_lr=2e-3, total_steps=50, pct_start=0.1, div_factor=4.0)
    pt = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([pt], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=2e-3, total_steps=50,
                                              pct_start=0.1, div_factor=4.0,
                                              cycle_momentum=False)
    for _ in range(49):
        assert opt.lr == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12)
        ref_opt.step()
        ref.step()
        ours.step()
