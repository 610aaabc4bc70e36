"""The STFT / Mel front end against independent references."""
import numpy as np
import pytest
import scipy.signal

import dsp
from dsp.stft import frame


def direct_stft(y, n_fft, hop, window):
    """S[k, t] = sum_n w[n] x_t[n] exp(-2 pi i k n / N), centred frames, zero padding."""
    yp = np.pad(y, n_fft // 2)
    n_frames = 1 + (len(yp) - n_fft) // hop
    k = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    basis = np.exp(-2j * np.pi * k * n / n_fft)
    frames = np.stack([yp[t * hop:t * hop + n_fft] * window for t in range(n_frames)], axis=1)
    return basis @ frames


@pytest.mark.parametrize("window", ["hann", "hamming"])
@pytest.mark.parametrize("n", [16, 31, 1024])
def test_windows_match_scipy_periodic(window, n):
    np.testing.assert_allclose(dsp.get_window(window, n),
                               scipy.signal.get_window(window, n, fftbins=True), atol=1e-15)


def test_stft_matches_direct_dft(rng):
    y = rng.standard_normal(300)
    S = dsp.stft(y, n_fft=64, hop_length=16)
    np.testing.assert_allclose(S, direct_stft(y, 64, 16, dsp.get_window("hann", 64)),
                               atol=1e-10)


def test_stft_shape_and_default_hop(rng):
    y = rng.standard_normal(1000)
    S = dsp.stft(y, n_fft=128)
    assert S.shape == (65, 1 + 1000 // 32)


def test_stft_matches_scipy_after_scaling(rng):
    """scipy.signal.stft divides by sum(w) and pads differently; with the same zero padding,
    boundary=None and its scaling undone, the two agree."""
    y = rng.standard_normal(1200)
    n_fft, hop = 128, 32
    w = scipy.signal.get_window("hann", n_fft)
    _, _, Z = scipy.signal.stft(np.pad(y, n_fft // 2), window=w, nperseg=n_fft,
                                noverlap=n_fft - hop, boundary=None, padded=False)
    S = dsp.stft(y, n_fft=n_fft, hop_length=hop)
    np.testing.assert_allclose(S, Z * w.sum(), atol=1e-10)


def test_short_window_is_centred_in_the_frame(rng):
    y = rng.standard_normal(500)
    w = np.zeros(64)
    w[16:48] = dsp.get_window("hann", 32)
    np.testing.assert_allclose(dsp.stft(y, n_fft=64, hop_length=8, win_length=32),
                               direct_stft(y, 64, 8, w), atol=1e-10)


@pytest.mark.parametrize("n_fft,hop,win", [(256, 64, None), (512, 128, 400), (200, 75, None)])
def test_istft_inverts_stft(rng, n_fft, hop, win):
    y = rng.standard_normal(4000)
    S = dsp.stft(y, n_fft=n_fft, hop_length=hop, win_length=win)
    y_hat = dsp.istft(S, hop_length=hop, win_length=win, n_fft=n_fft, length=len(y))
    np.testing.assert_allclose(y_hat, y, atol=1e-6)


def test_istft_batched_and_float32(rng):
    y = rng.standard_normal((3, 2000)).astype(np.float32)
    S = dsp.stft(y, n_fft=256, hop_length=64)
    assert S.dtype == np.complex64
    y_hat = dsp.istft(S, hop_length=64, length=2000)
    assert y_hat.dtype == np.float32
    np.testing.assert_allclose(y_hat, y, atol=1e-5)


def test_parseval_on_one_frame(rng):
    """sum |x w|^2 = (1/N) sum_k |X_k|^2 over the full spectrum (one-sided: double 1..N/2-1)."""
    n_fft = 256
    y = rng.standard_normal(n_fft)
    S = dsp.stft(y, n_fft=n_fft, hop_length=n_fft, center=False)[:, 0]
    energy = ((y * dsp.get_window("hann", n_fft)) ** 2).sum()
    spectral = (np.abs(S[0]) ** 2 + np.abs(S[-1]) ** 2 + 2 * (np.abs(S[1:-1]) ** 2).sum())
    assert spectral / n_fft == pytest.approx(energy, rel=1e-12)


def test_frame_is_a_view_with_the_right_content(rng):
    y = rng.standard_normal(50)
    frames = frame(y, 10, 4)
    assert frames.shape == (11, 10)
    np.testing.assert_array_equal(frames[3], y[12:22])
    assert np.shares_memory(frames, y)


def test_stft_of_a_sinusoid_peaks_at_its_bin():
    sr, n_fft = 8000, 512
    t = np.arange(sr) / sr
    S = dsp.stft(np.sin(2 * np.pi * 1000 * t), n_fft=n_fft, hop_length=128)
    assert np.argmax(np.abs(S[:, 10])) == round(1000 * n_fft / sr)


def test_slaney_mel_known_values():
    assert dsp.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert dsp.hz_to_mel(200.0) == pytest.approx(3.0)
    assert dsp.hz_to_mel(6400.0) == pytest.approx(42.0)       # 27 mel per factor 6.4
    assert dsp.hz_to_mel(1000.0, htk=True) == pytest.approx(2595 * np.log10(1 + 1000 / 700))


@pytest.mark.parametrize("htk", [False, True])
def test_mel_inverts_hz(htk):
    f = np.array([0.0, 50.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0])
    np.testing.assert_allclose(dsp.mel_to_hz(dsp.hz_to_mel(f, htk), htk), f, atol=1e-9)


@pytest.mark.parametrize("htk", [False, True])
def test_filterbank_triangles(htk):
    sr, n_fft, n_mels = 16000, 2048, 40
    fb = dsp.mel_filterbank(sr, n_fft, n_mels, htk=htk, norm=None, dtype=np.float64)
    assert fb.shape == (n_mels, 1 + n_fft // 2)
    freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    edges = dsp.mel_frequencies(n_mels + 2, 0, sr / 2, htk)
    for i in range(n_mels):
        # Peak at the centre edge (within one bin), zero outside [f_i, f_{i+2}].
        assert abs(freqs[np.argmax(fb[i])] - edges[i + 1]) <= sr / n_fft
        outside = (freqs <= edges[i]) | (freqs >= edges[i + 2])
        assert np.all(fb[i][outside] == 0)
        assert fb[i].max() <= 1.0
    # Between the first and the last centre, neighbouring triangles sum to one.
    inside = (freqs >= edges[1]) & (freqs <= edges[n_mels])
    np.testing.assert_allclose(fb.sum(axis=0)[inside], 1.0, atol=1e-12)


def test_slaney_rows_integrate_to_the_area_norm():
    """Slaney-normalised triangle i has height 2/(f_{i+2} - f_i), hence unit area; its
    integral over frequency, by the trapezoid rule on a fine grid, is 1."""
    sr, n_fft, n_mels = 16000, 1 << 16, 20
    fb = dsp.mel_filterbank(sr, n_fft, n_mels, dtype=np.float64)
    edges = dsp.mel_frequencies(n_mels + 2, 0, sr / 2)
    np.testing.assert_allclose(fb.max(axis=1), 2 / (edges[2:] - edges[:-2]), rtol=1e-2)
    np.testing.assert_allclose(fb.sum(axis=1) * sr / n_fft, 1.0, rtol=1e-3)


def test_filterbank_rejects_bad_ranges():
    with pytest.raises(ValueError, match="fmax"):
        dsp.mel_filterbank(16000, 512, fmax=9000)
    with pytest.raises(ValueError, match="norm"):
        dsp.mel_filterbank(16000, 512, norm="l2")


def test_melspectrogram_is_filterbank_times_power(rng):
    y = rng.standard_normal(3000)
    M = dsp.melspectrogram(y, sr=8000, n_fft=256, hop_length=64, n_mels=20)
    S = dsp.stft(y, n_fft=256, hop_length=64)
    fb = dsp.mel_filterbank(8000, 256, 20, dtype=np.float64)
    np.testing.assert_allclose(M, fb @ np.abs(S) ** 2, rtol=1e-10)


def test_power_to_db_values_and_clipping():
    S = np.array([[1.0, 10.0, 1e-3, 0.0]])
    np.testing.assert_allclose(dsp.power_to_db(S, top_db=None), [[0, 10, -30, -100]])
    np.testing.assert_allclose(dsp.power_to_db(S, top_db=20.0), [[0, 10, -10, -10]])
    np.testing.assert_allclose(dsp.power_to_db(S, ref=np.max, top_db=None),
                               [[-10, 0, -40, -110]])


def power_to_db_reference(S, top_db, amin=1e-10):
    """10 log10(max(S, amin)), floored at top_db below the maximum of the whole spectrogram,
    one 2-D spectrogram at a time (librosa's definition, written out)."""
    S = np.asarray(S, dtype=np.float64)
    items = S.reshape((-1,) + S.shape[-2:])
    out = np.empty_like(items)
    for i, item in enumerate(items):
        db = 10.0 * np.log10(np.maximum(item, amin))
        out[i] = np.maximum(db, db.max() - top_db)
    return out.reshape(S.shape)


def spectrogram_spanning(rng, loudest_db, n_mels=6, frames=9):
    """A power spectrogram whose rows peak at different levels, the quietest rows more than
    100 dB under the loudest, so that an 80 dB floor cuts into it."""
    row_peaks = loudest_db - np.linspace(0.0, 120.0, n_mels)
    spread = rng.uniform(-30.0, 0.0, size=(n_mels, frames))
    return 10.0 ** ((row_peaks[:, None] + spread) / 10.0)


def test_power_to_db_floors_a_spectrogram_at_its_own_maximum(rng):
    """The floor is top_db under the maximum of the whole (mel x frames) image, not of each
    mel row: the quiet rows end at the floor."""
    S = spectrogram_spanning(rng, 20.0)
    db = dsp.power_to_db(S, top_db=80.0)
    np.testing.assert_allclose(db, power_to_db_reference(S, 80.0), rtol=1e-12, atol=1e-9)
    assert db.min() == pytest.approx(db.max() - 80.0)           # the floor was reached
    assert (db == db.min()).all(axis=1).any()                   # a whole row under it


def test_power_to_db_floors_each_item_of_a_batch_at_its_own_maximum(rng):
    """(batch, mel, frames): every item gets the floor of its own maximum, the items' maxima
    being tens of dB apart."""
    S = np.stack([spectrogram_spanning(rng, loudest) for loudest in (30.0, -10.0, -45.0)])
    db = dsp.power_to_db(S, top_db=80.0)
    np.testing.assert_allclose(db, power_to_db_reference(S, 80.0), rtol=1e-12, atol=1e-9)
    for item, expected in zip(db, S):
        np.testing.assert_allclose(item, dsp.power_to_db(expected, top_db=80.0), atol=1e-12)
    assert len(set(np.round(db.min(axis=(1, 2)), 6))) == 3     # three different floors


def test_batch_items_are_processed_independently(rng):
    y = rng.standard_normal((3, 4000)) * np.array([[1.0], [100.0], [0.01]])
    logmel = dsp.LogMel(sr=16000, n_fft=512, hop_length=160, n_mels=32)
    batch = logmel(y)
    assert batch.shape == (3, 32, 1 + 4000 // 160)
    for i in range(3):
        np.testing.assert_allclose(batch[i], logmel(y[i]), atol=1e-9)
    assert np.all(batch.max(axis=(1, 2)) - batch.min(axis=(1, 2)) <= 80.0 + 1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("center, pad_mode", [(True, "constant"), (True, "reflect"),
                                              (False, "constant")])
def test_logmel_batched_path_computes_melspectrogram_then_decibels(rng, dtype, center,
                                                                   pad_mode):
    """LogMel's batched path (kept arrays, |S|^2 from the complex array's float view) gives
    power_to_db(melspectrogram(...)) item for item, for a length that is no multiple of the
    hop."""
    y = (rng.standard_normal((3, 16000 * 2 + 37)) * np.array([[1.0], [30.0], [0.02]]))
    y = y.astype(dtype)
    logmel = dsp.LogMel(sr=16000, n_fft=512, hop_length=160, n_mels=40, center=center,
                        pad_mode=pad_mode)
    got = logmel(y)
    mel = dsp.melspectrogram(y, sr=16000, n_fft=512, hop_length=160, n_mels=40,
                             center=center, pad_mode=pad_mode)
    expected = dsp.power_to_db(mel, top_db=80.0)
    assert got.shape == expected.shape == (3, 40, logmel.num_frames(y.shape[-1]))
    assert got.dtype == dtype
    tol = 2e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, expected, atol=tol)


def test_logmel_results_do_not_share_its_kept_arrays(rng):
    """A result stays as it was when the transform is called again, with the same shape or
    another, and the transform still gives the right numbers after a change of shape."""
    logmel = dsp.LogMel(sr=16000, n_fft=512, hop_length=160, n_mels=32)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((2, 8000), (2, 8000),
                                                                  (5, 3000)))
    first = logmel(a)
    kept = first.copy()
    logmel(b)
    short = logmel(c)
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_allclose(logmel(a), kept, atol=0)
    np.testing.assert_allclose(short, dsp.power_to_db(dsp.melspectrogram(
        c, sr=16000, n_fft=512, hop_length=160, n_mels=32)), atol=2e-3)


def test_logmel_from_several_threads_and_after_pickling(rng):
    """Each thread computes in arrays of its own (no thread overwrites another's frames), and
    a pickled transform (as worker processes receive it) computes the same."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor
    logmel = dsp.LogMel(sr=16000, n_fft=512, hop_length=160, n_mels=32)
    batches = [rng.standard_normal((4, 16000)).astype(np.float32) for _ in range(8)]
    expected = [logmel(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(logmel, batches), expected):
                np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(logmel))(batches[0]), expected[0])


def test_signal_validation():
    with pytest.raises(TypeError, match="floating-point"):
        dsp.stft(np.arange(100))
    with pytest.raises(ValueError, match="empty"):
        dsp.stft(np.zeros(0))


def test_matches_librosa_if_installed(rng):
    lr = pytest.importorskip("librosa")
    y = rng.standard_normal(8000).astype(np.float32)
    np.testing.assert_allclose(dsp.mel_filterbank(16000, 1024, 64, fmax=8000),
                               lr.filters.mel(sr=16000, n_fft=1024, n_mels=64, fmax=8000),
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dsp.stft(y, n_fft=512, hop_length=128),
                               lr.stft(y, n_fft=512, hop_length=128), rtol=1e-4, atol=1e-4)
    M = dsp.melspectrogram(y, sr=16000, n_fft=1024, hop_length=320, n_mels=64)
    M_ref = lr.feature.melspectrogram(y=y, sr=16000, n_fft=1024, hop_length=320, n_mels=64)
    np.testing.assert_allclose(M, M_ref, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(dsp.power_to_db(M), lr.power_to_db(M), atol=1e-3)
