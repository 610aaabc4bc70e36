"""Log-Mel throughput on all ESC-50 clips: dsp.LogMel (batched) against librosa (per clip).

    python -m benchmarks.bench_logmel [--data DIR] [--batch 64] [--device cpu|gpu]

Audio is decoded once, outside the timings; each timing is the best of --repeat runs over all
clips.  librosa (optional, pip install .[bench]) is measured in the same run when installed.
"""
from scratchnet.runtime import configure

configure()  # first, before NumPy loads OpenBLAS (scratchnet.runtime)

import argparse
import time

import numpy as np

import dsp
from experiments import esc50
from scratchnet.runtime.backend import check_device
from scratchnet.runtime.memory import keep_freed_memory


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--sr", type=int, default=16000)
    p.add_argument("--n-fft", type=int, default=1024)
    p.add_argument("--hop", type=int, default=320)
    p.add_argument("--n-mels", type=int, default=64)
    p.add_argument("--malloc", choices=["keep", "default"], default="keep",
                   help="keep: glibc keeps freed memory (scratchnet.runtime.memory); applies to this "
                        "whole process, librosa included")
    args = p.parse_args(argv)
    if args.malloc == "keep":
        keep_freed_memory()
    xp = check_device(args.device)
    root = esc50.find_dataset(args.data)
    rows = esc50.read_metadata(root)
    t = time.perf_counter()
    waves = esc50.load_waveforms(root, rows, args.sr, progress=False)
    n = len(waves)
    print(f"decoded {n} clips in {time.perf_counter() - t:.1f} s (not part of the timings)")
    logmel = dsp.LogMel(sr=args.sr, n_fft=args.n_fft, hop_length=args.hop, n_mels=args.n_mels)
    device_waves = xp.asarray(waves)

    def ours():
        for s in range(0, n, args.batch):
            out = logmel(device_waves[s:s + args.batch])
        if xp is not np:
            xp.cuda.Stream.null.synchronize()
        return out

    ours()  # warm-up: filterbank, FFT plans, allocator
    t_ours = best_of(ours, args.repeat)
    print(f"dsp.LogMel ({args.device}, batch {args.batch}): {n / t_ours:.0f} clips/s "
          f"({t_ours:.2f} s for {n} clips)")
    try:
        import librosa
    except ImportError:
        print("librosa not installed: no reference timing (pip install .[bench])")
        return
    cfg = dict(sr=args.sr, n_fft=args.n_fft, hop_length=args.hop, n_mels=args.n_mels)

    def reference():
        for y in waves:
            librosa.power_to_db(librosa.feature.melspectrogram(y=y, **cfg), ref=1.0,
                                top_db=80.0)

    reference()
    t_ref = best_of(reference, args.repeat)
    print(f"librosa {librosa.__version__} (per clip): {n / t_ref:.0f} clips/s "
          f"({t_ref:.2f} s for {n} clips)")
    print(f"speed-up: {t_ref / t_ours:.2f}x")
    sample = logmel(waves[:1])[0]
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=waves[0], **cfg), top_db=80.0)
    print(f"max |difference| on clip 0: {np.abs(sample - ref).max():.2e} dB")


if __name__ == "__main__":
    main()
