"""Optimiser steps and schedules against updates computed by hand (PyTorch's rules)."""
import math

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.layers import Parameter


def param(values, grad):
    p = Parameter(np.array(values, dtype=np.float64))
    p.grad[...] = grad
    return p


def test_sgd_plain_step():
    p = param([1.0, -2.0], [0.5, 1.0])
    sn.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.95, -2.1])


def test_sgd_momentum_weight_decay_two_steps():
    p = param([1.0], [0.5])
    opt = sn.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()      # g = 0.5 + 0.1*1 = 0.6; b = 0.6; p = 1 - 0.06 = 0.94
    np.testing.assert_allclose(p.data, [0.94])
    opt.step()      # g = 0.5 + 0.094 = 0.594; b = 0.9*0.6 + 0.594 = 1.134; p = 0.94 - 0.1134
    np.testing.assert_allclose(p.data, [0.94 - 0.1134])


def test_sgd_nesterov_two_steps():
    p = param([1.0], [1.0])
    opt = sn.SGD([p], lr=0.1, momentum=0.5, nesterov=True)
    opt.step()      # b = 1; g = 1 + 0.5*1 = 1.5; p = 0.85
    np.testing.assert_allclose(p.data, [0.85])
    opt.step()      # b = 0.5 + 1 = 1.5; g = 1 + 0.75 = 1.75; p = 0.85 - 0.175
    np.testing.assert_allclose(p.data, [0.675])


def test_adamw_two_steps_by_hand():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    p = param([2.0], [0.3])
    opt = sn.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    theta, m, v = 2.0, 0.0, 0.0
    for t, g in [(1, 0.3), (2, -0.7)]:
        p.grad[...] = g
        opt.step()
        theta *= 1 - lr * wd
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        assert p.data[0] == pytest.approx(theta, rel=1e-12)


def test_clip_grad_norm_scales_to_max_norm():
    a, b = param([0.0, 0.0], [3.0, 0.0]), param([0.0], [4.0])
    total = sn.clip_grad_norm([a, b], max_norm=1.0)
    assert float(total) == pytest.approx(5.0)
    np.testing.assert_allclose(np.concatenate([a.grad, b.grad]), [0.6, 0, 0.8], rtol=1e-5)
    c = param([0.0], [0.5])
    sn.clip_grad_norm([c], max_norm=1.0)
    assert c.grad[0] == 0.5  # below the bound: untouched


def test_one_cycle_endpoints_and_peak():
    opt = sn.SGD([param([0.0], [0.0])], lr=1.0)
    sched = sn.OneCycleLR(opt, max_lr=2e-3, total_steps=100, pct_start=0.1, div_factor=4,
                          final_div_factor=1e4)
    lrs = [opt.lr]
    for _ in range(99):
        sched.step()
        lrs.append(opt.lr)
    assert lrs[0] == pytest.approx(5e-4)
    assert max(lrs) == pytest.approx(2e-3)
    assert int(np.argmax(lrs)) == 9                     # pct_start * total - 1
    assert lrs[-1] == pytest.approx(5e-4 / 1e4)
    assert all(x <= y for x, y in zip(lrs[:10], lrs[1:10]))
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:]))


def test_cosine_warmup_schedule():
    opt = sn.SGD([param([0.0], [0.0])], lr=1.0)
    sched = sn.CosineWarmupLR(opt, base_lr=1.0, total_steps=10, warmup_steps=2)
    lrs = [opt.lr]
    for _ in range(10):
        sched.step()
        lrs.append(opt.lr)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[6] == pytest.approx(0.5)                 # half-way down the cosine
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)


def half_cosine(start, end, frac):
    """A half cosine from ``start`` (frac = 0) to ``end`` (frac = 1)."""
    return start + (end - start) * (1 - math.cos(math.pi * frac)) / 2


def test_one_cycle_follows_half_cosines_at_interior_steps():
    """PyTorch's OneCycleLR with cosine annealing, in closed form: up from max_lr/div over
    steps 0..peak = pct*total - 1, then down to max_lr/(div*final_div) at step total - 1.
    The quarter points tell a cosine from a straight line."""
    opt = sn.SGD([param([0.0], [0.0])], lr=1.0)
    total, peak = 101, 19.2                                    # pct_start 0.2: peak 20.2 - 1
    sched = sn.OneCycleLR(opt, max_lr=2e-3, total_steps=total, pct_start=0.2, div_factor=8,
                          final_div_factor=100)
    lrs = [opt.lr]
    for _ in range(total - 1):
        sched.step()
        lrs.append(opt.lr)
    low, high, end = 2e-3 / 8, 2e-3, 2e-3 / 800
    for step in (3, 5, 10, 14, 19, 20, 30, 45, 60, 80, 95, 100):
        if step <= peak:
            expected = half_cosine(low, high, step / peak)
        else:
            expected = half_cosine(high, end, (step - peak) / (total - 1 - peak))
        assert lrs[step] == pytest.approx(expected, rel=1e-12), step


def test_cosine_warmup_follows_a_half_cosine_after_a_linear_warm_up():
    opt = sn.SGD([param([0.0], [0.0])], lr=1.0)
    total, warmup, base, low = 40, 8, 3e-3, 1e-4
    sched = sn.CosineWarmupLR(opt, base_lr=base, total_steps=total, warmup_steps=warmup,
                              min_lr=low)
    lrs = [opt.lr]
    for _ in range(total):
        sched.step()
        lrs.append(opt.lr)
    for step in range(warmup):
        assert lrs[step] == pytest.approx(base * (step + 1) / warmup, rel=1e-12)
    for step in (9, 12, 16, 24, 31, 38, 40):
        expected = half_cosine(base, low, (step - warmup) / (total - warmup))
        assert lrs[step] == pytest.approx(expected, rel=1e-12), step


