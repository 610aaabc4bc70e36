"""Every convolution of the shape set alone, ours against PyTorch's: where the shape set's
ratios come from, convolution by convolution, and how close each side runs to the machine's
float32 GEMM rate.

    python -m benchmarks.conv_vs_torch [--networks s3-w16-40x100-b64 ...] [--rounds 3]

For each distinct convolution of the named networks (benchmarks.conv_algorithms finds them,
with the network's own batch): an eval forward pass and a training pass (forward, then backward
with dL/dx except for a one-channel input, whose gradient no one asks for) of scratchnet's
kernels with the algorithm its policy takes, and the same of ``torch.nn.Conv2d`` (a bias where
the convolution has one; NCHW, as benchmarks.bench builds PyTorch's networks; forward under
``torch.inference_mode()``, training by autograd), the sides taking turns within each round,
each pass the fastest of a few calls in a row, medians of the rounds. Then, per network, the
sums over its convolutions (each counted as often as the network has it). GFLOP/s are the
convolution's multiply-adds (forward, 2x for backward: 3x, or 2x without dL/dx) over the time,
and "of GEMM" divides them by the float32 GEMM rate of a 2048^3 product measured in the same
run: above 1 a side runs faster than that product of our BLAS. A plain script: NumPy first,
nothing set up.
"""
import numpy as np  # first, as a user's script does

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def conv_flops(g):
    """2 x the multiply-adds of one forward pass of geometry ``g``."""
    from scratchnet.kernels.im2col import conv_output_size
    kh, kw = g.kernel
    ho = conv_output_size(g.height, kh, g.stride, g.padding)
    wo = conv_output_size(g.width, kw, g.stride, g.padding)
    return 2 * g.batch * ho * wo * g.out_channels * g.in_channels * kh * kw


def ours(g, data):
    """(eval forward, training pass) of scratchnet's kernels on geometry ``g`` and its
    operands ``data`` (benchmarks.conv_algorithms.operands), with the algorithm the policy
    takes."""
    from scratchnet.kernels.convolution import conv2d_backward, conv2d_forward
    x, w, b, dy = data

    def forward():
        return conv2d_forward(x, w, b, g.stride, g.padding, training=False)[0]

    def training():
        _, ctx = conv2d_forward(x, w, b, g.stride, g.padding, training=True)
        return conv2d_backward(dy, ctx, needs_input_grad=g.in_channels > 1)
    return forward, training


def pytorch(g, rng):
    """(eval forward, training pass) of torch.nn.Conv2d on geometry ``g``."""
    import torch
    conv = torch.nn.Conv2d(g.in_channels, g.out_channels, g.kernel, g.stride, g.padding,
                           bias=g.bias)
    x = torch.from_numpy(rng.standard_normal(
        (g.batch, g.in_channels, g.height, g.width)).astype(np.float32))
    with torch.no_grad():
        dy = torch.randn_like(conv(x))
    x.requires_grad_(g.in_channels > 1)

    def forward():
        with torch.inference_mode():
            return conv(x)

    def training():
        conv.zero_grad(set_to_none=True)
        x.grad = None
        conv(x).backward(dy)
    return forward, training


def median_times(sides, rounds, repeats=3, settle=0.25):
    """{side: {pass: seconds}} of sides {side: (forward, training)}: after one warm-up call of
    each, in each of ``rounds`` the sides take turns, and in its turn a side runs each pass
    ``repeats`` times in a row, keeping the fastest (warm: the threads awake, the memory
    mapped); the figure is the median of the rounds' fastest. Before each turn the process
    sleeps ``settle`` seconds, since PyTorch's OpenMP threads spin on the cores for a while
    after its last call: timed at once, the call after them ran up to 3x slower."""
    for fns in sides.values():  # warm-up: first touch of every buffer, threads started
        for fn in fns:
            fn()
    times = {s: ([], []) for s in sides}
    for _ in range(rounds):
        for s, fns in sides.items():
            time.sleep(settle)
            for i, fn in enumerate(fns):
                best = float("inf")
                for _ in range(repeats):
                    t = time.perf_counter()
                    fn()
                    best = min(best, time.perf_counter() - t)
                times[s][i].append(best)
    return {s: {"forward": statistics.median(f), "training": statistics.median(t)}
            for s, (f, t) in times.items()}


