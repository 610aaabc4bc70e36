"""Seeded data augmentation on batches of log-Mel images (N, 1, n_mels, frames).

Random numbers are drawn on the host from a NumPy Generator (reproducible for a seed on CPU
and GPU alike); the masks and indices built from them are applied with the batch's own array
module, without a loop over the batch.
"""
import numpy as np

from scratchnet.runtime.backend import get_array_module, to_numpy


def time_shift(x, rng, max_fraction):
    """Roll each clip along time by an independent integer in [-max_fraction*T, max_fraction*T]
    (circularly: environmental sounds have no fixed onset)."""
    xp = get_array_module(x)
    n, t = x.shape[0], x.shape[-1]
    limit = int(max_fraction * t)
    if limit == 0:
        return x
    shifts = rng.integers(-limit, limit + 1, size=n)
    if xp is not np:  # on the GPU one gather, instead of two kernel launches per clip
        index = xp.asarray((np.arange(t)[None, :] - shifts[:, None]) % t)
        return xp.take_along_axis(x, index.reshape((n,) + (1,) * (x.ndim - 2) + (t,)), axis=-1)
    # out[..., j] = x[..., (j - s) mod T]: two slice copies per clip (on the CPU a gather
    # through an index array is several times slower: docs/speed.md,
    # "Slices, not index arrays").
    out = xp.empty_like(x)
    for i, s in enumerate(shifts % t):
        out[i, ..., s:] = x[i, ..., :t - s]
        out[i, ..., :s] = x[i, ..., t - s:]
    return out


def freq_shift(x, rng, max_bins, fill=0.0):
    """Shift each clip along the mel axis by an independent integer k in [-max_bins, max_bins]
    (a pitch shift by about k mel bins: out[..., f, :] = x[..., f - k, :]), the k bins shifted
    in at one edge set to ``fill`` (the mean of the standardised features).  Not circular, as
    time_shift is: the lowest and the highest bands are no neighbours.

    Why a shift of mel bins stands for a pitch shift: above ~1 kHz the mel scale is nearly
    logarithmic in frequency, so scaling every frequency by one factor moves the whole image
    by one distance along the mel axis.  Slaney's mels there are m = 15 + 27 ln(f / 1 kHz) /
    ln 6.4, so d(ln f) = dm ln 6.4 / 27; 128 bins of 0-8 kHz (45.25 mels, 129 steps between
    band centres) step 0.351 mel, ln f by 0.0241, 0.42 semitone.  Below 1 kHz the scale is
    linear and the shift only approximates a pitch shift."""
    if not isinstance(max_bins, int) or max_bins < 0:
        raise ValueError(f"freq_shift: max_bins must be a whole number >= 0, got {max_bins!r}")
    xp = get_array_module(x)
    m = x.shape[-2]
    limit = min(max_bins, m)
    if limit == 0:
        return x
    shifts = rng.integers(-limit, limit + 1, size=x.shape[0])
    if xp is not np:  # on the GPU one gather and one select, instead of launches per clip
        source = np.arange(m)[None, :] - shifts[:, None]           # out row f reads f - k
        shape = (x.shape[0],) + (1,) * (x.ndim - 3) + (m, 1)
        index = xp.asarray(np.clip(source, 0, m - 1)).reshape(shape)
        inside = xp.asarray((source >= 0) & (source < m)).reshape(shape)
        return xp.where(inside, xp.take_along_axis(x, index, axis=-2), x.dtype.type(fill))
    out = xp.empty_like(x)
    for i, k in enumerate(shifts):
        if k >= 0:
            out[i, ..., k:, :] = x[i, ..., :m - k, :]
            out[i, ..., :k, :] = fill
        else:
            out[i, ..., :m + k, :] = x[i, ..., -k:, :]
            out[i, ..., m + k:, :] = fill
    return out


def test_time_shifts(frames, max_fraction, views):
    """The circular time shifts (in frames) whose predictions are averaged at test time:
    ``views`` shifts evenly spaced over the training range [-max_fraction*T, max_fraction*T],
    so every view is a clip the network could have been trained on; one view is no shift.

    Why it can help a time-pooled network at all: after a total stride of 32 frames a shift
    that is not a multiple of 32 samples the feature maps on another grid, and the frames that
    wrap around meet the zero padding elsewhere; averaging the views' probabilities averages
    out that sampling noise."""
    if views < 1:
        raise ValueError(f"test-time views must be at least 1, got {views}")
    limit = int(max_fraction * frames)
    if views == 1 or limit == 0:
        return [0]
    return [int(round(s)) for s in np.linspace(-limit, limit, views)]