def test_adamw_in_blocks_gives_the_numbers_of_whole_tensors(monkeypatch):
    """AdamW runs each tensor's passes a cache-sized block at a time: the same numbers as
    whole-tensor passes (one block), and a transposed parameter, in blocks of its memory, as
    its contiguous copy."""
    rng = np.random.default_rng(0)
    start = rng.standard_normal((70, 60)).astype(np.float32)
    grads = [rng.standard_normal(start.shape).astype(np.float32) for _ in range(3)]

    def run(block, transpose=False):
        monkeypatch.setattr(sn.AdamW, "BLOCK", block)
        p = sn.Parameter(start.T.copy().T if transpose else start.copy())
        assert p.data.flags.c_contiguous != transpose
        opt = sn.AdamW([p], lr=0.01, weight_decay=0.1)
        for g in grads:
            p.grad[...] = g
            opt.step()
        return p.data, opt.m[0], opt.v[0]

    whole = run(start.size)
    assert not np.array_equal(whole[0], start)
    for other in (run(37), run(1000), run(37, transpose=True)):  # uneven last blocks
        for a, b in zip(other, whole):
            np.testing.assert_array_equal(a, b)


def test_memory_order_views_read_each_layout_in_memory_order():
    from scratchnet.optim import memory_order_views
    a = np.arange(24.0).reshape(2, 3, 4)
    (flat,) = memory_order_views([a])
    assert np.shares_memory(flat, a) and list(flat) == list(range(24))
    cl = np.ascontiguousarray(a.transpose(0, 2, 1)).transpose(0, 2, 1)  # channels-last-like
    views = memory_order_views([cl, np.zeros_like(cl)])
    assert views is not None and all(v.base is not None for v in views)
    np.testing.assert_array_equal(views[0], cl.transpose(0, 2, 1).reshape(-1))
    views[1][5] = 7.0                          # a write through the view lands in the array
    assert np.zeros_like(cl).strides == cl.strides and (views[1] == 7.0).sum() == 1
    assert memory_order_views([a, cl]) is None                   # two layouts
    assert memory_order_views([a[:, :, ::2]]) is None            # not dense


def test_adamw_on_a_channels_last_conv_weight_matches_a_contiguous_one(monkeypatch):
    """A convolution's weight (channels-last memory) goes through the blocks of its memory
    and gets the numbers of the same weight held C-contiguous."""
    monkeypatch.setattr(sn.AdamW, "BLOCK", 37)
    conv = sn.Conv2d(3, 4, 3, rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(conv.weight.shape).astype(np.float32) for _ in range(3)]
    params = [conv.weight, sn.Parameter(np.ascontiguousarray(conv.weight.data))]
    for p in params:
        opt = sn.AdamW([p], lr=0.01, weight_decay=0.1)
        for g in grads:
            p.grad[...] = g
            opt.step()
    assert not params[0].data.flags.c_contiguous
    np.testing.assert_array_equal(params[0].data, params[1].data)


def _conv_and_linear_params(seed):
    rng = np.random.default_rng(seed)
    conv = sn.Conv2d(3, 4, 3, rng=rng)                   # channels-last weight memory
    lin = sn.Linear(5, 2, rng=rng)
    return [conv.weight, conv.bias, lin.weight, lin.bias]


@pytest.mark.parametrize("make", [
    lambda ps, flat: sn.AdamW(ps, lr=0.01, weight_decay=0.1, flat=flat),
    lambda ps, flat: sn.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01,
                            flat=flat)], ids=["adamw", "sgd"])
def test_flat_buffers_give_the_per_tensor_numbers_bit_for_bit(make):
    """The GPU's flat update (one pass over all parameters) on NumPy: the same numbers as
    tensor by tensor, the layouts kept, the state views live."""
    runs = []
    for flat in (False, True):
        params = _conv_and_linear_params(0)
        strides = [p.data.strides for p in params]
        opt = make(params, flat)
        assert [p.data.strides for p in params] == strides
        rng = np.random.default_rng(1)
        for _ in range(3):
            for p in params:
                p.grad[...] = rng.standard_normal(p.shape)
            opt.step()
        runs.append([p.data.copy() for p in params] + [b.copy() for b in opt.state_buffers()])
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)


def test_flat_clipping_matches_the_per_tensor_norm():
    """One sum over the flat gradient against a sum of per-tensor sums: the same norm to
    rounding (the order of the additions differs), the gradients scaled alike."""
    grads, norms = [], []
    for flat in (False, True):
        params = _conv_and_linear_params(0)
        opt = sn.AdamW(params, lr=0.01, flat=flat)
        rng = np.random.default_rng(1)
        for p in params:
            p.grad[...] = rng.standard_normal(p.shape) * 3
        norms.append(float(opt.clip_grad_norm(1.0)))
        grads.append([p.grad.copy() for p in params])
    assert norms[0] > 1.0 and norms[1] == pytest.approx(norms[0], rel=1e-12)
    for x, y in zip(*grads):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    assert np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads[1])) == \
        pytest.approx(1.0, rel=1e-5)


def test_flat_state_loads_in_place():
    params = _conv_and_linear_params(0)
    opt = sn.AdamW(params, lr=0.01, flat=True)
    state = {"lr": 0.5, "step_count": 7, "buffers": [np.full(b.shape, 2.0, np.float32)
                                                      for b in opt.state_buffers()]}
    opt.load_state_dict(state)
    assert opt.step_count == 7 and (opt._flat_m == 2.0).all() and (opt._flat_v == 2.0).all()
    params[0].zero_grad()
    assert not opt._flat[1][:params[0].data.size].any()   # zero_grad writes the flat buffer
