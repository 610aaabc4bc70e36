"""Reading audio files: soundfile for decoding, mono mix-down, polyphase resampling."""
import math
import os

import numpy as np


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the problem."""


def resample(y, orig_sr, target_sr):
    """Resample along the last axis by the rational factor target_sr / orig_sr.

    ``scipy.signal.resample_poly`` upsamples by L, low-pass filters (a Kaiser-windowed FIR at
    the lower of the two Nyquist frequencies, against aliasing and imaging) and downsamples by
    M, with L / M = target_sr / orig_sr reduced by their gcd.
    """
    from scipy.signal import resample_poly
    if orig_sr == target_sr:
        return y
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    g = math.gcd(int(orig_sr), int(target_sr))
    out = resample_poly(y, int(target_sr) // g, int(orig_sr) // g, axis=-1)
    return out.astype(y.dtype, copy=False)


def read_pcm_wav(path):
    """(samples, channels) float32 in [-1, 1) and the rate of a PCM WAV file, with the standard
    library alone: the fallback where soundfile (libsndfile) is not installed."""
    import wave
    with wave.open(path, "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        kind = np.dtype(f"<i{width}")
        data = np.frombuffer(raw, dtype=kind).astype(np.float32) / float(2 ** (8 * width - 1))
    else:
        raise ValueError(f"{8 * width}-bit PCM needs soundfile")
    return data.reshape(-1, channels), rate


def load_audio(path, sr=None, mono=True, dtype=np.float32):
    """Read an audio file (wav, flac, ogg, ... anything libsndfile decodes).

    Returns (y, sr): y is float32 in [-1, 1], shape (samples,) when mono (channels averaged),
    else (channels, samples) as librosa; ``sr`` resamples to that rate (None keeps the file's).
    Missing, empty, truncated or undecodable files, and silent-NaN content, raise an error
    naming the file.  Without soundfile installed, PCM WAV files are still read
    (:func:`read_pcm_wav`).
    """
    try:
        import soundfile as sf
    except ImportError:  # e.g. a GPU machine without libsndfile
        sf = None
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        if sf is not None:
            data, file_sr = sf.read(path, dtype="float32", always_2d=True)
        elif path.lower().endswith(".wav"):
            data, file_sr = read_pcm_wav(path)
        else:
            raise ImportError("soundfile is not installed, and without it only PCM WAV files "
                              "are read (pip install soundfile)")
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot decode audio ({e})") from e
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    y = data.mean(axis=1) if mono else data.T
    if sr is not None and sr != file_sr:
        y = resample(y, file_sr, sr)
        file_sr = sr
    return np.ascontiguousarray(y, dtype=dtype), int(file_sr)
