"""Peak memory and time of classifying long files, as a user runs the command.

    python -m benchmarks.classify_memory --minutes 10 30 60

For each length, a 44.1 kHz stereo 16-bit WAV of noise and tones is written (in blocks: the
file is never held in memory here), then ``python -m experiments.classify FILE`` runs in its
own process; its peak resident memory (the kernel's ru_maxrss for that process) and wall time
are printed.  Memory bounded by the batch shows as a flat peak; time should grow linearly.
The files go to --dir (default: a temporary folder, removed after).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_long_wav(path, minutes, rate=44100, block_seconds=60):
    """A stereo 16-bit WAV of ``minutes`` of noise with a few tones, written block by block."""
    import soundfile as sf
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as f:
        for start in range(0, int(minutes * 60), block_seconds):
            t = start + np.arange(rate * block_seconds) / rate
            tone = 0.2 * np.sin(2 * np.pi * (300 + 50 * (start // 60 % 8)) * t)
            noise = 0.05 * rng.standard_normal((len(t), 2))
            f.write((noise + tone[:, None]).astype(np.float32))


def measure(path, extra=()):
    """(seconds, peak resident MB) of one classify process on ``path``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "experiments.classify", path, *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status:
        raise SystemExit(f"classify failed on {path}: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.classify_memory",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 30, 60])
    p.add_argument("--dir", help="where the WAV files go (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or tmp
        rows = []
        for minutes in args.minutes:
            path = os.path.join(folder, f"long_{minutes:g}min.wav")
            if not os.path.isfile(path):
                write_long_wav(path, minutes)
            seconds, peak = measure(path)
            rows.append((minutes, os.path.getsize(path) / 2 ** 20, seconds, peak))
            print(f"{minutes:6g} min  file {rows[-1][1]:7.0f} MB  classify {seconds:7.1f} s "
                  f"({seconds / minutes:5.2f} s per minute)  peak {peak:6.0f} MB", flush=True)
    return rows


if __name__ == "__main__":
    main()
