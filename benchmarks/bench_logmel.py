"""Log-Mel throughput on all ESC-50 clips: dsp.LogMel (batched) against librosa (per clip).

    python -m benchmarks.bench_logmel [--data DIR] [--batch 8] [--rounds 3] [--device cpu|gpu]

Each side is measured as a user's plain script gets it: in a fresh process that imports NumPy
first and sets nothing up (no malloc or BLAS settings), one process per side and round, the
sides alternating.  Why separate processes: glibc's heap is shared within a process, and what
one side leaves in it changes the other's page faults (librosa ran at 450 clips/s beside one
version of dsp and at 750 alone).  Audio is decoded once, outside the timings, and handed to
the processes as a .npy file.  Each process times a warm-up pass and then one pass over all
clips; a side's figure is its best round, and the range of the per-round ratios is printed
beside it.  librosa is optional (pip install .[bench]).
"""
import numpy as np  # first, as a user's script does

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402


def _pass(side, waves, cfg, batch, device):
    """Seconds for one pass of ``side`` over all of ``waves`` (after a warm-up pass)."""
    if side == "librosa":
        import librosa

        def run():
            for y in waves:
                librosa.power_to_db(librosa.feature.melspectrogram(y=y, **cfg), ref=1.0,
                                    top_db=80.0)
    else:
        import dsp
        from scratchnet.runtime.backend import check_device
        xp = check_device(device)
        logmel = dsp.LogMel(**cfg)
        clips = xp.asarray(waves)

        def run():
            for s in range(0, len(clips), batch):
                logmel(clips[s:s + batch])
            if xp is not np:
                xp.cuda.Stream.null.synchronize()
    run()  # warm-up: filterbank, FFT plans, the allocator
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def _child(conn, side, path, cfg, batch, device):
    try:
        conn.send(_pass(side, np.load(path), cfg, batch, device))
    except Exception as e:  # report, don't hang the parent
        conn.send(f"{type(e).__name__}: {e}")


def in_fresh_process(side, path, cfg, batch, device):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, side, path, cfg, batch, device))
    proc.start()
    result = parent.recv()
    proc.join()
    if isinstance(result, str):
        raise SystemExit(f"{side}: {result}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_logmel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--sr", type=int, default=16000)
    p.add_argument("--n-fft", type=int, default=1024)
    p.add_argument("--hop", type=int, default=320)
    p.add_argument("--n-mels", type=int, default=64)
    args = p.parse_args(argv)
    import dsp
    from experiments import esc50
    try:
        import librosa
    except ImportError:
        librosa = None
    root = esc50.find_dataset(args.data)
    t = time.perf_counter()
    waves = esc50.load_waveforms(root, esc50.read_metadata(root), args.sr, progress=False)
    n = len(waves)
    print(f"decoded {n} clips in {time.perf_counter() - t:.1f} s (not part of the timings)")
    cfg = dict(sr=args.sr, n_fft=args.n_fft, hop_length=args.hop, n_mels=args.n_mels)
    sides = ["dsp"] + (["librosa"] if librosa is not None else [])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "waves.npy")
        np.save(path, waves)
        rounds = [{side: in_fresh_process(side, path, cfg, args.batch, args.device)
                   for side in sides} for _ in range(args.rounds)]
    t_ours = min(r["dsp"] for r in rounds)
    print(f"dsp.LogMel ({args.device}, batch {args.batch}): {n / t_ours:.0f} clips/s "
          f"({t_ours:.2f} s for {n} clips, best of {args.rounds} processes)")
    if librosa is None:
        print("librosa not installed: no reference timing (pip install .[bench])")
        return
    t_ref = min(r["librosa"] for r in rounds)
    ratios = [r["librosa"] / r["dsp"] for r in rounds]
    print(f"librosa {librosa.__version__} (per clip): {n / t_ref:.0f} clips/s "
          f"({t_ref:.2f} s for {n} clips, best of {args.rounds} processes)")
    print(f"speed-up: {t_ref / t_ours:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    ours = dsp.LogMel(**cfg)(waves[:1])[0]
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=waves[0], **cfg), top_db=80.0)
    print(f"max |difference| on clip 0: {np.abs(ours - ref).max():.2e} dB")


if __name__ == "__main__":
    main()
