"""Listen for emergencies and noise: events from a live stream or a recording, as JSON lines.

    arecord -q -f S16_LE -r 16000 -c 1 -t raw | python -m experiments.monitor
    python -m experiments.monitor street.wav --watch siren=0.4 car_horn dog=0.7
    python -m experiments.monitor street.flac --onnx model.onnx

SOURCE is an audio file (any format soundfile reads, any rate), or - (the default) for raw
mono PCM on stdin: --format s16le (the default) or f32le, at --rate Hz (default: the model's;
another rate is resampled as it arrives).  5-second windows slide every --hop seconds; each
watched class opens an event when its probability reaches its threshold and closes it when it
falls below hysteresis x threshold (experiments.deploy.events: one sound, one event).

Standard output carries only events, one JSON object per line:
    {"start": 12.0, "end": 19.0, "class": "siren", "confidence": 0.91, "dbfs": -18.2}
(start and end in seconds from the stream's start, dbfs the loudest window's RMS level); an
event still open when the stream ends is written then.  Progress and the real-time factor go
to stderr.  --onnx runs an exported model (experiments.export) on onnxruntime instead of this
package's engine.
"""
import argparse
import json
import sys
import time

import numpy as np

from dsp.io import audio_blocks, resample_blocks

from . import cli
from .classify import pcm_blocks
from .deploy.events import HYSTERESIS, WATCH, EventDetector, dbfs
from .inference import Classifier, hop_samples, sliding_windows


def watch_entry(text):
    """CLASS or CLASS=THRESHOLD."""
    name, _, value = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected CLASS or CLASS=THRESHOLD, got {text!r}")
    if not value:
        return name, None
    try:
        threshold = float(value)
    except ValueError:
        threshold = float("nan")
    if not 0 < threshold <= 1:
        raise argparse.ArgumentTypeError(f"{name}: a threshold is a probability in (0, 1], "
                                             f"got {value!r}")
    return name, threshold


