"""Mel spectrograms, decibels, and a configured log-Mel transform."""
import threading

import numpy as np

from ._array import get_array_module, rfft
from .mel import mel_filterbank
from .stft import _check_signal, _window_for, check_centre_padding, frame, stft_frames


def melspectrogram(y, sr, n_fft=2048, hop_length=512, win_length=None, window="hann",
                   center=True, pad_mode="constant", power=2.0, n_mels=128, fmin=0.0,
                   fmax=None, htk=False, norm="slaney", mel_basis=None):
    """M[..., m, t] = sum_k F[m, k] |S[..., k, t]|^power  ->  (..., n_mels, frames).

    ``mel_basis`` (n_mels, 1 + n_fft // 2) may be given to avoid rebuilding F on every call.
    """
    xp = get_array_module(y)
    if mel_basis is None:
        mel_basis = xp.asarray(mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm,
                                              dtype=y.dtype))
    spec = stft_frames(y, n_fft, hop_length, win_length, window, center, pad_mode)
    magnitude2 = spec.real * spec.real + spec.imag * spec.imag
    spectrum = magnitude2 if power == 2.0 else magnitude2 ** (power / 2.0)
    # frames-major (..., T, K) @ (K, n_mels) is one contiguous GEMM; swap to (..., n_mels, T).
    return (spectrum @ mel_basis.T.astype(spectrum.dtype)).swapaxes(-1, -2)


def power_to_db(S, ref=1.0, amin=1e-10, top_db=80.0):
    """10 log10(max(S, amin) / max(ref, amin)), then floored at (max - top_db).

    ``amin`` keeps log10 away from zero; ``top_db`` bounds the dynamic range.  A 2-D S is one
    spectrogram; for S of shape (..., n_mels, frames) every item is treated alone: its own
    maximum sets its floor (and its own reference when ``ref`` is a function such as np.max).
    """
    xp = get_array_module(S)
    if amin <= 0:
        raise ValueError("amin must be strictly positive")
    if top_db is not None and top_db < 0:
        raise ValueError("top_db must be non-negative")
    S = xp.asarray(S)
    if xp.iscomplexobj(S):
        raise TypeError("power_to_db expects a real power spectrogram; take |S|**2 first")
    per_item = (-2, -1) if S.ndim >= 2 else (-1,)
    if callable(ref):
        if ref in (np.max, np.amax, getattr(xp, "max", None), getattr(xp, "amax", None)):
            ref_value = S.max(axis=per_item, keepdims=True)
        else:
            items = S.reshape((-1,) + S.shape[len(S.shape) - len(per_item):])
            ref_value = xp.asarray([ref(item) for item in items], dtype=S.dtype)
            ref_value = ref_value.reshape(S.shape[:S.ndim - len(per_item)] + (1,) * len(per_item))
    else:
        ref_value = abs(ref)
    log_spec = 10.0 * xp.log10(xp.maximum(S, amin))
    log_spec -= 10.0 * xp.log10(xp.maximum(ref_value, amin))
    if top_db is not None:
        log_spec = xp.maximum(log_spec, log_spec.max(axis=per_item, keepdims=True) - top_db)
    return log_spec


class LogMel:
    """The configured front end: (B, T) or (T,) audio -> (B, n_mels, frames) log-Mel in dB.

    The filterbank and window are built once per array module (NumPy / CuPy) and reused.
    """

    def __init__(self, sr=16000, n_fft=1024, hop_length=320, n_mels=64, fmin=0.0, fmax=None,
                 power=2.0, top_db=80.0, center=True, pad_mode="constant"):
        self.sr, self.n_fft, self.hop_length, self.n_mels = sr, n_fft, hop_length, n_mels
        self.fmin, self.fmax, self.power, self.top_db = fmin, fmax, power, top_db
        self.center, self.pad_mode = center, pad_mode
        self._basis = {}
        self._kept = threading.local()  # each thread's arrays, reused (see _batched)

    def __getstate__(self):  # the kept arrays are per thread and per process: not pickled
        return {k: v for k, v in self.__dict__.items() if k != "_kept"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._kept = threading.local()

    def config(self):
        return dict(sr=self.sr, n_fft=self.n_fft, hop_length=self.hop_length,
                    n_mels=self.n_mels, fmin=self.fmin, fmax=self.fmax, power=self.power,
                    top_db=self.top_db, center=self.center, pad_mode=self.pad_mode)

    def num_frames(self, num_samples):
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def __call__(self, y):
        xp = get_array_module(y)
        key = (xp.__name__, np.dtype(y.dtype).str)
        if key not in self._basis:
            self._basis[key] = xp.asarray(mel_filterbank(self.sr, self.n_fft, self.n_mels,
                                                         self.fmin, self.fmax, dtype=y.dtype))
        if xp is not np or y.ndim < 2 or self.power != 2.0:
            mel = melspectrogram(y, self.sr, self.n_fft, self.hop_length, power=self.power,
                                 center=self.center, pad_mode=self.pad_mode,
                                 mel_basis=self._basis[key])
            return power_to_db(mel, top_db=self.top_db)
        return self._batched(y, self._basis[key])

    def _batched(self, y, basis):
        """The same sums as melspectrogram and power_to_db for a NumPy batch, computed in
        arrays this transform keeps from call to call (one set per thread).  Why: a batch's
        padded signal, windowed frames and power spectrum are megabytes each, which glibc
        hands back to the system when they are freed, so that every call page-faulted them in
        anew (docs/speed.md, "The front end's arrays, kept")."""
        _check_signal(y)
        n_fft, hop = self.n_fft, self.hop_length
        frames = frame(self._padded(y), n_fft, hop)
        work = self._workspace("frames", frames.shape, y.dtype)
        np.multiply(frames, self._window(y.dtype), out=work)
        spec = rfft(work, axis=-1)
        # |S|^2 = re^2 + im^2: square the complex array's float view in place, add the pairs
        parts = spec.view(y.dtype)
        np.square(parts, out=parts)
        magnitude2 = np.add(parts[..., 0::2], parts[..., 1::2],
                            out=self._workspace("power", spec.shape, y.dtype))
        mel = magnitude2.reshape(-1, magnitude2.shape[-1]) @ basis.T
        mel = mel.reshape(magnitude2.shape[:-1] + (self.n_mels,))  # (..., frames, n_mels)
        return power_to_db(mel.swapaxes(-1, -2), top_db=self.top_db)

    def _padded(self, y):
        """y centre-padded as stft_frames pads it; zero padding written into a kept array."""
        if not self.center:
            return y
        half = self.n_fft // 2
        if self.pad_mode != "constant":
            check_centre_padding(y, self.n_fft, self.pad_mode)
            return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(half, half)], mode=self.pad_mode)
        padded = self._workspace("padded", y.shape[:-1] + (y.shape[-1] + 2 * half,), y.dtype,
                                 zeros=True)
        padded[..., half:half + y.shape[-1]] = y
        return padded

    def _window(self, dtype):
        key = ("window", np.dtype(dtype).str)
        if key not in self._basis:
            self._basis[key] = _window_for("hann", self.n_fft, self.n_fft, np).astype(dtype)
        return self._basis[key]

    def _workspace(self, name, shape, dtype, zeros=False):
        """A kept array for ``name`` of this shape and dtype (a new one when they change)."""
        kept = getattr(self._kept, name, None)
        if kept is None or kept.shape != shape or kept.dtype != dtype:
            kept = (np.zeros if zeros else np.empty)(shape, dtype)
            setattr(self._kept, name, kept)
        return kept
