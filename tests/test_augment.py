"""Augmentation and test-time shift averaging: each claim of experiments.augment's docstrings."""
import numpy as np
import pytest

from experiments import augment
from experiments.inference import evaluate, probabilities
from experiments.models import build_model


def test_time_shift_rolls_each_clip_within_the_range(rng):
    x = rng.standard_normal((6, 1, 3, 20)).astype(np.float32)
    out = augment.time_shift(x, np.random.default_rng(0), 0.2)
    for clip, shifted in zip(x, out):
        matches = [k for k in range(-4, 5) if np.array_equal(np.roll(clip, k, axis=-1), shifted)]
        assert len(matches) == 1  # a circular shift by at most 0.2 * 20 = 4 frames


def test_freq_shift_moves_each_clip_along_the_mel_axis_and_fills_the_edge(rng):
    x = rng.standard_normal((40, 1, 12, 7)).astype(np.float32) + 5.0  # no value is 0 by chance
    out = augment.freq_shift(x, np.random.default_rng(1), 3)
    seen = set()
    for clip, shifted in zip(x[:, 0], out[:, 0]):
        matches = []
        for k in range(-3, 4):
            expected = np.zeros_like(clip)  # the fill, 0
            if k >= 0:
                expected[k:] = clip[:12 - k]
            else:
                expected[:12 + k] = clip[-k:]
            if np.array_equal(shifted, expected):
                matches.append(k)
        assert len(matches) == 1  # a non-circular shift by at most 3 bins
        seen.add(matches[0])
    assert seen == set(range(-3, 4))  # 40 clips draw every shift in the range, both signs


def test_freq_shift_of_zero_bins_is_the_input_and_draws_nothing(rng):
    x = rng.standard_normal((4, 1, 12, 7)).astype(np.float32)
    drawn = np.random.default_rng(5)
    assert augment.freq_shift(x, drawn, 0) is x
    assert drawn.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    with pytest.raises(ValueError, match="max_bins must be a whole number >= 0, got -1"):
        augment.freq_shift(x, drawn, -1)


def test_spec_augment_sets_one_band_per_axis_to_the_fill(rng):
    x = rng.standard_normal((32, 1, 16, 40)).astype(np.float32) + 5.0  # no value 0 by chance
    out = augment.spec_augment(x, np.random.default_rng(3), freq_mask=5, time_mask=9)
    widths = []
    for clip, masked in zip(x, out):
        rows = np.flatnonzero((masked[0] == 0).all(axis=1))
        cols = np.flatnonzero((masked[0] == 0).all(axis=0))
        assert len(rows) <= 5 and len(cols) <= 9
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)  # one band each
        keep = masked[0] != 0
        np.testing.assert_array_equal(masked[0][keep], clip[0][keep])
        widths.append((len(rows), len(cols)))
    # Widths are drawn from 0..F: over 32 clips they average about F/2 and reach F.
    rows, cols = np.array(widths).T
    assert 0.3 * 5 <= rows.mean() <= 0.7 * 5 and 0.3 * 9 <= cols.mean() <= 0.7 * 9
    assert rows.max() == 5 and cols.max() == 9


def _bands(flags):
    """The runs of consecutive True values in a 1-D boolean array, as (start, stop) pairs."""
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def test_spec_augment_masks_draws_that_many_bands_per_axis(rng):
    x = rng.standard_normal((16, 1, 40, 60)).astype(np.float32) + 5.0
    one = augment.spec_augment(x, np.random.default_rng(7), freq_mask=6, time_mask=8)
    two = augment.spec_augment(x, np.random.default_rng(7), freq_mask=6, time_mask=8, masks=2)
    saw_two_bands = False
    for clip, a, b in zip(x, one, two):
        rows_one, rows_two = (a[0] == 0).all(axis=1), (b[0] == 0).all(axis=1)
        cols_two = (b[0] == 0).all(axis=0)
        # The first frequency band is drawn from the same numbers as masks=1's only one.
        assert np.all(rows_two[rows_one])
        for flags, width in ((rows_two, 6), (cols_two, 8)):
            bands = _bands(flags)
            assert len(bands) <= 2  # two bands, which may overlap or touch
            assert sum(stop - start for start, stop in bands) <= 2 * width
        saw_two_bands |= len(_bands(rows_two)) == 2
        keep = b[0] != 0
        np.testing.assert_array_equal(b[0][keep], clip[0][keep])
    assert saw_two_bands  # 16 clips: two separate frequency bands in at least one
    np.testing.assert_array_equal(augment.spec_augment(x, np.random.default_rng(7), 6, 8,
                                                       masks=0), x)
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="masks must be a whole number >= 0"):
            augment.spec_augment(x, np.random.default_rng(7), 6, 8, masks=bad)


