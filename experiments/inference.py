"""A trained classifier ready for inference: checkpoint + features + model in one object.

Shared by ``experiments.classify`` and ``experiments.visualize``.
"""
import os

import numpy as np

from dsp import LogMel
from dsp.io import audio_blocks
from scratchnet import CheckpointError, load_checkpoint
from scratchnet.runtime.backend import check_device, to_numpy
from scratchnet.fusion import fold_batchnorm
from scratchnet.quantize import quantized_structure
from scratchnet.losses import log_softmax

from .esc50 import CLIP_SECONDS, standardise
from .models import build_model

DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(__file__), "checkpoints", "cpu128bc_fold1.npz")


def probabilities(logits):
    """Softmax rows of a batch of logits, on the host: exp of the loss's log-softmax."""
    return np.exp(log_softmax(to_numpy(logits)))


def evaluate(model, x, xp, shifts=(0,), batch=100):
    """Class probabilities of a set of inputs (N, 1, n_mels, frames) in eval mode, batched and
    averaged over circular time shifts of each clip (``shifts`` in frames; (0,) is the plain
    forward pass); returns (predictions, probabilities) on the host."""
    was_training = model.training
    model.eval()
    probs = []
    for s in range(0, x.shape[0], batch):
        xb = x[s:s + batch]
        probs.append(sum(probabilities(model.forward(xp.roll(xb, k, axis=-1) if k else xb))
                         for k in shifts) / len(shifts))
    model.train(was_training)
    probs = np.concatenate(probs)
    return probs.argmax(axis=1), probs


def ensemble_probabilities(models, log_mels, shift_sets=None):
    """Class probabilities (N, K, host) of log-Mels in dB (N, n_mels, frames), averaged over
    the :class:`Classifier` ``models``, each network on its own standardisation of the clips
    and its own shifts (``shift_sets``, one list per model; default: no shift)."""
    shift_sets = shift_sets or [[0]] * len(models)
    inputs = (clf.xp.asarray(standardise(log_mels, clf.normalization)[:, None])
              for clf in models)
    return sum(evaluate(clf.model, x, clf.xp, shifts)[1]
               for clf, x, shifts in zip(models, inputs, shift_sets)) / len(models)


