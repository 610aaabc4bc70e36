"""Reading audio files: soundfile for decoding, mono mix-down, polyphase resampling.

:func:`load_audio` reads a whole file; :func:`audio_blocks` reads it block by block, resampled
and mixed down as :func:`load_audio` would (the same samples, to float rounding), in memory
bounded by the block whatever the file's length.
"""
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


def pcm_to_float(raw, width, channels):
    """WAV PCM bytes of ``width`` bytes per sample as (frames, channels) float32 in [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        kind = np.dtype(f"<i{width}")
        data = np.frombuffer(raw, dtype=kind).astype(np.float32) / float(2 ** (8 * width - 1))
    else:
        raise ValueError(f"{8 * width}-bit PCM needs soundfile")
    return data.reshape(-1, channels)


def read_pcm_wav(path):
    """(samples, channels) float32 in [-1, 1) and the rate of a PCM WAV file, with the standard
    library alone: the fallback where soundfile (libsndfile) is not installed."""
    import wave
    with wave.open(path, "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        raw = f.readframes(f.getnframes())
    return pcm_to_float(raw, width, channels), rate


def soundfile_or_none():
    try:
        import soundfile as sf
    except ImportError:  # e.g. a GPU machine without libsndfile
        sf = None
    return sf


def check_audio_path(path):
    """``path`` as a string, after the checks that need no decoding (exists, a file, not
    empty), each failure named."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    return path


def load_audio(path, sr=None, mono=True, dtype=np.float32):
    """Read an audio file (wav, flac, ogg, ... anything libsndfile decodes).

    Returns (y, sr): y is float32 in [-1, 1], shape (samples,) when mono (channels averaged),
    else (channels, samples) as librosa; ``sr`` resamples to that rate (None keeps the file's).
    Missing, empty, truncated or undecodable files, and silent-NaN content, raise an error
    naming the file.  Without soundfile installed, PCM WAV files are still read
    (:func:`read_pcm_wav`).
    """
    sf = soundfile_or_none()
    path = check_audio_path(path)
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


def read_frames(path, block):
    """(file rate, an iterator of (frames, channels) float32 blocks of ``block`` frames) for a
    file, through soundfile, or the standard library for PCM WAV without it."""
    sf = soundfile_or_none()
    if sf is not None:
        f = sf.SoundFile(path)
        return f.samplerate, _soundfile_blocks(f, block)
    if not path.lower().endswith(".wav"):
        raise ImportError("soundfile is not installed, and without it only PCM WAV files "
                          "are read (pip install soundfile)")
    import wave
    f = wave.open(path, "rb")
    return f.getframerate(), _wave_blocks(f, block)


def _soundfile_blocks(f, block):
    with f:
        while True:
            data = f.read(block, dtype="float32", always_2d=True)
            if not len(data):
                return
            yield data


def _wave_blocks(f, block):
    with f:
        width, channels = f.getsampwidth(), f.getnchannels()
        while True:
            raw = f.readframes(block)
            if not raw:
                return
            yield pcm_to_float(raw, width, channels)


def resampling_context(orig_sr, target_sr):
    """(up, down, context): the reduced factors of ``target_sr / orig_sr`` and how many input
    samples each side of a block its resampled values depend on (resample_poly's filter has
    10 max(up, down) taps each side at the upsampled rate), rounded up to a multiple of
    ``down`` so that a block's first output falls on a whole output sample."""
    g = math.gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    reach = 10 * max(up, down) / up + 2
    return up, down, down * math.ceil(reach / down)


def audio_blocks(path, sr=None, block_seconds=30.0):
    """Yield a file's mono float32 samples, resampled to ``sr`` (None keeps the file's rate),
    in consecutive blocks of about ``block_seconds``: concatenated they are
    ``load_audio(path, sr)[0]`` to float rounding, while memory holds one block at a time
    (:func:`resample_blocks`).  Errors are :func:`load_audio`'s, each naming the file.
    """
    path = check_audio_path(path)
    try:
        file_sr, frames = read_frames(path, 1 << 16)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot decode audio ({e})") from e
    total = 0

    def mono():
        nonlocal total
        for data in frames:
            if not np.all(np.isfinite(data)):
                raise AudioError(f"{path}: contains NaN or infinite samples")
            total += len(data)
            yield data.mean(axis=1)

    try:
        yield from resample_blocks(mono(), file_sr, file_sr if sr is None else int(sr),
                                   int(block_seconds * file_sr))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: cannot decode audio ({e})") from e
    if total == 0:
        raise AudioError(f"{path}: contains no samples")


def resample_blocks(blocks, orig_sr, target_sr, block_samples):
    """Resample a signal that arrives as consecutive 1-D blocks (of any sizes), yielding
    blocks of about ``block_samples`` input samples: concatenated, exactly what
    :func:`resample` gives on the whole signal.

    Resampling a block alone would filter its edges against zeros.  Each block is therefore
    resampled with ``context`` input samples of its neighbours on each side
    (:func:`resampling_context`), and only its own outputs are kept: the polyphase filter's
    output n depends only on the inputs within its reach of time n / sr, all of which the
    block and its context hold.  Blocks start at multiples of ``down`` input samples, where
    an output sample falls.  A block is given once its right context has arrived, so a live
    stream lags by that context (tens of samples).
    """
    up, down, context = resampling_context(orig_sr, target_sr)
    if target_sr == orig_sr:
        context = 0
    step = down * max(1, block_samples // down)  # input samples per block
    pending, base, start, total = [], 0, 0, 0  # input from `base` on; next block's start
    for data in blocks:
        pending.append(np.asarray(data, dtype=np.float32))  # host: audio
        total += len(data)
        # Every whole block whose right context has arrived.
        while total >= start + step + context:
            signal = np.concatenate(pending)
            yield _block(signal, base, start, start + step, context, up, down, orig_sr,
                         target_sr)
            start += step
            new_base = max(0, start - context)
            pending, base = [signal[new_base - base:]], new_base
    if total > start:  # the last block: nothing to its right but the zeros resampling assumes
        yield _block(np.concatenate(pending), base, start, total, 0, up, down, orig_sr,
                     target_sr, last=True)


def _block(signal, base, start, end, context, up, down, file_sr, target, last=False):
    """The resampled outputs of input samples [start, end) of a signal held from ``base`` on
    (``start - base`` samples of left context, ``context`` more of right context unless
    ``last``)."""
    if target == file_sr:
        return signal[start - base:end - base]
    out = resample(signal[:end + context - base], file_sr, target)
    first = (start - base) * up // down  # start - base is a multiple of down
    # The whole signal's outputs number ceil(total * up / down), the last block's all the rest.
    stop = len(out) if last else first + (end - start) * up // down
    return out[first:stop]
