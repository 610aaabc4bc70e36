"""Windows, framing, the short-time Fourier transform and its inverse.

STFT.  With frames x_t[n] = s[t*hop + n] (n = 0 .. n_fft-1) of the (centre-padded) signal and a
window w,
    S[k, t] = sum_{n=0}^{n_fft-1} w[n] x_t[n] exp(-2 pi i k n / n_fft),  k = 0 .. n_fft/2,
i.e. the DFT of each windowed frame; for real s only the non-negative frequencies are kept
(S[n_fft - k] = conj S[k]).  ``center=True`` pads n_fft/2 samples on both sides so that frame t
is centred on sample t*hop, as librosa does.
"""
import numpy as np

from ._array import as_strided, get_array_module, irfft, rfft


def get_window(window, n, xp=np):
    """Periodic window of length n ("hann", "hamming", "ones"/"boxcar") or an explicit array.

    Periodic (the DFT-even form, scipy's ``fftbins=True``): w[n] = 0.5 - 0.5 cos(2 pi n / N)
    for Hann, i.e. a symmetric window of length N + 1 with its last sample dropped.  Its
    copies shifted by N/4 sum to a constant (1.5 for Hann), which is what makes overlap-add
    and the STFT's inverse exact; the symmetric form would not tile.
    """
    if not isinstance(window, str):
        w = xp.asarray(window)
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"window array must have shape ({n},), got {w.shape}")
        return w
    phase = 2.0 * np.pi * np.arange(n) / n
    if window in ("hann", "hanning"):
        w = 0.5 - 0.5 * np.cos(phase)
    elif window == "hamming":
        w = 0.54 - 0.46 * np.cos(phase)
    elif window in ("ones", "boxcar", "rectangular"):
        w = np.ones(n)
    else:
        raise ValueError(f"unknown window {window!r}: use 'hann', 'hamming', 'ones' or an array")
    return xp.asarray(w)


def _window_for(window, win_length, n_fft, xp):
    """A length-n_fft window: the length-win_length window centred, zeros around it."""
    if win_length > n_fft:
        raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
    w = get_window(window, win_length, xp)
    if win_length < n_fft:
        left = (n_fft - win_length) // 2
        w = xp.pad(w, (left, n_fft - win_length - left))
    return w


def frame(y, frame_length, hop_length):
    """Strided view (..., n_frames, frame_length), frame t = y[..., t*hop : t*hop + length].
    No copy: consecutive frames share memory."""
    if y.shape[-1] < frame_length:
        raise ValueError(f"signal of length {y.shape[-1]} is shorter than one frame "
                         f"({frame_length})")
    n_frames = 1 + (y.shape[-1] - frame_length) // hop_length
    xp = get_array_module(y)
    y = xp.ascontiguousarray(y)
    step = y.strides[-1]
    return as_strided(y, y.shape[:-1] + (n_frames, frame_length),
                      y.strides[:-1] + (hop_length * step, step))


def _check_signal(y):
    if y.ndim < 1:
        raise ValueError("audio must have at least one (time) axis")
    if y.dtype.kind != "f":
        raise TypeError(f"audio must be floating-point, got dtype {y.dtype}")
    if y.shape[-1] == 0:
        raise ValueError("audio is empty (0 samples)")


def check_centre_padding(y, n_fft, pad_mode):
    """Reflect padding of n_fft // 2 samples needs more samples than that."""
    if pad_mode == "reflect" and y.shape[-1] <= n_fft // 2:
        raise ValueError(f"reflect padding needs more than {n_fft // 2} samples, "
                         f"got {y.shape[-1]}")


def stft_frames(y, n_fft=2048, hop_length=None, win_length=None, window="hann", center=True,
                pad_mode="constant"):
    """The STFT laid out frames-major: (..., frames, 1 + n_fft // 2), contiguous."""
    xp = get_array_module(y)
    _check_signal(y)
    win_length = win_length or n_fft
    hop_length = hop_length or win_length // 4
    if hop_length < 1:
        raise ValueError(f"hop_length must be positive, got {hop_length}")
    w = _window_for(window, win_length, n_fft, xp).astype(y.dtype)
    if center:
        check_centre_padding(y, n_fft, pad_mode)
        y = xp.pad(y, [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode=pad_mode)
    frames = frame(y, n_fft, hop_length) * w
    return rfft(frames, axis=-1)


def stft(y, n_fft=2048, hop_length=None, win_length=None, window="hann", center=True,
         pad_mode="constant"):
    """Complex STFT (..., 1 + n_fft // 2, frames) of y (..., time), as ``librosa.stft``.

    hop_length defaults to win_length // 4 and win_length to n_fft; a window shorter than
    n_fft is centred and zero-padded.  Frames = 1 + len // hop when centred.
    """
    return stft_frames(y, n_fft, hop_length, win_length, window, center,
                       pad_mode).swapaxes(-1, -2)


def istft(S, hop_length=None, win_length=None, n_fft=None, window="hann", center=True,
          length=None):
    """Inverse STFT by weighted overlap-add, as ``librosa.istft``.

    Each frame is inverted (irfft), multiplied by the window again and added at t*hop; the sum
    is divided by sum_t w^2[n - t*hop].  Because S came from frames multiplied by w, this is the
    least-squares estimate of the signal (Griffin & Lim, 1984), exact for an unmodified STFT
    wherever the window-square sum is non-zero.
    """
    xp = get_array_module(S)
    n_fft = n_fft or 2 * (S.shape[-2] - 1)
    win_length = win_length or n_fft
    hop_length = hop_length or win_length // 4
    real = xp.float32 if S.dtype == xp.complex64 else xp.float64
    w = _window_for(window, win_length, n_fft, xp).astype(real)
    frames = irfft(S.swapaxes(-1, -2), n=n_fft, axis=-1).astype(real) * w
    n_frames = frames.shape[-2]
    total = n_fft + hop_length * (n_frames - 1)
    lead = frames.shape[:-2]
    w2 = w * w
    # Overlap-add as slice-adds: the t-th frame starts at t*hop.  Splitting n_fft into chunks of
    # hop samples, chunk k of every frame lands on chunk t + k of the output, so one strided add
    # per chunk offset k covers all frames at once.
    chunks = -(-n_fft // hop_length)
    padded = chunks * hop_length
    if padded != n_fft:
        frames = xp.concatenate([frames, xp.zeros(lead + (n_frames, padded - n_fft), real)], -1)
        w2 = xp.concatenate([w2, xp.zeros(padded - n_fft, real)])
    y = xp.zeros(lead + (hop_length * (n_frames + chunks - 1),), dtype=real)
    wsum = xp.zeros(y.shape[-1], dtype=real)
    yc = y.reshape(lead + (n_frames + chunks - 1, hop_length))
    wc = wsum.reshape(n_frames + chunks - 1, hop_length)
    fc = frames.reshape(lead + (n_frames, chunks, hop_length))
    w2c = w2.reshape(chunks, hop_length)
    for k in range(chunks):
        yc[..., k:k + n_frames, :] += fc[..., :, k, :]
        wc[k:k + n_frames, :] += w2c[k]
    y, wsum = y[..., :total], wsum[:total]
    tiny = xp.finfo(real).tiny
    nonzero = wsum > tiny
    y = y / xp.where(nonzero, wsum, 1.0)
    if center:
        y = y[..., n_fft // 2:]
        if length is None:
            y = y[..., :total - n_fft]
    if length is not None:
        if y.shape[-1] < length:
            y = xp.concatenate([y, xp.zeros(lead + (length - y.shape[-1],), real)], -1)
        y = y[..., :length]
    return y