def write_predictions(path, files, targets, probs):
    """One row per clip, as JSON: its file, true class, predicted class and that class's
    probability; written by train_esc50 for each fold and by evaluate --predictions, so that
    two scorings of a model can be compared clip by clip."""
    import json
    pred = probs.argmax(axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    rows = [dict(file=str(f), target=int(t), predicted=int(k), probability=float(p[k]))
            for f, t, k, p in zip(files, targets, pred, probs)]
    with open(path, "w") as f:
        json.dump(rows, f, indent=0)


def hop_samples(hop_seconds, sr):
    """The hop in samples; a hop that rounds to no sample is refused, not silently widened."""
    hop = int(round(hop_seconds * sr))
    if hop < 1:
        raise ValueError(f"hop of {hop_seconds} s is less than one sample at {sr} Hz")
    return hop


def sliding_windows(blocks, n, hop):
    """Yield (start sample, window of n samples) over a signal given as consecutive blocks:
    windows every ``hop`` samples, plus one ending at the last sample when they miss it; a
    signal of at most n samples gives one window, zero-padded.  Holds at most a window and a
    block."""
    held, held_from, total, start = np.zeros(0, dtype=np.float32), 0, 0, 0
    last = None  # the start of the last window given
    for block in blocks:
        held = np.concatenate([held, np.asarray(block, dtype=np.float32)])  # host: audio
        total += len(block)
        while start + n <= total:
            yield start, held[start - held_from:start - held_from + n].copy()
            last, start = start, start + hop
        # Keep what the next window, or the one ending at the last sample, may need.
        keep_from = max(held_from, min(start, total - n))
        held, held_from = held[keep_from - held_from:], keep_from
    if last is None:  # shorter than a window
        yield 0, np.pad(held, (0, n - total))
    elif last != total - n:
        yield total - n, held[total - n - held_from:].copy()


class Classifier:
    """Log-Mel front end + ResNet from a checkpoint written by ``train_esc50`` (model.npz)."""

    def __init__(self, checkpoint=None, device="cpu"):
        path = checkpoint or DEFAULT_CHECKPOINT
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"checkpoint not found: {path}" + ("" if checkpoint else
                                                   " (the packaged checkpoint is missing; pass "
                                                   "--checkpoint runs/.../model.npz)"))
        state, meta = load_checkpoint(path)
        for key in ("features", "model", "normalization", "classes"):
            if key not in meta:
                raise CheckpointError(f"{path}: not a classifier checkpoint (no {key!r} in "
                                      "its metadata); use a model.npz written by train_esc50")
        self.xp = check_device(device)
        self.path = path
        self.meta = meta
        self.classes = meta["classes"]
        self.features = LogMel(**meta["features"])
        self.sr = meta["features"]["sr"]
        self.window = int(round(CLIP_SECONDS * self.sr))
        self.normalization = meta["normalization"]
        # The time shifts whose predictions the model's reported accuracy averaged, if any.
        self.shifts = meta.get("test_time_shifts", [0])
        try:
            model = build_model(meta["model"], len(self.classes)).to(device)
            if "quantization" in meta:  # an int8 model: the folded network's int8 shells
                self.model = quantized_structure(fold_batchnorm(model), meta["quantization"])
                self.model.load_state_dict(state)
            else:
                model.load_state_dict(state)
                # Inference only: every BatchNorm folded into the convolution before it (the
                # same function, one pass fewer per convolution; scratchnet.fusion).
                self.model = fold_batchnorm(model)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its weights do not fit the network its metadata "
                                  f"describes ({e})") from e

    def logmel(self, clips, standardised=True):
        """(B, window) audio -> (B, 1, n_mels, frames) log-Mels on the device, standardised
        as the model's training inputs were (or in dB, with standardised=False)."""
        x = self.features(self.xp.asarray(clips, dtype=self.xp.float32))
        return (standardise(x, self.normalization) if standardised else x)[:, None]

    def predict(self, clips, batch=16, hop_seconds=1.0):
        """Class probabilities for audio at the model's rate, computed in batches.

        ``clips`` (B, samples) of 5-second clips gives (B, K), a shorter clip zero-padded as
        in training; a 1-D clip of any length gives (K,), the mean over its windows every
        ``hop_seconds`` (:meth:`windows`), as ``classify`` scores a file."""
        clips = np.asarray(clips, dtype=np.float32)  # host: audio comes from the host
        if clips.ndim == 1:
            return self.predict(self.windows(clips, hop_seconds)[0], batch).mean(axis=0)
        if clips.ndim != 2:
            raise ValueError(f"predict takes a clip (samples,) or a batch of clips (B, "
                             f"samples), got shape {clips.shape}")
        if clips.shape[1] > self.window:
            raise ValueError(f"predict: clips of {clips.shape[1]} samples are longer than the "
                             f"model's {self.window} ({CLIP_SECONDS:g} s at {self.sr} Hz); "
                             "pass each as a 1-D array to average its windows")
        if clips.shape[1] < self.window:  # zero-padded, as training pads short clips
            clips = np.pad(clips, ((0, 0), (0, self.window - clips.shape[1])))
        out = [evaluate(self.model, self.logmel(clips[s:s + batch]), self.xp, self.shifts,
                        batch)[1] for s in range(0, len(clips), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def windows(self, y, hop_seconds):
        """Split audio into model-sized windows: a short clip is zero-padded to one window; a
        long one gives windows every ``hop_seconds`` plus one ending at the last sample.
        Returns (windows (W, window), start times in seconds)."""
        pairs = list(sliding_windows([y], self.window, hop_samples(hop_seconds, self.sr)))
        return np.stack([w for _, w in pairs]), [s / self.sr for s, _ in pairs]

    def file_windows(self, path, hop_seconds, block_seconds=30.0):
        """Yield (start in seconds, window) for every window of an audio file, as
        :meth:`windows` cuts the whole file, reading and resampling it block by block:
        memory is bounded by the block, not by the file's length."""
        blocks = audio_blocks(path, sr=self.sr, block_seconds=block_seconds)
        for start, w in sliding_windows(blocks, self.window, hop_samples(hop_seconds, self.sr)):
            yield start / self.sr, w

    def top(self, probs, k):
        order = np.argsort(probs)[::-1][:k]
        return [{"label": self.classes[i], "prob": round(float(probs[i]), 4)} for i in order]