def parse_args(argv=None):
    p = cli.parser("experiments.monitor", __doc__)
    p.add_argument("source", type=cli.stdin_or_file, nargs="?", default="-",
                   help="an audio file, or - for raw PCM on stdin (the default)")
    p.add_argument("--checkpoint", type=cli.existing_file,
                   help="model.npz, float or int8 (default: the packaged model)")
    p.add_argument("--onnx", type=cli.existing_file, metavar="MODEL",
                   help="an exported .onnx model, run on onnxruntime")
    p.add_argument("--watch", type=watch_entry, nargs="+", metavar="CLASS[=P]",
                   help="the classes to watch, each with its opening probability (default: "
                        + ", ".join(f"{k}={v}" for k, v in WATCH.items()) + ")")
    p.add_argument("--threshold", type=cli.positive_float, default=0.5,
                   help="the opening probability of a --watch class given without one (0.5)")
    p.add_argument("--hysteresis", type=cli.positive_float, default=HYSTERESIS,
                   help=f"an event stays open down to this fraction of its threshold "
                        f"({HYSTERESIS})")
    p.add_argument("--hop", type=cli.positive_float, default=1.0,
                   help="seconds between windows (1.0)")
    p.add_argument("--rate", type=cli.positive_int, help="stdin's sample rate (default: the "
                                                         "model's)")
    p.add_argument("--format", choices=["s16le", "f32le"], default="s16le",
                   help="stdin's samples (s16le)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    if args.onnx and args.checkpoint:
        p.error("--onnx and --checkpoint name two models; give one")
    if args.threshold > 1:
        p.error(f"argument --threshold: a probability in (0, 1], got {args.threshold}")
    if args.hysteresis > 1:
        p.error(f"argument --hysteresis: a fraction in (0, 1], got {args.hysteresis}")
    return args


class ScratchnetEngine:
    """This package's classifier."""

    def __init__(self, checkpoint, device):
        self.clf = Classifier(checkpoint, device)
        self.sr, self.window, self.classes = self.clf.sr, self.clf.window, self.clf.classes

    def predict(self, windows):
        return self.clf.predict(np.stack(windows))


class OnnxEngine:
    """An exported graph on onnxruntime alone: audio [batch, samples] -> probabilities."""

    def __init__(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise cli.CommandError("--onnx needs onnxruntime: pip install -e \".[export]\"") \
                from None
        try:
            self.session = onnxruntime.InferenceSession(path,
                                                        providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own errors for a file it cannot load
            raise cli.CommandError(f"{path}: not an ONNX model onnxruntime can run ({e})")
        meta = self.session.get_modelmeta().custom_metadata_map
        if not {"classes", "sample_rate", "samples"} <= set(meta):
            raise cli.CommandError(f"{path}: not a model of experiments.export (its metadata "
                                   "lacks classes, sample_rate, samples)")
        self.classes = json.loads(meta["classes"])
        self.sr, self.window = json.loads(meta["sample_rate"]), json.loads(meta["samples"])

    def predict(self, windows):
        return self.session.run(["probabilities"], {"audio": np.stack(windows)})[0]


def stdin_blocks(source, fmt, rate, sr, block_seconds=0.25):
    """Raw PCM from ``source`` as float blocks at the model's rate ``sr``."""
    frames = max(1, int(rate * block_seconds))
    return resample_blocks(pcm_blocks(source, fmt, rate, frames), rate, sr, frames)


def monitor(engine, blocks, detector, hop_seconds, live, progress, out=sys.stdout):
    """Run windows of ``blocks`` through ``engine`` and write each closed event as a JSON
    line; returns the events.  Live streams run each window as it completes; files in
    batches."""
    hop = hop_samples(hop_seconds, engine.sr)
    batch = 1 if live else 16
    events, pending = [], []
    t0, last_report, audio_seconds = time.perf_counter(), 0.0, 0.0

    def run(windows):
        nonlocal audio_seconds, last_report
        probs = engine.predict([w for _, w in windows])
        for (start, w), p in zip(windows, probs):
            s = start / engine.sr
            for event in detector.update(s, s + engine.window / engine.sr, p, dbfs(w)):
                write(event)
            audio_seconds = s + hop_seconds
        elapsed = time.perf_counter() - t0
        if progress and elapsed - last_report >= 2.0:
            last_report = elapsed
            print(f"monitor: {audio_seconds:.0f} s of audio, real-time factor "
                  f"{elapsed / max(audio_seconds, 1e-9):.3f}", file=sys.stderr, flush=True)

    def write(event):
        events.append(event)
        print(json.dumps(event), file=out, flush=True)

    for window in sliding_windows(blocks, engine.window, hop):
        pending.append(window)
        if len(pending) == batch:
            run(pending)
            pending = []
    if pending:
        run(pending)
    for event in detector.finish():
        write(event)
    if progress:
        elapsed = time.perf_counter() - t0
        print(f"monitor: done, {len(events)} event(s); {elapsed:.1f} s for the stream "
              f"(real-time factor {elapsed / max(audio_seconds, 1e-9):.3f})", file=sys.stderr)
    return events


def main(argv=None):
    args = parse_args(argv)
    engine = OnnxEngine(args.onnx) if args.onnx else ScratchnetEngine(args.checkpoint,
                                                                       args.device)
    watch = WATCH if args.watch is None else {
        name: args.threshold if threshold is None else threshold
        for name, threshold in args.watch}
    try:
        detector = EventDetector(engine.classes, watch, args.hysteresis)
        hop_samples(args.hop, engine.sr)
    except ValueError as e:
        raise cli.CommandError(f"--watch/--hop: {e}") from e
    if args.source == "-":
        blocks = stdin_blocks(sys.stdin.buffer, args.format, args.rate or engine.sr,
                              engine.sr)
    else:
        blocks = audio_blocks(args.source, sr=engine.sr)
    monitor(engine, blocks, detector, args.hop, args.source == "-", not args.quiet)
    return 0


if __name__ == "__main__":
    cli.run(main)
