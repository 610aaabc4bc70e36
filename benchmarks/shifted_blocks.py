"""The shifted convolutions over blocks of grid positions against the whole grid, inside real
training steps and eval forward passes, alternating step by step in one process.

    python -m benchmarks.shifted_blocks [--models shape:s5-w48-96x200-b16 ...] [--rounds 16]

scratchnet.kernels.shifted runs a convolution's k*k products, and its weight gradient's row
patches and products, a block of grid positions at a time, each block on one core with its
rows in cache; with ``shifted.BLOCK_ROWS`` larger than any grid everything runs over the whole
grid in one block, on OpenBLAS's threads and the long sums, as before the change.  Each round runs one training step (forward, loss,
backward, AdamW), then one eval-mode forward pass (BatchNorm unfolded, as
benchmarks.shape_set measures inference), with each setting, the order alternating from round
to round, after a warm-up of each; the figures are the median times and the median of the
rounds' ratios, blocks over one block (below 1: the blocks faster).  A plain script: NumPy
first, nothing set up.
"""
import numpy  # noqa: F401  (first, as a user's script does)

import argparse  # noqa: E402
import statistics  # noqa: E402

WHOLE_GRID = 1 << 62  # BLOCK_ROWS above any grid: one block


def main(argv=None):
    from scratchnet.kernels import shifted
    from .bench import blas_kernels, networks, scratchnet_step
    from .long_sums import alternate
    from .shape_set import SHAPES
    nets = networks()
    p = argparse.ArgumentParser(prog="python -m benchmarks.shifted_blocks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(nets), metavar="NAME",
                   default=[f"shape:{name}" for name in SHAPES] + ["preset:cpu128bc"],
                   help="among: " + ", ".join(nets))
    p.add_argument("--batch", type=int, help="the batch (default: the shape's, else 32)")
    p.add_argument("--rounds", type=int, default=16)
    args = p.parse_args(argv)
    if args.rounds < 1 or (args.batch is not None and args.batch < 1):
        p.error("--rounds and --batch must be at least 1")
    print(f"BLAS kernels: {blas_kernels()}")
    settings = {"one block": WHOLE_GRID, "blocks": shifted.BLOCK_ROWS}
    results = {}
    for name in args.models:
        shape, cfg = nets[name]
        batch = args.batch or (SHAPES[name[len("shape:"):]][1] if name.startswith("shape:")
                               else 32)
        model, x, train_step = scratchnet_step(shape, cfg, batch)

        def eval_forward():
            model.eval()
            model.forward(x)
            model.train()

        results[name] = {}
        for what, step in (("training", train_step), ("eval", eval_forward)):
            model.train()
            times = alternate(step, args.rounds, shifted, "BLOCK_ROWS", settings)
            ratio = statistics.median(b / w for b, w in zip(times["blocks"], times["one block"]))
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            print(f"{name} (batch {batch}) {what}: {med['one block']:.1f} ms in one block, "
                  f"{med['blocks']:.1f} ms in blocks; blocks / one block, median of "
                  f"{args.rounds} rounds: x{ratio:.3f}", flush=True)
            results[name][what] = dict(times=times, ratio=ratio)
    return results


if __name__ == "__main__":
    main()