def _band_mask(rng, n, size, max_width):
    """(N, size) boolean: one band [start, start + width) per row, width ~ U{0..max_width}."""
    width = rng.integers(0, max_width + 1, size=n)
    start = rng.integers(0, np.maximum(size - width, 0) + 1)
    positions = np.arange(size)[None, :]
    return (positions >= start[:, None]) & (positions < (start + width)[:, None])


def spec_augment(x, rng, freq_mask, time_mask, fill=0.0, masks=1):
    """SpecAugment (Park et al., 2019): ``masks`` frequency bands of up to ``freq_mask`` mel
    bins each and ``masks`` time bands of up to ``time_mask`` frames each per clip, set to
    ``fill`` (the mean of the standardised features).  Bands are drawn independently, so they
    may overlap (the paper's m_F and m_T masks; its LibriSpeech policies use two of each).
    All frequency bands are drawn before the time bands, so ``masks=1`` draws exactly the
    random numbers of a single band per axis."""
    if not isinstance(masks, int) or masks < 0:
        raise ValueError(f"spec_augment: masks must be a whole number >= 0, got {masks!r}")
    xp = get_array_module(x)
    n, _, m, t = x.shape
    masked = np.zeros((n, 1, m, t), dtype=bool)
    if freq_mask:
        for _ in range(masks):
            masked |= _band_mask(rng, n, m, min(freq_mask, m))[:, None, :, None]
    if time_mask:
        for _ in range(masks):
            masked |= _band_mask(rng, n, t, min(time_mask, t))[:, None, None, :]
    return xp.where(xp.asarray(masked), x.dtype.type(fill), x)


def target_rows(labels, num_classes, xp, dtype):
    """Target rows (N, K) on the device: e_y for integer labels (N,); rows given already
    (N, K), such as distillation's soft targets, as they are."""
    labels = xp.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(dtype, copy=False)
    out = xp.zeros((len(labels), num_classes), dtype=dtype)
    out[xp.arange(len(labels)), labels] = 1
    return out


def add_powers(x, perm, log_w, log_rest, power_scale):
    """Each clip mixed with its partner x[perm] as sounds rather than as images, weights w and
    1 - w given by their logarithms (scalars, or one per clip shaped (N, 1, ..., 1)).

    x is a standardised level in dB, x = (10 log10 P - mean) / std, and two recordings played
    together add their powers (in expectation over their phases), so with
    c = ln(10) / 10 * std (``power_scale``, a scalar or per mel bin (n_mels, 1)):
        P' = w P1 + (1 - w) P2,
        x' = (10 log10 P' - mean) / std = logaddexp(c x1 + ln w, c x2 + ln(1 - w)) / c,
    the mean cancelling.  The louder clip dominates the mixture, as it would in the room."""
    xp = get_array_module(x)
    c = xp.asarray(power_scale, dtype=x.dtype)
    cx = x * c
    mixed = xp.logaddexp(cx + log_w, cx[perm] + log_rest)
    mixed /= c
    return mixed


def mixup(x, labels, num_classes, rng, alpha, power_scale=None):
    """Mixup (Zhang et al., 2018): x' = lam x + (1 - lam) x[perm], t' = lam t + (1 - lam) t[perm],
    lam ~ Beta(alpha, alpha), one lam per batch; ``labels``: classes (N,) or target rows
    (N, K) (:func:`target_rows`).  Returns (x', soft targets (N, K)).
    With ``power_scale`` the clips add their powers instead (:func:`add_powers`, w = lam)."""
    xp = get_array_module(x)
    lam = float(rng.beta(alpha, alpha))
    perm = xp.asarray(rng.permutation(x.shape[0]))
    targets = target_rows(labels, num_classes, xp, x.dtype)
    if power_scale is None:
        x = x * x.dtype.type(lam) + x[perm] * x.dtype.type(1 - lam)
    else:
        # lam in (0, 1) keeps both logarithms finite (Beta draws of exactly 0 or 1 underflow).
        lam = min(max(lam, 1e-7), 1 - 1e-7)
        x = add_powers(x, perm, x.dtype.type(np.log(lam)), x.dtype.type(np.log1p(-lam)),
                       power_scale)
    targets = targets * lam + targets[perm] * (1 - lam)
    return x, targets


