"""dsp: the audio front end, s(t) -> STFT -> power spectrogram -> Mel filterbank -> log-Mel.

Conventions are librosa's (periodic windows, centred frames, Slaney Mel scale by default), so
results can be compared with it.  Every function takes NumPy or CuPy arrays, 1-D (time) or
batched (..., time), and returns the same array type.  Files are read whole
(``load_audio``) or block by block (``audio_blocks``: the same samples, in memory bounded by
the block).
"""
from .features import LogMel, melspectrogram, power_to_db
from .io import AudioError, audio_blocks, load_audio, resample
from .mel import hz_to_mel, mel_filterbank, mel_frequencies, mel_to_hz
from .stft import frame, get_window, istft, stft

__all__ = ["AudioError", "audio_blocks", "load_audio", "resample", "get_window", "frame", "stft",
           "istft", "hz_to_mel", "mel_to_hz", "mel_frequencies", "mel_filterbank", "melspectrogram",
           "power_to_db", "LogMel"]
