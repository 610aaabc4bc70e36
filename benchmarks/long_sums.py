"""The weight gradients' long sums on the runtime's threads against OpenBLAS's, inside real
training steps, alternating step by step in one process.

    python -m benchmarks.long_sums [--models preset:cpu128bc shape:s3-w16-40x100-b64] [--rounds 30]

scratchnet.runtime.blas.summed_matmul cuts a long sum into a small output (a narrow
convolution's weight gradient) into fixed parts on the runtime's threads; with
``blas.SMALL_OUTPUT`` at 0 no product qualifies and every one runs whole on OpenBLAS's
threads, as before the change.  Each round runs one training step (forward, loss, backward,
AdamW) with each setting, the order alternating from round to round, after one warm-up step
each; the figures are the median step times and the median of the rounds' ratios, ours over
OpenBLAS's (below 1: ours faster).  One process and step-by-step alternation see a few per
cent that separate processes (benchmarks.ab_commits) lose in this host's drift.  A plain
script: NumPy first, nothing set up.
"""
import numpy  # noqa: F401  (first, as a user's script does)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def alternate(step, rounds, settings=None, apply=None):
    """{name: [s]}: ``step`` timed under each of ``settings`` ({name: value}, put in force by
    ``apply(value)``; by default blas.SMALL_OUTPUT, "openblas": 0 and "ours": as it is), one
    step each per round, the order alternating, after a warm-up step each.  The last setting
    is the one in force when called, and is put back after."""
    if apply is None:
        from scratchnet.runtime import blas

        def apply(value):
            blas.SMALL_OUTPUT = value
        settings = settings or {"openblas": 0, "ours": blas.SMALL_OUTPUT}
    times = {name: [] for name in settings}
    try:
        for value in settings.values():
            apply(value)
            step()  # warm-up
        for r in range(rounds):
            for name in (list(settings) if r % 2 == 0 else list(settings)[::-1]):
                apply(settings[name])
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    finally:
        apply(list(settings.values())[-1])
    return times


def add_step_arguments(p, nets, default_models, rounds):
    """--models (among ``nets``), --batch and --rounds of a benchmark that alternates settings
    inside real steps (this one, benchmarks.cache_blocks)."""
    p.add_argument("--models", nargs="+", choices=list(nets), metavar="NAME",
                   default=default_models, help="among: " + ", ".join(nets))
    p.add_argument("--batch", type=int, help="the batch (default: the shape's, else 32)")
    p.add_argument("--rounds", type=int, default=rounds)


def checked_step_arguments(p, argv):
    """The parsed arguments, --rounds and --batch at least 1."""
    args = p.parse_args(argv)
    if args.rounds < 1 or (args.batch is not None and args.batch < 1):
        p.error("--rounds and --batch must be at least 1")
    return args


def batch_of(name, batch):
    """The batch a network is timed at: ``batch`` if given, else a shape's own, else 32."""
    from .shape_set import SHAPES
    if batch:
        return batch
    return SHAPES[name[len("shape:"):]][1] if name.startswith("shape:") else 32


def main(argv=None):
    from .bench import networks, scratchnet_step
    nets = networks()
    p = argparse.ArgumentParser(prog="python -m benchmarks.long_sums", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p, nets, ["preset:cpu128bc", "shape:s3-w16-40x100-b64"], rounds=30)
    args = checked_step_arguments(p, argv)
    from .bench import blas_kernels
    print(f"BLAS kernels: {blas_kernels()}")
    results = {}
    for name in args.models:
        shape, cfg = nets[name]
        batch = batch_of(name, args.batch)
        model, _, step = scratchnet_step(shape, cfg, batch)
        model.train()
        times = alternate(step, args.rounds)
        ratio = statistics.median(o / b for o, b in zip(times["ours"], times["openblas"]))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{name} (batch {batch}): step {med['openblas']:.0f} ms on OpenBLAS's threads, "
              f"{med['ours']:.0f} ms on ours; ours / OpenBLAS's, median of {args.rounds} "
              f"rounds: x{ratio:.3f}", flush=True)
        results[name] = dict(times=times, ratio=ratio)
    return results


if __name__ == "__main__":
    main()
