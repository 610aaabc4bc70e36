"""The exponential moving average of the weights against the recursion computed by hand."""
import numpy as np
import pytest

import scratchnet as sn
from scratchnet.averaging import ExponentialMovingAverage


def small_model():
    return sn.Sequential(sn.Conv2d(1, 2, 3, padding=1, rng=np.random.default_rng(0)),
                         sn.BatchNorm2d(2), sn.ReLU(), sn.GlobalAvgPool2d(),
                         sn.Linear(2, 3, rng=np.random.default_rng(1)))


def perturb(model, rng):
    """Stand-in for an optimiser step: every parameter and buffer moves, in place."""
    for value in model.state_dict().values():
        value += rng.standard_normal(value.shape).astype(value.dtype)


def test_average_follows_the_recursion_with_its_warm_up():
    model = small_model()
    ema = ExponentialMovingAverage(model, decay=0.9)
    expected = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    decays = []
    for t in range(1, 101):
        perturb(model, rng)
        ema.update()
        d = min(0.9, (1 + t) / (10 + t))
        decays.append(d)
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v
    # d_t = (1+t)/(10+t) grows from 2/11 and is capped at the decay from t = 80 on
    assert decays[0] == pytest.approx(2 / 11) and decays[78] == pytest.approx(80 / 89)
    assert decays[79:] == [0.9] * 21
    for k, v in ema.model.state_dict().items():
        np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-5, err_msg=k)
    # the running statistics are averaged too, and the source model is left untouched
    assert "1.running_var" in ema.model.state_dict()
    assert not np.allclose(ema.model.state_dict()["1.running_mean"],
                           model.state_dict()["1.running_mean"])


def test_decay_is_capped_after_the_warm_up():
    ema = ExponentialMovingAverage(small_model(), decay=0.99)
    ema.updates = 10_000
    assert ema.current_decay() == 0.99


def test_averaged_model_is_a_separate_eval_mode_copy():
    model = small_model()
    ema = ExponentialMovingAverage(model, decay=0.5)
    assert not ema.model.training and model.training
    x = np.random.default_rng(1).standard_normal((4, 1, 5, 5)).astype(np.float32)
    before = ema.model.forward(x).copy()
    perturb(model, np.random.default_rng(2))
    np.testing.assert_array_equal(ema.model.forward(x), before)  # no update, no change
    ema.update()
    assert not np.array_equal(ema.model.forward(x), before)


def test_state_round_trip_and_errors():
    model = small_model()
    ema = ExponentialMovingAverage(model, decay=0.9)
    perturb(model, np.random.default_rng(3))
    ema.update()
    ema.update()
    state = ema.state_dict()
    other = ExponentialMovingAverage(small_model(), decay=0.9)
    other.load_state_dict(state)
    assert other.updates == 2
    for k, v in ema.model.state_dict().items():
        np.testing.assert_array_equal(other.model.state_dict()[k], v)
    with pytest.raises(ValueError, match="decay 0.9"):
        ExponentialMovingAverage(small_model(), decay=0.5).load_state_dict(state)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        ExponentialMovingAverage(small_model(), decay=1.0)
