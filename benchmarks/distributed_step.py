"""One training step of a global batch, in one process or split over MPI ranks, timed in
alternation: 1 rank x all the cores' threads against N ranks x their share, with the
allreduce's part of the step.

    python -m benchmarks.distributed_step [--models preset:cpu128bc] [--ranks 2] [--rounds 4]

Each round runs the one-process step, then the N-rank step (``mpiexec -n N``), each a fresh
process that builds the network, warms up and times --steps steps of --batch clips of the
preset's input shape (random data: the arithmetic is the same).  A step is what train_esc50
runs: forward, loss, backward (with the loss gradient scaled by the rank's share), the
gradient allreduce (N ranks), clipping and AdamW.  The allreduce's time includes the wait for
the slower rank.  Medians over the rounds; this machine drifts from minute to minute, and the
alternation lets the drift hit both alike.
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np

from dsp import LogMel
from experiments.esc50 import CLIP_SECONDS
from experiments.models import PRESETS

from .bench import networks


def models():
    """name -> (input shape, model config): benchmarks.bench's networks and every preset,
    the transformer's included."""
    nets = dict(networks())
    for name, preset in PRESETS.items():
        f = preset["features"]
        frames = LogMel(**f).num_frames(int(round(CLIP_SECONDS * f["sr"])))
        nets[f"preset:{name}"] = ((1, f["n_mels"], frames), preset["model"])
    return nets


def worker(model_name, batch, steps, distributed, sync_batchnorm):
    """Time the steps in this process (a rank of a job when ``distributed``); rank 0 prints
    one JSON line: seconds per step, and the allreduce's seconds per step."""
    from experiments.models import build_model
    from scratchnet import AdamW, SoftmaxCrossEntropy
    from scratchnet.runtime.memory import keep_freed_memory
    from scratchnet.runtime.parallel import thread_count
    keep_freed_memory()
    shape, cfg = models()[model_name]
    model = build_model(cfg, 50, seed=0, input_grad=False)
    optimizer = AdamW(model, lr=1e-3, weight_decay=0.01)
    loss = SoftmaxCrossEntropy(label_smoothing=0.1)
    parallel, rank = None, 0
    if distributed:
        from scratchnet.distributed import Communicator, DataParallel
        parallel = DataParallel(model, optimizer, Communicator(timeout=600), sync_batchnorm)
        rank = parallel.rank
        allreduce = parallel.allreduce_gradients
        spent = [0.0]

        def timed():
            t0 = time.perf_counter()
            allreduce()
            spent[0] += time.perf_counter() - t0
        parallel.allreduce_gradients = timed
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, 50, batch)

    def step():
        xb, yb = x, y
        if parallel:
            rows, _ = parallel.shard(batch)
            xb, yb = x[rows], y[rows]
        optimizer.zero_grad()
        loss.forward(model.forward(xb), yb)
        (parallel or model).backward(loss.backward())
        optimizer.clip_grad_norm(5.0)
        optimizer.step()

    step()  # warm-up: first touch of every buffer
    if parallel:
        spent[0] = 0.0
        parallel.communicator.wait_for_root()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    if rank == 0:
        print(json.dumps(dict(step=seconds, allreduce=spent[0] / steps if parallel else 0.0,
                              threads=thread_count(),
                              parameters=int(sum(p.data.size for p in model.parameters())))))


def launch(args, ranks):
    """One timed run in fresh processes; its JSON line."""
    command = [sys.executable, "-m", "benchmarks.distributed_step", "--worker",
               "--models", args.models[0], "--batch", str(args.batch), "--steps",
               str(args.steps)]
    if ranks > 1:
        from scratchnet.distributed import find_mpiexec
        launcher = find_mpiexec()
        if launcher is None:
            sys.exit("mpiexec or mpi4py is missing: pip install -e .[mpi]")
        command = [launcher, "-n", str(ranks)] + command + ["--distributed"] + (
            ["--sync-batchnorm"] if args.sync_batchnorm else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs=1, default=["preset:cpu128bc"], choices=list(models()))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--sync-batchnorm", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.models[0], args.batch, args.steps, args.distributed,
                      args.sync_batchnorm)
    runs = {1: [], args.ranks: []}
    for _ in range(args.rounds):
        for ranks in runs:
            runs[ranks].append(launch(args, ranks))
    one, many = runs[1], runs[args.ranks]
    step_one = float(np.median([r["step"] for r in one]))
    step_many = float(np.median([r["step"] for r in many]))
    reduce_many = float(np.median([r["allreduce"] for r in many]))
    print(f"{args.models[0]}, global batch {args.batch}, {one[0]['parameters']:,} parameters "
          f"({one[0]['parameters'] * 4 / 1e6:.1f} MB of float32 gradients), medians of "
          f"{args.rounds} alternating rounds of {args.steps} steps:")
    print(f"  1 rank  x {one[0]['threads']} threads: {step_one * 1000:7.0f} ms per step")
    print(f"  {args.ranks} ranks x {many[0]['threads']} thread{'s' if many[0]['threads'] > 1 else ''}"
          f": {step_many * 1000:7.0f} ms per step, of which the allreduce (with the wait for "
          f"the slower rank) {reduce_many * 1000:.1f} ms ({100 * reduce_many / step_many:.1f}%)"
          f"{', BatchNorm synchronised' if args.sync_batchnorm else ''}")
    print(f"  {args.ranks} ranks / 1 rank: x{step_one / step_many:.2f} steps per second")
    return dict(one=step_one, many=step_many, allreduce=reduce_many)


if __name__ == "__main__":
    main()
