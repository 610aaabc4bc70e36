"""Where a training step goes, layer by layer: each leaf layer's forward and backward timed in
place.

    python -m benchmarks.profile_layers [--models preset:cpu128] [--steps 6] [--inference | --eval]

cProfile (``benchmarks.bench --profile``) charges time to functions, so the stem's BatchNorm
and stage 4's are one line; here every leaf layer (Conv2d, BatchNorm2d, ReLU, MaxPool2d, ...)
has its forward and backward wrapped in a timer, and the times are summed by (stage, layer
kind, direction): ``layer1 Conv2d backward``.  The rest of the step (loss, optimiser, zeroing the
gradients) is the step's time minus the layers'.  The timers wrap whole calls, so they cost
nothing inside the layers; on a GPU each call is synchronised first, which serialises the
device and makes the shares those of a synchronous run.  ``--inference`` times the forward
pass of the network as it is deployed instead (eval mode, BatchNorm folded into the
convolutions: scratchnet.fold_batchnorm); ``--eval`` the eval-mode forward pass with
BatchNorm unfolded, as benchmarks.shape_set measures inference.
"""
import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

import scratchnet as sn
from .bench import add_network_arguments, networks, sync
from experiments.models import build_model
from scratchnet.runtime.backend import check_device
from scratchnet.kernels import stem
from scratchnet.runtime.memory import keep_freed_memory


def leaf_layers(layer, prefix=""):
    """(dotted name, layer) for every layer without children, in forward order."""
    children = list(layer.named_children())
    if not children:
        yield prefix, layer
    for name, child in children:
        yield from leaf_layers(child, f"{prefix}.{name}" if prefix else name)


# The stem's BatchNorm, max-pool and ReLU run as one kernel (scratchnet.kernels.stem), timed
# as one part of the stem.
STEM_TAIL = "BatchNorm2d+MaxPool2d+ReLU"


class Timers:
    """Wrap callables so that their seconds add into ``totals`` under a key; a call made
    inside another timed call is counted once, by the outer one.  On a GPU each timed call is
    synchronised first."""

    def __init__(self, totals, xp):
        self.totals, self.xp, self.depth = totals, xp, 0

    def wrap(self, call, key):
        def timed(*args, **kwargs):
            if self.depth:
                return call(*args, **kwargs)
            self.depth += 1
            try:
                sync(self.xp)
                t = time.perf_counter()
                out = call(*args, **kwargs)
                sync(self.xp)
                self.totals[key] += time.perf_counter() - t
            finally:
                self.depth -= 1
            return out
        return timed


def time_layers(model, timers):
    """Wrap each leaf layer's forward and backward so that their seconds add into the totals,
    keyed by (stage, layer class, direction): 'layer1.0.downsample.0' -> ('layer1', 'Conv2d')."""
    for name, layer in leaf_layers(model):
        for method, direction in (("forward", "forward"), ("backward", "backward")):
            key = (name.split(".")[0], type(layer).__name__, direction)
            setattr(layer, method, timers.wrap(getattr(layer, method), key))


@contextmanager
def stem_kernels_timed(timers):
    """Inside the block the stem's fused kernel is timed (STEM_TAIL)."""
    saved = {name: getattr(stem, name) for name in ("forward", "backward")}
    for name, call in saved.items():
        setattr(stem, name, timers.wrap(call, ("stem", STEM_TAIL, name)))
    try:
        yield
    finally:
        for name, call in saved.items():
            setattr(stem, name, call)


def profile(shape, cfg, batch, steps, device, inference=False, eval_mode=False):
    """Seconds per training step (or per folded forward pass, ``inference``, or per eval-mode
    forward pass with BatchNorm unfolded, ``eval_mode``), and {(stage, kind, direction):
    seconds per step}."""
    xp = check_device(device)
    model = build_model(cfg, 50, seed=0, input_grad=False).to(device).train()
    if inference:
        model = sn.fold_batchnorm(model)
    elif eval_mode:
        model.eval()
    forward_only = inference or eval_mode
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch,) + tuple(shape)), dtype=xp.float32)
    y = xp.asarray(rng.integers(0, 50, size=batch))
    loss = sn.SoftmaxCrossEntropy(0.1)
    opt = sn.AdamW(list(model.parameters()), lr=1e-3)
    totals = defaultdict(float)
    timers = Timers(totals, xp)
    time_layers(model, timers)

    def step():
        if forward_only:
            model.forward(x)
            return
        opt.zero_grad()
        loss.forward(model.forward(x), y)
        model.backward(loss.backward())
        opt.step()

    with stem_kernels_timed(timers):
        step()  # warm-up: first touch of every buffer
        totals.clear()
        sync(xp)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync(xp)
        per_step = (time.perf_counter() - t) / steps
    return per_step, {k: v / steps for k, v in totals.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(p, ["preset:cpu128"], steps=6)
    p.add_argument("--top", type=int, default=20, help="lines to print per network")
    p.add_argument("--inference", action="store_true",
                   help="time the folded network's forward pass instead of a training step")
    p.add_argument("--eval", action="store_true",
                   help="time the eval-mode forward pass with BatchNorm unfolded (as "
                        "benchmarks.shape_set measures inference)")
    args = p.parse_args(argv)
    if args.inference and args.eval:
        p.error("--inference and --eval are two different passes: give one")
    nets = networks()
    keep_freed_memory()
    results = {}
    for name in args.models:
        shape, cfg = nets[name]
        per_step, parts = profile(shape, cfg, args.batch, args.steps, args.device,
                                  args.inference, args.eval)
        rest = per_step - sum(parts.values())
        forward_only = args.inference or args.eval
        what = ("folded forward pass" if args.inference else
                "eval-mode forward pass" if args.eval else "training step")
        print(f"{name}: {per_step * 1e3:.0f} ms per {what} ({args.batch / per_step:.1f} "
              f"clips/s); " + ("outside the layers" if forward_only else
                               "loss, optimiser and zeroing") + f" {rest * 1e3:.0f} ms")
        by_kind = defaultdict(float)
        for (stage, kind, direction), seconds in parts.items():
            by_kind[kind] += seconds
        print("  by layer kind: " + ", ".join(
            f"{kind} {100 * s / per_step:.0f}%" for kind, s in
            sorted(by_kind.items(), key=lambda kv: -kv[1])))
        for (stage, kind, direction), seconds in sorted(parts.items(),
                                                        key=lambda kv: -kv[1])[:args.top]:
            print(f"  {seconds * 1e3:8.1f} ms {100 * seconds / per_step:5.1f}%  "
                  f"{stage} {kind} {direction}")
        results[name] = dict(step_s=per_step, rest_s=rest, parts=parts)
    return results


if __name__ == "__main__":
    main()
