"""Speed over a fixed set of residual networks that are not the presets, against PyTorch.

    python -m benchmarks.shape_set --rounds 3

The set below was written once, on 2026-12-07, before any tuning against it, and is not to be
changed to suit the code: stems 3x3, 5x5 and 7x7/2; stride-1 and stride-2 blocks; widths 16 to
512; inputs from 40 x 100 to 128 x 431; batches 8 to 64.  This script imports NumPy before
anything else, as a user's script does, and so do its measuring processes, which set nothing
up (no malloc or BLAS settings; --keep-memory gives both sides glibc's kept memory): it
measures both libraries as users get them.  For each shape: training clips/s (forward, loss, backward, AdamW
step) and eval inference clips/s, ours and PyTorch's (torch.set_num_threads equal to our
cores, eval under torch.inference_mode(), BatchNorm unfolded on both sides), rounds
alternating, medians; the ratios ours / PyTorch's, their geometric means and ranges; each
side's training GFLOP/s as a share of the float32 GEMM rate measured in the same run; and
each side's median milliseconds a step (benchmarks.conv_vs_torch times the convolutions
alone, to set beside them).  The first line names the processor, the GEMM rate and OpenBLAS's
kernels: the ratios are the machine's, not the code's alone (docs/speed.md, "The ceiling").
"""
import numpy  # first, as a user's script does: measured as users get the library

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402

from . import bench  # noqa: E402

def resnet(stem, stem_stride, stem_pool, widths, depths, strides):
    """A ResNet config (scratchnet.ResNet's keywords)."""
    return dict(stem_kernel=stem, stem_stride=stem_stride, stem_pool=stem_pool, widths=widths,
                depths=depths, strides=strides, dropout=0.0)


SHAPES = {  # name: (input (C, H, W), batch, ResNet config)
    "s3-w16-40x100-b64": ((1, 40, 100), 64,
                          resnet(3, 1, False, [16, 32, 64, 128], [1, 1, 1, 1], [1, 2, 2, 2])),
    "s5-w24-64x200-b32": ((1, 64, 200), 32,
                          resnet(5, 1, True, [24, 48, 96, 192], [2, 2, 2, 2], [1, 2, 2, 2])),
    "s5-w48-96x200-b16": ((1, 96, 200), 16,
                          resnet(5, 1, True, [48, 96, 192], [2, 2, 2], [1, 2, 2])),
    "s7-w32-128x251-b32-stride1": ((1, 128, 251), 32,
                                   resnet(7, 2, True, [32, 64, 64, 128], [1, 2, 1, 2],
                                          [1, 2, 1, 2])),
    "s7-w64-128x431-b8": ((1, 128, 431), 8,
                          resnet(7, 2, True, [64, 128, 256, 512], [2, 2, 2, 2], [1, 2, 2, 2])),
    "s3-w128-64x128-b16-wide": ((1, 64, 128), 16,
                                resnet(3, 1, False, [128, 256, 512], [1, 1, 1], [2, 2, 2])),
}


def geometric_mean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.shape_set", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--keep-memory", action="store_true",
                   help="both sides' processes keep freed memory (scratchnet.runtime.memory); "
                        "scratchnet's runtime does so itself at its first product")
    args = p.parse_args(argv)
    rate = bench.gemm_rate(numpy)
    print(f"{bench.processor()}; float32 GEMM (2048^3): {rate:.0f} GFLOP/s; "
          f"BLAS kernels: {bench.blas_kernels()}")
    print(f"{'shape':<28} {'train ours/pt':>13} {'infer ours/pt':>13} "
          f"{'GEMM share ours':>15} {'pt':>5}   {'ms a step, train ours pt':>24} "
          f"{'infer ours pt':>13}")
    ratios = {"train": [], "infer": []}
    rows = {}
    for name in args.shapes:
        shape, batch, cfg = SHAPES[name]
        flops = bench.forward_flops(shape, cfg)
        measured = {"scratchnet": [], "pytorch": []}
        for _ in range(args.rounds):
            for impl, fn in (("scratchnet", bench.measure_scratchnet),
                             ("pytorch", bench.measure_torch)):
                r = bench.in_child(fn, keep_memory=args.keep_memory, shape=shape, cfg=cfg,
                                   batch=batch, steps=args.steps, warmup=args.warmup,
                                   device="cpu")
                if "error" in r:
                    raise SystemExit(f"{name} {impl}: {r['error']}")
                measured[impl].append(r)
        train = [o["train_s"] for o in measured["scratchnet"]], \
            [t["train_s"] for t in measured["pytorch"]]
        infer = [o["infer_s"] for o in measured["scratchnet"]], \
            [t["infer_s"] for t in measured["pytorch"]]
        train_ratio = statistics.median(t / o for o, t in zip(*train))
        infer_ratio = statistics.median(t / o for o, t in zip(*infer))
        # a training step is about 3 forward passes' multiply-adds
        share = [3 * flops * batch / statistics.median(side) / 1e9 / rate for side in train]
        ratios["train"].append(train_ratio)
        ratios["infer"].append(infer_ratio)
        rows[name] = dict(train_ratio=train_ratio, infer_ratio=infer_ratio,
                          gemm_share_ours=share[0], gemm_share_torch=share[1])
        ms = [statistics.median(side) * 1e3 for side in (*train, *infer)]
        rows[name].update(train_ms=ms[:2], infer_ms=ms[2:])
        print(f"{name:<28} {train_ratio:>13.2f} {infer_ratio:>13.2f} {share[0]:>15.2f} "
              f"{share[1]:>5.2f}   {ms[0]:>18.0f} {ms[1]:>5.0f} {ms[2]:>7.0f} {ms[3]:>5.0f}",
              flush=True)
    for kind in ("train", "infer"):
        values = ratios[kind]
        print(f"geometric mean, {kind}: {geometric_mean(values):.2f} "
              f"(range {min(values):.2f}-{max(values):.2f})")
    return rows


if __name__ == "__main__":
    main()
