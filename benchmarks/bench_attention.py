"""A transformer encoder layer, ours against PyTorch's, as the token count grows.

    python -m benchmarks.bench_attention --tokens 120 288 600 --batch 16 --rounds 3

For each token count T (120: ast-tiny's 16 x 16 patches at stride 16 on 128 x 251 inputs;
288: AST's overlapping stride 10; 600 and more: longer clips), one training step of the layer
(forward and backward, float32, batch --batch, width --dim, --heads heads, MLP 4 x dim) is
timed for ours and for torch.nn.TransformerEncoderLayer(activation="gelu", batch_first=True,
norm_first=True) with torch.set_num_threads equal to our cores, rounds alternating; medians.
It prints the attention matrix's memory (N H T^2 x 4 bytes, kept for the backward pass) and
the share of the layer's FLOPs that the T^2 terms (the scores and the weighted values) make:
where the quadratic cost starts to bind.
"""
import argparse
import statistics
import time

import numpy as np


def flops(n, t, d, mlp):
    """(all, the T^2 part) multiply-adds x 2 of one forward pass."""
    projections = 2 * n * t * d * (3 * d + d + 2 * mlp * d)
    quadratic = 2 * n * t * t * d * 2  # scores and weighted values
    return projections + quadratic, quadratic


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[120, 288, 600])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    import scratchnet as sn
    from scratchnet.runtime.parallel import thread_count
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(thread_count())
        except ImportError:
            torch = None
    print(f"{'tokens':>6} {'attention MB':>12} {'T^2 share':>9} {'ours ms':>9} "
          f"{'torch ms':>9} {'ratio':>6}")
    rows = []
    for t in args.tokens:
        rng = np.random.default_rng(0)
        layer = sn.TransformerEncoderLayer(args.dim, args.heads, 4 * args.dim, dropout=0.0,
                                           rng=rng)
        x = rng.standard_normal((args.batch, t, args.dim)).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        theirs = None
        if torch is not None:
            theirs = torch.nn.TransformerEncoderLayer(args.dim, args.heads, 4 * args.dim,
                                                      dropout=0.0, activation="gelu",
                                                      batch_first=True, norm_first=True)
            theirs.load_state_dict({k: torch.tensor(v) for k, v in
                                    layer.state_dict().items()})
            xt, dyt = torch.tensor(x, requires_grad=True), torch.tensor(dy)

        def ours_step():
            layer.zero_grad()
            layer.forward(x)
            layer.backward(dy)

        def torch_step():
            theirs.zero_grad()
            xt.grad = None
            theirs(xt).backward(dyt)

        ours_step()
        if theirs is not None:
            torch_step()
        mine, other = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            ours_step()
            mine.append(1000 * (time.perf_counter() - t0))
            if theirs is not None:
                t0 = time.perf_counter()
                torch_step()
                other.append(1000 * (time.perf_counter() - t0))
        total, quadratic = flops(args.batch, t, args.dim, 4)
        row = dict(tokens=t, attention_mb=args.batch * args.heads * t * t * 4 / 2 ** 20,
                   quadratic_share=quadratic / total, ours_ms=statistics.median(mine),
                   torch_ms=statistics.median(other) if other else None)
        rows.append(row)
        ratio = f"{row['torch_ms'] / row['ours_ms']:.2f}" if other else "-"
        print(f"{t:>6} {row['attention_mb']:>12.1f} {row['quadratic_share']:>9.2f} "
              f"{row['ours_ms']:>9.1f} {row['torch_ms'] or 0:>9.1f} {ratio:>6}", flush=True)
    return rows


if __name__ == "__main__":
    main()
