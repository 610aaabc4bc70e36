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


def test_a_weighting_matches_the_standards_table():
    # IEC 61672-1's A-weighting, to its 0.1 dB, at the exact frequencies 1 kHz * 10^(k/10)
    # that its nominal ones (20, 31.5, 100, 1000, 4000, 10000 Hz) stand for.
    table = {-17: -50.5, -15: -39.4, -10: -19.1, 0: 0.0, 6: 1.0, 10: -2.5}
    frequencies = 1000 * 10 ** (np.array(list(table)) / 10)
    np.testing.assert_allclose(augment.a_weighting(frequencies), list(table.values()),
                               atol=0.05)
    assert augment.a_weighting([0.0])[0] == -np.inf


def test_clip_gain_is_the_loudest_frames_a_weighted_power(rng):
    bands = np.array([100.0, 500.0, 1000.0, 3000.0])
    db = rng.uniform(-90, -20, size=(5, 4, 11)).astype(np.float32)
    gains = augment.clip_gains(db, bands)
    weights = augment.a_weighting(bands)
    for clip, gain in zip(db.astype(np.float64), gains):  # frame by frame, as written
        frames = [10 * np.log10(sum(10 ** ((clip[f, t] + weights[f]) / 10) for f in range(4)))
                  for t in range(11)]
        np.testing.assert_allclose(gain, max(frames), rtol=1e-12)
    # 6 dB louder everywhere is 6 dB more gain; a lone 1 kHz band is heard at its own level.
    np.testing.assert_allclose(augment.clip_gains(db + 6, bands), gains + 6, rtol=1e-6)
    lone = np.full((1, 4, 3), -300.0)
    lone[0, 2, 1] = -12.0
    np.testing.assert_allclose(augment.clip_gains(lone, bands), [-12.0], atol=1e-3)


def test_between_class_mixing_makes_the_ratio_audible_not_the_amplitude(rng):
    """Clips of flat spectra at levels L_i: the mixture's power P = w P_i + (1 - w) P_j gives
    w, hence p = sqrt(w) / (sqrt(w) + sqrt(1 - w)), and the heard ratio
    p 10^(L_i/20) : (1 - p) 10^(L_j/20) must be the target ratio r : (1 - r)."""
    n, mels, frames = 8, 3, 5
    levels = np.array([-60.0, -52, -45, -37, -30, -20, -10, -5])
    mean = np.array([-50.0, -40, -30])[:, None]
    std = np.array([10.0, 15, 20])[:, None]
    db = np.broadcast_to(levels[:, None, None, None], (n, 1, mels, frames))
    x = ((db - mean) / std).astype(np.float32)
    scale = np.log(10) / 10 * std
    mixed, targets = augment.between_class(x, np.arange(n), n, np.random.default_rng(4),
                                           scale, gains=levels)
    assert mixed.dtype == np.float32 and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    power = 10 ** ((mixed.astype(np.float64) * std + mean) / 10)
    # Each mixture is flat again (both parts are): one power per clip.
    np.testing.assert_allclose(power, power[:, :, :1, :1] * np.ones_like(power), rtol=1e-4)
    pairs = 0
    for i in range(n):
        r = targets[i, i]
        if r == 1:  # mixed with itself
            np.testing.assert_allclose(power[i], 10 ** (levels[i] / 10), rtol=1e-4)
            continue
        j = int(np.flatnonzero((targets[i] > 0) & (np.arange(n) != i))[0])
        w = (power[i, 0, 0, 0] - 10 ** (levels[j] / 10)) / (10 ** (levels[i] / 10)
                                                              - 10 ** (levels[j] / 10))
        p = np.sqrt(w) / (np.sqrt(w) + np.sqrt(1 - w))
        heard = p * 10 ** (levels[i] / 20) / ((1 - p) * 10 ** (levels[j] / 20))
        np.testing.assert_allclose(heard, r / (1 - r), rtol=2e-3)
        pairs += 1
    assert pairs >= 5
    assert len(set(np.round(targets[np.arange(n), np.arange(n)], 4))) > 3  # one r per clip


def test_between_class_at_equal_gains_mixes_amplitudes_at_the_ratio(rng):
    db = rng.uniform(-70, -10, size=(6, 1, 4, 7))
    x = (db / 10).astype(np.float32)  # mean 0, std 10 dB
    mixed, targets = augment.between_class(x, np.arange(6), 6, np.random.default_rng(2),
                                           np.log(10) / 10 * 10.0, gains=np.zeros(6))
    power = 10 ** (db / 10)
    for i in range(6):
        r = targets[i, i]
        j = i if r == 1 else int(np.flatnonzero((targets[i] > 0)
                                               & (np.arange(6) != i))[0])
        w = r ** 2 / (r ** 2 + (1 - r) ** 2)  # p = r: amplitudes r and 1 - r, level kept
        expected = 10 * np.log10(w * power[i] + (1 - w) * power[j])
        np.testing.assert_allclose(mixed[i] * 10.0, expected, atol=3e-3)
    with pytest.raises(ValueError, match="one gain per clip \\(6\\), got shape \\(5,\\)"):
        augment.between_class(x, np.arange(6), 6, np.random.default_rng(2), 1.0, np.zeros(5))
