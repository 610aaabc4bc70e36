"""Who should split a GEMM over the cores: OpenBLAS's own threads, or scratchnet's worker
threads, each running a single-threaded OpenBLAS on a block of it?  Timed in alternation.

    python -m benchmarks.gemm_split [--rounds 7]

Two kinds of product from the convolutions of the shape set, from a plain script that imports
NumPy first (as a user's does):

- forward products, an (M, K) patch matrix times (K, C_out) weights, M = N x H x W, which
  our threads split by rows (each writes its own rows of the output);
- weight-gradient products, (K, M) times (M, C_out), whose output is small and whose sum runs
  over every position, which our threads split along M (each sums its share into its own
  (K, C_out) matrix, and the shares are added).

Every product runs on the runtime's BLAS (SciPy's OpenBLAS) through its C interface, cblas
gemm called with ctypes (scratchnet.runtime.blas.cblas), which lets go of the GIL; SciPy's
Python wrapper of gemm holds it, so threads calling that wrapper would run one at a time.
The weight gradients' split is what scratchnet.runtime.blas.summed_matmul does with fixed
parts since 2026-12-07; the benchmark keeps one block per core.  Columns: (a) OpenBLAS's own
threads, one product; (b) OpenBLAS held to one thread and the product cut into one block per
core, each on a thread of scratchnet.runtime.parallel; (c) OpenBLAS at one thread, one
product (the single-core baseline).  Medians of the rounds, ms per product.
"""
import argparse
import statistics
import time

import numpy as np

# (M, K, C_out) at batch 32-64 (3x3 convolutions: K = 9 C_in; weight gradients by kernel row:
# K = 3 C_in, as scratchnet.kernels.shifted forms them).
FORWARD = [(32 * 32 * 100, 9 * 16, 16), (32 * 16 * 50, 9 * 64, 64), (32 * 8 * 25, 9 * 128, 128),
           (32 * 4 * 13, 9 * 256, 256), (32 * 2 * 7, 9 * 512, 512)]
WEIGHT_GRADIENT = [(64 * 40 * 101, 3 * 16, 16), (64 * 20 * 51, 3 * 32, 32),
                   (16 * 48 * 101, 3 * 48, 48), (8 * 32 * 109, 3 * 64, 64),
                   (32 * 16 * 51, 3 * 128, 128), (8 * 8 * 28, 3 * 256, 256),
                   (32 * 4 * 14, 3 * 512, 512), (64 * 40 * 100, 9 * 16, 16),
                   (32 * 16 * 50, 9 * 64, 64), (32 * 8 * 25, 9 * 128, 128),
                   (32 * 4 * 13, 9 * 256, 256), (1600, 512, 50), (32 * 300, 64, 192)]

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gemm_split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=5, help="products per timing")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_info

    from scratchnet.runtime.parallel import PIECE_ELEMENTS, parallel_slices, thread_count
    from scratchnet.runtime import blas
    lib = blas.cblas()  # loads the runtime's BLAS with its settings, as its first product does
    if lib is None:
        raise SystemExit("SciPy's OpenBLAS has no cblas gemm / openblas_set_num_threads "
                         "that ctypes can find: nothing to compare")
    set_threads = lib.set_threads
    cores = thread_count()
    print(f"{cores} cores; BLAS: " + ", ".join(f"{i['internal_api']} {i.get('version')} "
                                               f"{i.get('architecture')}"
                                               for i in threadpool_info()))

    gemm = lib.product

    rng = np.random.default_rng(0)
    print(f"{'product':>30} {'BLAS threads':>13} {'our threads':>12} {'one thread':>11}")
    for kind, shapes in (("forward", FORWARD), ("weight gradient", WEIGHT_GRADIENT)):
        for m, k, n in shapes:
            if kind == "forward":
                a = rng.standard_normal((m, k), dtype=np.float32)
                b = rng.standard_normal((k, n), dtype=np.float32)
                out = np.empty((m, n), dtype=np.float32)

                def whole():
                    gemm(a, b, out)

                def ours():
                    def block(rows):
                        gemm(a[rows], b, out[rows])
                    parallel_slices(block, m, PIECE_ELEMENTS * cores, np)  # a block per core
                label = f"{m} x {k} . {k} x {n}"
            else:
                patches = rng.standard_normal((m, k), dtype=np.float32)
                dy = rng.standard_normal((m, n), dtype=np.float32)
                out = np.empty((k, n), dtype=np.float32)
                shares = np.empty((cores, k, n), dtype=np.float32)

                def whole():
                    gemm(patches.T, dy, out)

                def ours():
                    bounds = [m * c // cores for c in range(cores + 1)]

                    def block(part):
                        for c in range(part.start, part.stop):
                            rows = slice(bounds[c], bounds[c + 1])
                            gemm(patches[rows].T, dy[rows], shares[c])
                    parallel_slices(block, cores, PIECE_ELEMENTS * cores, np)
                    shares.sum(axis=0, out=out)
                label = f"{k} x {m} . {m} x {n}"

            times = {"blas": [], "ours": [], "one": []}
            for _ in range(args.rounds):
                for name, fn, threads in (("blas", whole, cores), ("ours", ours, 1),
                                          ("one", whole, 1)):
                    set_threads(threads)
                    fn()
                    t0 = time.perf_counter()
                    for _ in range(args.repeats):
                        fn()
                    times[name].append((time.perf_counter() - t0) / args.repeats)
            set_threads(cores)
            med = {k2: 1000 * statistics.median(v) for k2, v in times.items()}
            print(f"{label:>30} {med['blas']:>10.2f} ms {med['ours']:>9.2f} ms "
                  f"{med['one']:>8.2f} ms")


if __name__ == "__main__":
    main()
