"""The Mel scale and the Mel filterbank (librosa's conventions).

HTK:     m = 2595 log10(1 + f / 700), a fit to pitch-perception data.
Slaney:  linear below 1 kHz, m = 3 f / 200 (so 1000 Hz = 15 mel); logarithmic above,
         m = 15 + ln(f / 1000) / (ln(6.4) / 27), i.e. 27 mel per factor 6.4 in frequency.
         This is the Auditory Toolbox's scale and librosa's default (htk=False).
"""
import numpy as np

from ._array import get_array_module

_F_SP = 200.0 / 3            # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP   # 15 mel
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(frequencies, htk=False):
    """Frequency (Hz, scalar or array of NumPy or CuPy) -> mel."""
    xp = get_array_module(frequencies)
    f = xp.asarray(frequencies, dtype=xp.float64)
    if htk:
        return 2595.0 * xp.log10(1.0 + f / 700.0)
    mel = f / _F_SP
    log_part = f >= _MIN_LOG_HZ
    return xp.where(log_part, _MIN_LOG_MEL + xp.log(xp.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ)
                    / _LOGSTEP, mel)


def mel_to_hz(mels, htk=False):
    """Mel (scalar or array) -> frequency in Hz; the inverse of :func:`hz_to_mel`."""
    xp = get_array_module(mels)
    m = xp.asarray(mels, dtype=xp.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return xp.where(m >= _MIN_LOG_MEL,
                    _MIN_LOG_HZ * xp.exp(_LOGSTEP * (xp.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL)),
                    _F_SP * m)


def mel_frequencies(n_mels=128, fmin=0.0, fmax=11025.0, htk=False):
    """n_mels frequencies (Hz) equally spaced on the mel scale from fmin to fmax."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels), htk)


def mel_filterbank(sr, n_fft, n_mels=128, fmin=0.0, fmax=None, htk=False, norm="slaney",
                   dtype=np.float32):
    """Triangular filters (n_mels, 1 + n_fft // 2) mapping a power spectrum to Mel bands,
    equal to ``librosa.filters.mel`` with the same arguments.

    Edges.  n_mels + 2 points f_0 < f_1 < ... equally spaced in mel between fmin and fmax; filter
    i rises linearly from 0 at f_i to 1 at f_{i+1} and falls back to 0 at f_{i+2}:
        w_i(f) = max(0, min((f - f_i) / (f_{i+1} - f_i), (f_{i+2} - f) / (f_{i+2} - f_{i+1}))),
    evaluated at the DFT bin frequencies k sr / n_fft.  Each triangle's falling edge spans the
    same interval as its right neighbour's rising edge, so between two centres the two
    (unnormalised) weights sum to 1: the filters tile the band.
    Slaney normalisation.  Higher filters are wider (in Hz); scaling filter i by
    2 / (f_{i+2} - f_i) gives every triangle unit area (base (f_{i+2} - f_i), height 1, area
    (f_{i+2} - f_i) / 2), so a flat spectrum gives roughly equal energy in every band.
    """
    if fmax is None:
        fmax = sr / 2.0
    if not 0 <= fmin < fmax <= sr / 2.0 + 1e-9:
        raise ValueError(f"need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    edges = mel_frequencies(n_mels + 2, fmin, fmax, htk)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(dtype)