def main(argv=None):
    from . import bench, shape_set
    from .conv_algorithms import geometries, network_names, operands
    from scratchnet.kernels import conv_policy
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_vs_torch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", default=list(shape_set.SHAPES),
                   choices=network_names(), metavar="NAME",
                   help="shapes of benchmarks.shape_set or presets (default: the shape set): "
                        + ", ".join(network_names()))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3,
                   help="calls of each pass in a row per round, the fastest kept")
    p.add_argument("--no-torch", action="store_true", help="time scratchnet's side only")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.repeats < 1:
        p.error(f"--rounds and --repeats must be at least 1, got {args.rounds} and "
                f"{args.repeats}")
    threads = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            p.error("PyTorch is not installed (pip install torch, or pass --no-torch)")
        from scratchnet.runtime.cores import machine_cores
        threads = machine_cores()
        torch.set_num_threads(threads)
    rate = bench.gemm_rate(np)
    print(f"{bench.processor()}; float32 GEMM (2048^3): {rate:.0f} GFLOP/s; "
          f"BLAS kernels: {bench.blas_kernels()}"
          + (f"; PyTorch threads {threads}" if threads else ""))
    found = geometries(args.networks)
    sides = ["ours"] + ([] if args.no_torch else ["pytorch"])
    print(f"{'convolution (C HxW k s O N)':<30} {'algorithm':<11} "
          + " ".join(f"{s + ' fwd':>11} {s + ' train':>13}" for s in sides)
          + ("   ratio fwd/train (time)   of GEMM fwd/train, ours | pytorch"
             if not args.no_torch else "   of GEMM fwd/train"))
    rng = np.random.default_rng(0)
    rows = []
    for g in found:
        runs = {"ours": ours(g, operands(g, rng))}
        if not args.no_torch:
            runs["pytorch"] = pytorch(g, rng)
        t = median_times(runs, args.rounds, args.repeats)
        flops = conv_flops(g)
        train_flops = flops * (3 if g.in_channels > 1 else 2)
        share = {s: (flops / t[s]["forward"] / 1e9 / rate,
                     train_flops / t[s]["training"] / 1e9 / rate) for s in t}
        name = (f"{g.in_channels} {g.height}x{g.width} k{g.kernel[0]} s{g.stride} "
                f"{g.out_channels} {g.batch}")
        line = (f"{name:<30} {conv_policy.choose(np, g):<11} "
                + " ".join(f"{t[s]['forward'] * 1e3:>8.2f} ms {t[s]['training'] * 1e3:>10.2f} ms"
                           for s in t))
        if args.no_torch:
            line += f"   {share['ours'][0]:.2f} / {share['ours'][1]:.2f}"
        else:
            line += (f"   {t['ours']['forward'] / t['pytorch']['forward']:>5.2f} / "
                     f"{t['ours']['training'] / t['pytorch']['training']:<5.2f}"
                     f"        {share['ours'][0]:.2f} / {share['ours'][1]:.2f} | "
                     f"{share['pytorch'][0]:.2f} / {share['pytorch'][1]:.2f}")
        print(line, flush=True)
        rows.append(dict(geometry=g._asdict(), networks=found[g], times=t, of_gemm=share))
    print("per network, the sums over its convolutions (ms):")
    for net in args.networks:
        total = {s: {"forward": 0.0, "training": 0.0} for s in sides}
        for r in rows:
            count = r["networks"].count(net)
            for s in sides:
                for k in ("forward", "training"):
                    total[s][k] += count * r["times"][s][k]
        line = f"  {net:<28} " + " ".join(
            f"{s} {total[s]['forward'] * 1e3:.1f} / {total[s]['training'] * 1e3:.1f}"
            for s in sides)
        if not args.no_torch:
            line += (f"   ours / pytorch: forward "
                     f"{total['ours']['forward'] / total['pytorch']['forward']:.2f}, training "
                     f"{total['ours']['training'] / total['pytorch']['training']:.2f}")
        print(line)
    return rows


if __name__ == "__main__":
    main()