def test_mixup_mixes_inputs_and_targets_with_one_lambda(rng):
    x = rng.standard_normal((5, 1, 2, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4])
    mixed, targets = augment.mixup(x, labels, 7, np.random.default_rng(1), 0.2)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    lam = targets[np.arange(5), labels]  # each row's own label keeps weight lam (or 1)
    partner = [int(np.flatnonzero((targets[i] > 0) & (np.arange(7) != labels[i]))[0])
               if lam[i] < 1 else i for i in range(5)]
    for i in range(5):
        np.testing.assert_allclose(mixed[i], lam[i] * x[i] + (1 - lam[i]) * x[partner[i]],
                                   rtol=1e-5, atol=1e-6)
    assert np.allclose(lam[lam < 1], lam[lam < 1][0])  # one lambda for the batch


def test_test_time_shifts_span_the_training_range_evenly():
    assert augment.test_time_shifts(251, 0.2, 1) == [0]
    assert augment.test_time_shifts(251, 0.2, 5) == [-50, -25, 0, 25, 50]
    assert augment.test_time_shifts(100, 0.2, 3) == [-20, 0, 20]
    assert augment.test_time_shifts(251, 0.0, 5) == [0]  # no training shift, nothing to average
    with pytest.raises(ValueError, match="at least 1"):
        augment.test_time_shifts(251, 0.2, 0)


def test_evaluate_averages_the_probabilities_of_the_shifted_clips(rng):
    model = build_model(dict(widths=[4, 8], depths=[1, 1], stem_kernel=3, stem_stride=2,
                             stem_pool=True, dropout=0.0), num_classes=6, seed=0)
    model.train()  # evaluate must score in eval mode and give the mode back
    x = rng.standard_normal((7, 1, 16, 30)).astype(np.float32)
    pred, probs = evaluate(model, x, np, shifts=[-3, 0, 5], batch=4)
    assert model.training
    model.eval()
    expected = np.mean([probabilities(model.forward(np.roll(x, k, axis=-1)))
                        for k in (-3, 0, 5)], axis=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(pred, expected.argmax(axis=1))
    single = probabilities(model.forward(x))
    assert not np.allclose(probs, single)  # the shifts do change what is averaged


def test_per_mel_standardisation_gives_each_bin_zero_mean_and_unit_variance(rng):
    from experiments import esc50
    # Bins with very different levels and spreads, as low and high mel bands have.
    feats = (rng.standard_normal((20, 6, 30)) * np.arange(1, 7)[:, None]
             - 10 * np.arange(6)[:, None]).astype(np.float32)
    norm = esc50.feature_statistics(feats, per_mel=True)
    assert len(norm["mean"]) == len(norm["std"]) == 6
    np.testing.assert_allclose(norm["mean"], feats.mean(axis=(0, 2), dtype=np.float64),
                               rtol=1e-6)
    np.testing.assert_allclose(norm["std"], feats.std(axis=(0, 2), dtype=np.float64),
                               rtol=1e-5)
    x = esc50.standardise(feats, norm)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(0, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2)), 1.0, rtol=1e-5)
    # One scalar pair: the whole array standardised at once, per-bin levels left in.
    scalar = esc50.feature_statistics(feats)
    assert isinstance(scalar["mean"], float) and isinstance(scalar["std"], float)
    y = esc50.standardise(feats, scalar)
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1.0) < 1e-5
    assert np.ptp(y.mean(axis=(0, 2))) > 1.0
    with pytest.raises(ValueError, match="normalization has 6 mel bins, the features 5"):
        esc50.standardise(feats[:, :5], norm)


def test_power_mixup_adds_the_clips_powers(rng):
    """Standardised dB in, standardised dB out: the mixture's power is lam P1 + (1-lam) P2."""
    mean = np.linspace(-50, -20, 4)[:, None]   # per mel bin, as per_mel_norm stores them
    std = np.linspace(12, 20, 4)[:, None]
    db = rng.uniform(-80, 0, size=(6, 1, 4, 9))
    x = ((db - mean) / std).astype(np.float32)
    scale = np.log(10) / 10 * std
    mixed, targets = augment.mixup(x, np.arange(6), 6, np.random.default_rng(5), 0.4,
                                   power_scale=scale)
    lam = targets[0, 0]
    perm = [int(np.flatnonzero((targets[i] > 0) & (np.arange(6) != i))[0])
            if targets[i, i] < 1 else i for i in range(6)]
    power = 10 ** (db / 10)
    expected_db = 10 * np.log10(lam * power + (1 - lam) * power[perm])
    assert 0 < lam < 1 and mixed.dtype == np.float32
    np.testing.assert_allclose(mixed * std + mean, expected_db, atol=2e-3)
    # Unlike the dB average, the louder clip dominates: mixed >= max(level) + 10 log10(weight).
    assert np.all(mixed * std + mean >= 10 * np.log10(lam) + db - 2e-3)
