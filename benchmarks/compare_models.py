"""The ResNet and the transformer side by side: parameters, forward FLOPs per clip,
single-clip latency as deployed, peak memory of training, and minutes per epoch of real runs.

    python -m benchmarks.compare_models --presets cpu128bc ast-tiny \
        --runs cpu128bc=results/cpu128bc-5fold ast-tiny=results/ast-tiny-5fold

- FLOPs: multiply-adds x 2 of the forward pass of one 5-second clip: every convolution and the
  classifier (benchmarks.bench.forward_flops) for the ResNet; the patch embedding, each
  layer's projections, its T^2 terms (scores and weighted values) and MLP, and the head for
  the transformer (T: the patches and the class token).
- Latency: one clip from its waveform to the probabilities (the log-Mel front end, then the
  network in eval mode with BatchNorm folded, as experiments.inference deploys it), median
  of --runs, the presets alternating.
- Peak memory: the resident set of a fresh process that runs --steps training steps at
  batch 32 (ru_maxrss; Python, NumPy and the network included).
- Minutes per epoch: the median epoch of each run folder's metrics.json files (the epochs'
  wall time as trained, scoring included where an epoch scored).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from dsp import LogMel
from experiments.esc50 import CLIP_SECONDS, NUM_CLASSES
from experiments.models import PRESETS, build_model

from .bench import forward_flops


def frames_of(features):
    return LogMel(**features).num_frames(int(round(CLIP_SECONDS * features["sr"])))


def transformer_flops(cfg, frames, n_mels, classes=NUM_CLASSES):
    """Multiply-adds x 2 of an AudioSpectrogramTransformer's forward pass on one clip."""
    k, s, d = cfg["patch"], cfg["patch_stride"], cfg["dim"]
    patches = ((n_mels - k) // s + 1) * ((frames - k) // s + 1)
    t, mlp = patches + 1, cfg["mlp_ratio"] * d
    embedding = 2 * k * k * d * patches
    per_layer = 2 * t * d * (3 * d + d + 2 * mlp) + 2 * 2 * t * t * d
    return embedding + cfg["depth"] * per_layer + 2 * d * classes


def flops(preset):
    p = PRESETS[preset]
    f, cfg = p["features"], p["model"]
    if cfg.get("kind", "resnet") == "ast":
        return transformer_flops(cfg, frames_of(f), f["n_mels"])
    return forward_flops((1, f["n_mels"], frames_of(f)), cfg)


def deployed(preset):
    """(classify one waveform -> probabilities, parameter count) as experiments.inference
    runs a model: the front end, standardisation, the folded network in eval mode."""
    from experiments.inference import probabilities
    from scratchnet import fold_batchnorm
    p = PRESETS[preset]
    model = build_model(p["model"], NUM_CLASSES, seed=0)
    count = int(sum(q.data.size for q in model.parameters()))
    net = fold_batchnorm(model).eval()
    front = LogMel(**p["features"])

    def classify(wave):
        x = front(wave)[None, None]
        return probabilities(net.forward((x - x.mean()) / (x.std() + 1e-6)))
    return classify, count


def peak_memory_mb(preset, steps):
    """ru_maxrss of a fresh process training ``steps`` steps at batch 32, in MB."""
    code = ("import resource, numpy as np\n"
            "from benchmarks.compare_models import train_steps\n"
            f"train_steps({preset!r}, {steps})\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__)) or ".")
    return float(out.stdout.strip().splitlines()[-1])


def train_steps(preset, steps, batch=32):
    from scratchnet import AdamW, SoftmaxCrossEntropy
    p = PRESETS[preset]
    f = p["features"]
    model = build_model(p["model"], NUM_CLASSES, seed=0, input_grad=False)
    optimizer = AdamW(model, lr=1e-3)
    loss = SoftmaxCrossEntropy(0.1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, f["n_mels"], frames_of(f))).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, batch)
    for _ in range(steps):
        optimizer.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        optimizer.step()


def minutes_per_epoch(folder):
    """(median minutes per epoch, the number of epochs) over a run folder's metrics.json."""
    seconds = [r["seconds"] for path in sorted(glob.glob(os.path.join(folder, "fold*",
                                                                        "metrics.json")))
               for r in json.load(open(path))]
    return (statistics.median(seconds) / 60, len(seconds)) if seconds else (None, 0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["cpu128bc", "ast-tiny"],
                   choices=sorted(PRESETS))
    p.add_argument("--runs", nargs="*", default=[], metavar="PRESET=FOLDER")
    p.add_argument("--repeats", type=int, default=20, help="latency runs per preset")
    p.add_argument("--steps", type=int, default=2, help="training steps for the peak memory")
    args = p.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.runs)
    engines = {name: deployed(name) for name in args.presets}
    waves = {name: np.random.default_rng(1).uniform(
        -0.5, 0.5, int(CLIP_SECONDS * PRESETS[name]["features"]["sr"])).astype(np.float32)
        for name in args.presets}
    times = {name: [] for name in args.presets}
    for name in args.presets:  # warm-up
        engines[name][0](waves[name])
    for _ in range(args.repeats):
        for name in args.presets:
            t0 = time.perf_counter()
            engines[name][0](waves[name])
            times[name].append(time.perf_counter() - t0)
    rows = {}
    print(f"{'preset':<10} {'parameters':>11} {'GFLOPs/clip':>12} {'latency ms':>11} "
          f"{'train peak MB':>14} {'min/epoch':>10}")
    for name in args.presets:
        minutes, epochs = minutes_per_epoch(runs[name]) if name in runs else (None, 0)
        row = dict(parameters=engines[name][1], gflops=flops(name) / 1e9,
                   latency_ms=1000 * statistics.median(times[name]),
                   peak_mb=peak_memory_mb(name, args.steps), minutes_per_epoch=minutes,
                   epochs_timed=epochs)
        rows[name] = row
        shown = f"{minutes:.2f}" if minutes is not None else "-"
        print(f"{name:<10} {row['parameters']:>11,} {row['gflops']:>12.2f} "
              f"{row['latency_ms']:>11.1f} {row['peak_mb']:>14.0f} {shown:>10}")
    return rows


if __name__ == "__main__":
    main()
