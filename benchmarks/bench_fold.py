"""Inference with and without the BatchNorm fold, timed alternately in one process.

    python -m benchmarks.bench_fold [--models reference preset:cpu128] [--repeats 7]

This machine's timings drift by tens of percent from minute to minute, more than the fold
saves, so the two networks are timed in alternation (--repeats rounds of --steps batches each)
and the medians compared: drift then hits both alike.
"""
import argparse

import numpy as np

from .bench import add_network_arguments, networks, sync, time_steps
from experiments.models import build_model
from scratchnet.runtime.backend import check_device
from scratchnet.fusion import fold_batchnorm
from scratchnet.runtime.memory import keep_freed_memory


def compare(shape, cfg, batch, steps, repeats, device):
    """Median eval-mode clips/s of the network as trained and of its folded copy."""
    xp = check_device(device)
    model = build_model(cfg, 50, seed=0).to(device).eval()
    folded = fold_batchnorm(model)
    x = xp.asarray(np.random.default_rng(0).standard_normal((batch,) + tuple(shape)),
                   dtype=xp.float32)
    rates = {"batchnorm": [], "folded": []}
    for r in range(repeats):
        for key, net in (("batchnorm", model), ("folded", folded)):
            # One warm-up pass in the first round: first touch of every buffer.
            seconds = time_steps(lambda: net.forward(x), steps, 1 if r == 0 else 0,
                                 lambda: sync(xp))
            rates[key].append(batch / seconds)
    return {k: float(np.median(v)) for k, v in rates.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(p, ["reference", "preset:cpu128"], steps=5)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    nets = networks()
    keep_freed_memory()
    results = {}
    for name in args.models:
        shape, cfg = nets[name]
        r = compare(shape, cfg, args.batch, args.steps, args.repeats, args.device)
        results[name] = r
        print(f"{name:<14} eval clips/s (median of {args.repeats}): with BatchNorm "
              f"{r['batchnorm']:.1f}, folded {r['folded']:.1f}, "
              f"x{r['folded'] / r['batchnorm']:.3f}")
    return results


if __name__ == "__main__":
    main()
