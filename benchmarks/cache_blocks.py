"""Convolutions in cache-sized blocks against the whole batch at once, inside real training steps
and eval forward passes, alternating step by step in one process.

    python -m benchmarks.cache_blocks [--kernels shifted patch_gemm] [--models NAME ...]

Two kernels run in blocks on the CPU, each block on one core with its rows in cache:
scratchnet.kernels.shifted runs a convolution's k*k products, and its weight gradient's row
patches, a block of grid positions at a time (with ``shifted.BLOCK_ROWS`` larger than any grid
everything runs over the whole grid, on OpenBLAS's threads and the long sums, as before);
scratchnet.kernels.patch_gemm gathers and multiplies the patches a block of samples at a time
(with ``patch_gemm.BLOCK_BYTES`` larger than any batch's patches, one patch matrix, as
before).  ``--kernels`` names the kernels whose blocks are switched; the others keep theirs.
Each round runs one training step (forward, loss, backward, AdamW), then one eval-mode forward
pass (BatchNorm unfolded, as benchmarks.shape_set measures inference), with each setting, the
order alternating from round to round, after a warm-up of each; the figures are the median
times and the median of the rounds' ratios, blocks over whole (below 1: the blocks faster).  A
plain script: NumPy first, nothing set up.
"""
import numpy  # noqa: F401  (first, as a user's script does)

import argparse  # noqa: E402
import statistics  # noqa: E402

WHOLE = 1 << 62  # a block size above any batch's: one block


def block_settings(kernels):
    """({"whole": sizes, "blocks": sizes}, apply) for alternate(): the named kernels' block
    sizes above any batch's, and as they are; ``apply(sizes)`` puts them in force."""
    from scratchnet.kernels import patch_gemm, shifted
    attributes = {"shifted": (shifted, "BLOCK_ROWS"), "patch_gemm": (patch_gemm, "BLOCK_BYTES")}
    settings = {"whole": {k: WHOLE for k in kernels},
                "blocks": {k: getattr(*attributes[k]) for k in kernels}}

    def apply(sizes):
        for k, size in sizes.items():
            setattr(*attributes[k], size)
    return settings, apply


def main(argv=None):
    from .bench import blas_kernels, networks, scratchnet_step
    from .long_sums import add_step_arguments, alternate, batch_of, checked_step_arguments
    from .shape_set import SHAPES
    nets = networks()
    p = argparse.ArgumentParser(prog="python -m benchmarks.cache_blocks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", nargs="+", choices=["shifted", "patch_gemm"],
                   default=["shifted", "patch_gemm"])
    add_step_arguments(p, nets, [f"shape:{name}" for name in SHAPES] + ["preset:cpu128bc"],
                       rounds=16)
    args = checked_step_arguments(p, argv)
    print(f"BLAS kernels: {blas_kernels()}; blocks switched: {', '.join(args.kernels)}")
    settings, apply = block_settings(args.kernels)
    results = {}
    for name in args.models:
        shape, cfg = nets[name]
        batch = batch_of(name, args.batch)
        model, x, train_step = scratchnet_step(shape, cfg, batch)

        def eval_forward():
            model.eval()
            model.forward(x)
            model.train()

        results[name] = {}
        for what, step in (("training", train_step), ("eval", eval_forward)):
            model.train()
            times = alternate(step, args.rounds, settings, apply)
            ratio = statistics.median(b / w for b, w in zip(times["blocks"], times["whole"]))
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            print(f"{name} (batch {batch}) {what}: {med['whole']:.1f} ms whole, "
                  f"{med['blocks']:.1f} ms in blocks; blocks / whole, median of "
                  f"{args.rounds} rounds: x{ratio:.3f}", flush=True)
            results[name][what] = dict(times=times, ratio=ratio)
    return results


if __name__ == "__main__":
    main()
