"""Classify audio files (or a live PCM stream) with a trained ESC-50 model.

    python -m experiments.classify dog.wav rain.flac --top-k 3
    python -m experiments.classify long_recording.wav --timeline
    python -m experiments.classify *.wav --json
    arecord -f S16_LE -r 16000 -c 1 | python -m experiments.classify --stream

Any file soundfile reads, any rate, mono or stereo, any length: clips shorter than the model's
5-second window are zero-padded; longer ones are cut into windows every --hop seconds and the
window probabilities are averaged.  Files are read and resampled block by block and their
windows go through the network in batches of --batch, so memory is bounded by the batch, not
by the length of a file.  A file that cannot be read gets an error line naming it; the others
are still classified and the exit status is 1.
"""
import collections
import json
import sys

import numpy as np

from dsp import AudioError

from . import cli
from .inference import Classifier, hop_samples


def parse_args(argv=None):
    p = cli.parser("experiments.classify", __doc__)
    p.add_argument("files", nargs="*", help="audio files")
    p.add_argument("--checkpoint", type=cli.existing_file,
                   help="model.npz from train_esc50 (default: the packaged CPU-preset model "
                        "trained on folds 2-5)")
    p.add_argument("--top-k", type=cli.positive_int, default=5,
                   help="classes shown per file (5)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.add_argument("--timeline", action="store_true", help="also print per-window top labels")
    p.add_argument("--hop", type=cli.positive_float, default=1.0,
                   help="seconds between windows (1.0)")
    p.add_argument("--batch", type=cli.positive_int, default=16,
                   help="windows per forward pass (16: the peak memory grows with it, and "
                        "larger batches measured no faster; docs/usage.md)")
    p.add_argument("--stream", type=cli.stdin_or_file, nargs="?", const="-", metavar="SOURCE",
                   help="classify raw mono PCM from SOURCE (a file, or - and by default "
                        "stdin) and print a label per --hop seconds")
    p.add_argument("--stream-rate", type=cli.positive_int,
                   help="the stream's sample rate in Hz (default: the model's)")
    p.add_argument("--stream-format", choices=["s16le", "f32le"], default="s16le",
                   help="the stream's samples: 16-bit integers (s16le, the default) or 32-bit "
                        "floats in [-1, 1] (f32le), little-endian")
    args = p.parse_args(argv)
    if args.stream is not None and args.files:
        p.error(f"--stream reads one source; got files too ({' '.join(args.files)}): give "
                "--stream FILE, or the files without --stream")
    if not args.files and args.stream is None:
        p.error("give audio files, or --stream to read PCM from stdin")
    return args


def classify_files(clf, paths, top_k, hop, batch, timeline):
    """Yield one result dict per path, in order: {"file", "top"[, "timeline"]} or
    {"file", "error"}.  Each file is read block by block (Classifier.file_windows) and the
    windows of consecutive files share batches of ``batch``."""
    queue = collections.deque()  # files not yet reported, in order
    windows, owners = [], []     # the batch being filled, and each window's file

    def run_batch():
        for state, probs in zip(owners, clf.predict(np.stack(windows), batch)):
            state["probs"].append(probs)
        windows.clear()
        owners.clear()

    def finished():
        while queue and queue[0]["read"] and len(queue[0]["probs"]) == len(queue[0]["starts"]):
            yield report(queue.popleft())

    def report(state):
        if "error" in state:
            return {"file": state["file"], "error": state["error"]}
        return file_result(clf, state["file"], state["starts"], np.stack(state["probs"]),
                           top_k, timeline)

    for path in paths:
        state = dict(file=path, probs=[], starts=[], read=False)
        queue.append(state)
        try:
            for start, window in clf.file_windows(path, hop):
                state["starts"].append(start)
                windows.append(window)
                owners.append(state)
                if len(windows) == batch:
                    run_batch()
                    yield from finished()
        except (OSError, AudioError) as e:
            state["error"] = str(e)
        state["read"] = True
        yield from finished()
    if windows:
        run_batch()
    yield from finished()


def file_result(clf, path, starts, probs, top_k, timeline):
    """{"file", "top"[, "timeline"]} of a file from its windows' start times (seconds) and
    probabilities (W, K): the top classes of their mean, and each window's top class."""
    result = {"file": path, "top": clf.top(probs.mean(axis=0), top_k)}
    if timeline:
        result["timeline"] = [dict(start=round(s, 3), end=round(s + clf.window / clf.sr, 3),
                                   **clf.top(p, 1)[0]) for s, p in zip(starts, probs)]
    return result


def print_result(result, as_json):
    if as_json:
        print(json.dumps(result), flush=True)
        return
    if "error" in result:
        return
    print(result["file"])
    for entry in result["top"]:
        print(f"  {entry['label']:<20s} {entry['prob']:.3f}")
    for w in result.get("timeline", []):
        print(f"    {w['start']:7.2f}-{w['end']:7.2f} s  {w['label']:<20s} {w['prob']:.3f}")


def stream(clf, args, source=None):
    """Classify a live stream: every --hop seconds, the latest 5-second window (zero-padded
    until 5 seconds have arrived) is classified and one line printed.  Samples that cannot be
    audio of the declared format (not finite, or floats far outside [-1, 1]) stop it with an
    error naming the format."""
    from dsp import resample
    rate = args.stream_rate or clf.sr
    window_in = int(round(5.0 * rate))
    buffer = np.zeros(0, dtype=np.float32)
    received = 0
    for samples in pcm_blocks(source, args.stream_format, rate, hop_samples(args.hop, rate)):
        received += len(samples)
        buffer = np.concatenate([buffer, samples])[-window_in:]
        y = resample(buffer, rate, clf.sr) if rate != clf.sr else buffer
        probs = clf.predict(clf.windows(y, 5.0)[0][-1:])[0]
        best = clf.top(probs, args.top_k)
        t = received / rate
        if args.json:
            print(json.dumps({"time": round(t, 3), "top": best}), flush=True)
        else:
            print(f"{t:8.2f} s  " + "  ".join(f"{b['label']} {b['prob']:.2f}" for b in best),
                  flush=True)


# Float PCM is meant to lie in [-1, 1]; a little overshoot is real audio, values beyond this
# are not (s16le read as f32le gives values like 1e-41 or 1e+30, and NaN).
FLOAT_LIMIT = 8.0


def pcm_blocks(source, fmt, rate, frames):
    """Raw mono PCM read from ``source`` ``frames`` samples at a time (s16le or f32le at
    ``rate`` Hz), as float32 blocks, each checked by :func:`check_stream_samples`."""
    dtype, width = (np.int16, 2) if fmt == "s16le" else (np.float32, 4)
    received = 0
    while True:
        chunk = source.read(frames * width)
        if not chunk:
            return
        samples = np.frombuffer(chunk[:len(chunk) // width * width], dtype=dtype)
        samples = samples.astype(np.float32) / (32768.0 if dtype == np.int16 else 1.0)
        check_stream_samples(samples, received / rate, fmt)
        received += len(samples)
        yield samples


def check_stream_samples(samples, seconds, fmt):
    """Raise CommandError when stream samples cannot be audio in the format ``fmt``."""
    bad = ~np.isfinite(samples)
    if bad.any():
        raise cli.CommandError(f"stream: non-finite samples (NaN or infinity) from "
                               f"{seconds:.2f} s on: the data is not {fmt}; 16-bit PCM needs "
                               "--stream-format s16le")
    if fmt == "f32le" and np.abs(samples).max(initial=0.0) > FLOAT_LIMIT:
        raise cli.CommandError(f"stream: samples up to {np.abs(samples).max():.3g} from "
                               f"{seconds:.2f} s on, far outside the [-1, 1] of float PCM: the "
                               "data is not f32le; 16-bit PCM needs --stream-format s16le")


def main(argv=None):
    args = parse_args(argv)
    clf = Classifier(args.checkpoint, args.device)
    try:  # the hop in samples depends on the model's rate, known once it is loaded
        hop_samples(args.hop, args.stream_rate or clf.sr)
    except ValueError as e:
        raise cli.CommandError(f"--hop: {e}") from e
    if args.stream is not None:
        if args.stream == "-":
            stream(clf, args, sys.stdin.buffer)
        else:
            with open(args.stream, "rb") as source:
                stream(clf, args, source)
        return 0
    failed = 0
    for result in classify_files(clf, args.files, args.top_k, args.hop, args.batch,
                                 args.timeline):
        if "error" in result:
            failed += 1
            print(f"error: {result['error']}", file=sys.stderr)
        print_result(result, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
