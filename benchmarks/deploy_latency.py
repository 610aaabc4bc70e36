"""Single-clip latency and size of a model as deployed: this package's engine (float and int8)
and onnxruntime (the float graph and the QDQ int8 graph), from raw audio to probabilities.

    python -m benchmarks.deploy_latency --float experiments/checkpoints/cpu128bc_fold1.npz \
        --int8 model-int8.npz --onnx model.onnx --onnx-int8 model-int8.onnx

Each engine classifies the same 5-second clip --runs times after one warm-up; the median and
the spread of the wall times are printed, with the file's size.  Rounds alternate between the
engines, so that a change in the machine's load falls on all of them alike.
"""
import argparse
import os
import statistics
import time

import numpy as np


def engines(args):
    """name -> (classify one clip (1, samples) -> probabilities, file)."""
    from experiments.inference import Classifier
    out = {}
    for name, path in (("scratchnet float", args.float), ("scratchnet int8", args.int8)):
        if path:
            clf = Classifier(path)
            out[name] = (lambda x, clf=clf: clf.predict(x), path)
    for name, path in (("onnxruntime float", args.onnx), ("onnxruntime int8", args.onnx_int8)):
        if path:
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            out[name] = (lambda x, s=session: s.run(None, {"audio": x})[0], path)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.deploy_latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--float", help="a float model.npz")
    p.add_argument("--int8", help="an int8 model.npz (experiments.quantize)")
    p.add_argument("--onnx", help="a float .onnx (experiments.export)")
    p.add_argument("--onnx-int8", help="an int8 .onnx")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="onnxruntime's threads (default: every core, as ours)")
    args = p.parse_args(argv)
    runners = engines(args)
    clip = (0.1 * np.random.default_rng(0).standard_normal((1, 80000))).astype(np.float32)
    times = {name: [] for name in runners}
    for run, _ in runners.values():
        run(clip)  # warm-up: first-call allocations, onnxruntime's graph optimisation
    for _ in range(args.runs):
        for name, (run, _) in runners.items():
            t0 = time.perf_counter()
            run(clip)
            times[name].append(1000 * (time.perf_counter() - t0))
    print(f"{'engine':<20} {'median ms':>10} {'min-max ms':>16} {'file MB':>8}")
    rows = {}
    for name, (_, path) in runners.items():
        t = times[name]
        rows[name] = dict(median_ms=statistics.median(t), min_ms=min(t), max_ms=max(t),
                          file_mb=os.path.getsize(path) / 2 ** 20)
        print(f"{name:<20} {rows[name]['median_ms']:>10.1f} "
              f"{min(t):>7.1f}-{max(t):<8.1f} {rows[name]['file_mb']:>8.2f}")
    return rows


if __name__ == "__main__":
    main()
