"""Who should split a GEMM over the cores: OpenBLAS's own threads, or scratchnet's worker
threads, each running a single-threaded OpenBLAS on a block of rows?  Timed in alternation.

    python -m benchmarks.gemm_split [--rounds 7]

For the convolution GEMMs of a training step (an (M, K) patch matrix times (K, C_out)
weights, M = N x H x W) at a few sizes from the shape set, and from a plain script that
imports NumPy first (as a user's does): (a) one np.matmul with OpenBLAS's threads (threadpoolctl
at the machine's cores), (b) OpenBLAS held to one thread and the rows cut into one block per
core, each block's product on a thread of scratchnet.runtime.parallel, (c) one np.matmul with
OpenBLAS at one thread (the single-core baseline).  Medians of the rounds, ms per product.
"""
import argparse
import statistics
import time

import numpy as np

# (M, K, C_out): stage GEMMs of residual networks at batch 32 (3x3 convolutions: K = 9 C_in).
SHAPES = [(32 * 32 * 100, 9 * 16, 16), (32 * 16 * 50, 9 * 64, 64), (32 * 8 * 25, 9 * 128, 128),
          (32 * 4 * 13, 9 * 256, 256), (32 * 2 * 7, 9 * 512, 512)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=5, help="products per timing")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_info, threadpool_limits

    from scratchnet.runtime.parallel import PIECE_ELEMENTS, parallel_slices, thread_count
    cores = thread_count()
    print(f"{cores} cores; BLAS: " + ", ".join(f"{i['internal_api']} {i.get('version')} "
                                               f"{i.get('architecture')}"
                                               for i in threadpool_info()))
    rng = np.random.default_rng(0)
    print(f"{'M x K x N':>22} {'BLAS threads':>13} {'our threads':>12} {'one thread':>11}")
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), dtype=np.float32)

        def blas():
            np.matmul(a, b, out=out)

        def ours():
            def block(rows):
                np.matmul(a[rows], b, out=out[rows])
            parallel_slices(block, m, PIECE_ELEMENTS * cores, np)  # one block of rows per core

        times = {"blas": [], "ours": [], "one": []}
        for _ in range(args.rounds):
            for name, fn, threads in (("blas", blas, cores), ("ours", ours, 1),
                                      ("one", blas, 1)):
                with threadpool_limits(threads, user_api="blas"):
                    fn()
                    t0 = time.perf_counter()
                    for _ in range(args.repeats):
                        fn()
                    times[name].append((time.perf_counter() - t0) / args.repeats)
        med = {k2: 1000 * statistics.median(v) for k2, v in times.items()}
        print(f"{m:>8} x {k:>4} x {n:>4} {med['blas']:>10.2f} ms {med['ours']:>9.2f} ms "
              f"{med['one']:>8.2f} ms")


if __name__ == "__main__":
    main()