def a_weighting(frequencies):
    """The A-weighting of IEC 61672 in dB at ``frequencies`` (Hz), the ear's sensitivity
    relative to 1 kHz (librosa.A_weighting's curve, without its floor):
        R(f) = 12194^2 f^4 / ((f^2 + 20.6^2) sqrt((f^2 + 107.7^2)(f^2 + 737.9^2)) (f^2 + 12194^2)),
        A(f) = 20 log10 R(f) + 2.00,
    the 2.00 dB making A(1 kHz) = 0."""
    f2 = np.asarray(frequencies, dtype=np.float64) ** 2  # host: band frequencies, numbers
    r = (12194.0 ** 2 * f2 ** 2
         / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
            * (f2 + 12194.0 ** 2)))
    with np.errstate(divide="ignore"):  # f = 0: -inf dB, a band the ear does not hear
        return 20 * np.log10(r) + 2.0


def clip_gains(log_mel, band_frequencies):
    """The gain of each clip, in dB, as between-class learning weighs it (Tokozume et al.,
    2018): the loudest frame's A-weighted power,
        G = max_t 10 log10 sum_f 10^((X[f, t] + A(f_f)) / 10),
    from log-Mels X (N, n_mels, frames) in dB before standardisation and the bands' centre
    frequencies f_f.  The paper takes the same maximum over frames of the waveform's
    A-weighted spectrum; a mel band's power is a sum of its bins', so the sum over bands
    stands for the sum over bins.  Host arrays: computed once per fold, not per batch."""
    weights = a_weighting(band_frequencies)[:, None]           # (n_mels, 1)
    level = to_numpy(log_mel).astype(np.float64) + weights
    peak = level.max(axis=(1, 2), keepdims=True)               # log-sum-exp, kept finite
    frame_power = np.sum(10 ** ((level - peak) / 10), axis=1)  # (N, frames)
    return peak[:, 0, 0] + 10 * np.log10(frame_power.max(axis=1))


def between_class(x, labels, num_classes, rng, power_scale, gains):
    """Between-class mixing (BC learning, Tokozume et al., 2018) of standardised log-Mels.

    Each clip i is mixed with a partner j (a random permutation of the batch) at its own
    ratio r_i ~ U(0, 1), the target being r t_i + (1 - r) t_j.  The ratio is of what is heard,
    not of amplitudes: with gains G_i, G_j (:func:`clip_gains`) the waveforms are mixed as
        s = (p s_i + (1 - p) s_j) / sqrt(p^2 + (1 - p)^2),
        p = 1 / (1 + 10^((G_i - G_j) / 20) (1 - r) / r),
    which solves p 10^(G_i/20) : (1 - p) 10^(G_j/20) = r : (1 - r), so that a quiet clip
    mixed at r = 0.5 is as audible as a loud one; the denominator keeps the level.  Two
    recordings add their powers (in expectation over their phases), so on power spectrograms
        P = w P_i + (1 - w) P_j,  w = p^2 / (p^2 + (1 - p)^2),
    which :func:`add_powers` applies to the standardised dB values (``power_scale`` as
    there).  ``gains``: host array (N,), the batch's clips' G; ``labels`` as in :func:`mixup`.
    Returns (x', soft targets (N, K))."""
    xp = get_array_module(x)
    n = x.shape[0]
    gains = np.asarray(gains, dtype=np.float64)  # host: computed once per fold (clip_gains)
    if gains.shape != (n,):
        raise ValueError(f"between_class: expected one gain per clip ({n}), got shape "
                         f"{gains.shape}")
    perm = rng.permutation(n)
    # r in (0, 1) keeps p, w and both logarithms finite (a uniform draw may be exactly 0).
    r = np.clip(rng.uniform(0.0, 1.0, size=n), 1e-7, 1 - 1e-7)
    p = 1.0 / (1.0 + 10 ** ((gains - gains[perm]) / 20) * (1 - r) / r)
    w = np.clip(p ** 2 / (p ** 2 + (1 - p) ** 2), 1e-7, 1 - 1e-7)
    shape = (n,) + (1,) * (x.ndim - 1)
    partner = xp.asarray(perm)  # one upload for the clips and the targets
    mixed = add_powers(x, partner, xp.asarray(np.log(w).reshape(shape), dtype=x.dtype),
                       xp.asarray(np.log1p(-w).reshape(shape), dtype=x.dtype), power_scale)
    targets = target_rows(labels, num_classes, xp, x.dtype)
    ratio = xp.asarray(r[:, None], dtype=x.dtype)
    targets = targets * ratio + targets[partner] * (1 - ratio)
    return mixed, targets
