"""Classify audio files (or a live PCM stream) with a trained ESC-50 model.

    python -m experiments.classify dog.wav rain.flac --top-k 3
    python -m experiments.classify long_recording.wav --timeline
    python -m experiments.classify *.wav --json
    arecord -f S16_LE -r 16000 -c 1 | python -m experiments.classify --stream

Any file soundfile reads, any rate, mono or stereo, any length: clips shorter than the model's
5-second window are zero-padded; longer ones are cut into windows every --hop seconds and the
window probabilities are averaged.  All windows of all files go through the network in batches.
A file that cannot be read gets an error line naming it; the others are still classified and
the exit status is 1.
"""
from scratchnet.runtime import configure

configure()  # first, before NumPy loads OpenBLAS (scratchnet.runtime)

import argparse
import json
import sys

import numpy as np

from dsp import load_audio

from .inference import open_classifier


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.classify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="audio files")
    p.add_argument("--checkpoint", help="model.npz from train_esc50 (default: the packaged "
                                        "CPU-preset model trained on folds 2-5)")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.add_argument("--timeline", action="store_true", help="also print per-window top labels")
    p.add_argument("--hop", type=float, default=1.0, help="seconds between windows (1.0)")
    p.add_argument("--batch", type=int, default=64, help="windows per forward pass")
    p.add_argument("--stream", action="store_true",
                   help="read raw mono PCM from stdin and print a label per window")
    p.add_argument("--stream-rate", type=int, help="stdin sample rate (default: the model's)")
    p.add_argument("--stream-format", choices=["s16le", "f32le"], default="s16le")
    args = p.parse_args(argv)
    if not args.files and not args.stream:
        p.error("give audio files, or --stream to read PCM from stdin")
    if args.top_k < 1:
        p.error("--top-k must be at least 1")
    return args


def classify_files(clf, paths, top_k, hop, batch, timeline):
    """Yield one result dict per path, in order: {"file", "top"[, "timeline"]} or
    {"file", "error"}.  Windows of all readable files are batched together."""
    loaded, windows, owners, starts = {}, [], [], []
    for i, path in enumerate(paths):
        try:
            y, _ = load_audio(path, sr=clf.sr)
        except (OSError, ValueError) as e:
            loaded[i] = {"file": path, "error": str(e)}
            continue
        w, s = clf.windows(y, hop)
        windows.append(w)
        owners += [i] * len(w)
        starts += s
    probs = clf.predict(np.concatenate(windows), batch) if windows else np.zeros((0, 0))
    owners = np.asarray(owners)  # host: a list of file indices
    for i, path in enumerate(paths):
        if i in loaded:
            yield loaded[i]
            continue
        mine = np.flatnonzero(owners == i)
        result = {"file": path, "top": clf.top(probs[mine].mean(axis=0), top_k)}
        if timeline:
            result["timeline"] = [dict(start=round(starts[j], 3),
                                       end=round(starts[j] + clf.window / clf.sr, 3),
                                       **clf.top(probs[j], 1)[0]) for j in mine]
        yield result


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
    until 5 seconds have arrived) is classified and one line printed."""
    from dsp import resample
    source = source or sys.stdin.buffer
    rate = args.stream_rate or clf.sr
    dtype, width = (np.int16, 2) if args.stream_format == "s16le" else (np.float32, 4)
    hop = max(1, int(round(args.hop * rate)))
    window_in = int(round(5.0 * rate))
    buffer = np.zeros(0, dtype=np.float32)
    received = 0
    while True:
        chunk = source.read(hop * width)
        if not chunk:
            break
        samples = np.frombuffer(chunk[:len(chunk) // width * width], dtype=dtype)
        samples = samples.astype(np.float32) / (32768.0 if dtype == np.int16 else 1.0)
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


def main(argv=None):
    args = parse_args(argv)
    clf = open_classifier(args.checkpoint, args.device)
    if clf is None:
        return 2
    if args.stream:
        stream(clf, args)
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
    sys.exit(main())
