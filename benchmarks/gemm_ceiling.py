"""How fast a training step could be if it did nothing but its matrix products.

    python -m benchmarks.gemm_ceiling [--models reference preset:cpu128] [--repeats 9] [--no-torch]

Every convolution's training step is three products (scratchnet.layers.conv derives them):
the forward Y = X Wm^T, the weight gradient dY^T X and the input gradient (for stride 1 the
flipped-kernel convolution of dy).  Conv2d computes them either through im2col, one GEMM each,
or on the shifted grid (scratchnet.kernels.shifted), k*k GEMMs with K = C_in for Y and for dL/dx and
k GEMMs over row patches for dL/dW, or on a short map (scratchnet.kernels.short_maps) three GEMMs per
output row with K = H*k*C_in.  This script runs one forward pass to learn every
convolution's input shape and path, then times each of those GEMMs alone, on random operands
with the strides the layer passes (transposed views where the layer transposes), into
preallocated outputs, warm in cache, the fastest of ``--repeats`` calls.  Their sum is a
training step with no im2col, no BatchNorm, no element-wise pass, no allocation: an upper
bound on what any code that keeps these products can reach on this BLAS.  The same sum for
the other formulation of each convolution (im2col where the layer takes the grid, and back)
says whether the choice could gain (for a short map, the other is im2col).  The forward
products alone bound the deployed forward pass the same way (BatchNorm folded: the
convolutions are all it multiplies).  With PyTorch installed its training step and its folded
inference are timed too (benchmarks.bench.measure_torch, in a child process), and each bound
is printed as a ratio to them: a ratio to PyTorch above that bound needs faster products
than these.
CPU only: it measures this machine's BLAS (NumPy's matmul, SciPy's gemm for the products that
add into their output, as scratchnet.kernels.shifted calls them).
"""
import argparse
import time
from collections import defaultdict

import numpy as np

from .bench import gemm_rate, in_child, measure_torch, networks
from experiments.models import build_model
from scratchnet.kernels import conv_policy
from scratchnet.kernels.im2col import conv_output_size, gradient_transposed
from scratchnet.layers.conv import Conv2d
from scratchnet.layers.linear import Linear
from scratchnet.runtime import blas
from scratchnet.runtime.memory import keep_freed_memory
from scratchnet.kernels.shifted import grid_geometry, row_blocks

from .profile_layers import leaf_layers


def input_shapes(model, x):
    """{dotted name: (layer, input shape)} of every Conv2d and Linear, from one forward."""
    seen = {}
    for name, layer in leaf_layers(model):
        if isinstance(layer, (Conv2d, Linear)):
            def record(arg, call=layer.forward, name=name, layer=layer):
                seen[name] = (layer, arg.shape)
                return call(arg)
            layer.forward = record
    model.forward(x)
    for recorded, _ in seen.values():
        del recorded.forward  # the instance attribute; the class's method shows through again
    return seen


def im2col_products(conv, shape):
    """[(label, m, k, n, transpose_a, accumulate)] of the im2col formulation's GEMMs,
    (m, k) @ (k, n), one per product."""
    n, c, h, w = shape
    kh, kw = conv.kernel_size
    s, p, c_out = conv.stride, conv.padding, conv.out_channels
    m = n * conv_output_size(h, kh, s, p) * conv_output_size(w, kw, s, p)
    k = kh * kw * c
    # dL/dWm in the orientation scratchnet.kernels.patch_gemm.weight_gradient_matrix takes.
    dw = (("dW", k, m, c_out, True, False) if gradient_transposed(k, c_out)
          else ("dW", c_out, m, k, True, False))
    products = [("forward", m, k, c_out, False, False), dw]
    if conv.needs_input_grad:
        if s == 1 and kh == kw and p <= kh - 1:  # the flipped-kernel convolution of dy
            products.append(("dX", n * h * w, kh * kw * c_out, c, False, False))
        else:
            products.append(("dX", m, c_out, k, False, False))
    return products


def shifted_products(conv, shape):
    """The same for the shifted grid: k*k GEMMs (rows, C_in)(C_in, C_out) for Y, k of
    (k C_in, rows)(rows, C_out) for dL/dW (their transposes for a large gradient), k*k of
    (rows, C_out)(C_out, C_in) for dL/dx, the rows of each kernel row being the output rows it
    meets (scratchnet.kernels.shifted.row_blocks); every product of Y and dL/dx but the first
    adds into its output (BLAS beta = 1)."""
    n, c, h, w = shape
    k, c_out = conv.kernel_size[0], conv.out_channels
    _, r, _ = grid_geometry(n, h, w, conv.padding)
    products = []
    for a, i0, i1 in row_blocks(h, k):
        rows = (i1 - i0) * r
        if rows <= 0:
            continue
        first = not products          # the middle kernel row comes first and writes Y
        products += [("forward", rows, c, c_out, False, not (first and b == 0))
                     for b in range(k)]
        products.append(("dW", k * c, rows, c_out, True, False)
                        if gradient_transposed(k * k * c, c_out)
                        else ("dW", c_out, rows, k * c, True, False))
        if conv.needs_input_grad:
            products += [("dX", rows, c_out, c, False, not (first and b == 0))
                         for b in range(k)]
    return products


def short_products(conv, shape):
    """The same for a short map (scratchnet.kernels.short_maps): per output row i, (N*W, H*k*C_in)
    (H*k*C_in, C_out) for Y, (C_out, N*W)(N*W, H*k*C_in) for dL/dW, and (N*W, C_out)
    (C_out, H*k*C_in) for dL/dx, every row's but the first adding into it."""
    n, c, h, w = shape
    k, c_out = conv.kernel_size[0], conv.out_channels
    rows, width = n * w, h * k * c
    products = []
    for i in range(h):
        products += [("forward", rows, width, c_out, False, False),
                     ("dW", c_out, rows, width, True, False)]
        if conv.needs_input_grad:
            products.append(("dX", rows, c_out, width, False, i > 0))
    return products


def time_product(m, k, n, transpose_a, accumulate, repeats, rng):
    """Fastest of ``repeats`` calls of one (m, k) @ (k, n) float32 product into a
    preallocated output (the best this BLAS does on that shape: a bound, not a typical)."""
    a = rng.standard_normal((k, m) if transpose_a else (m, k), dtype=np.float32)
    a = a.T if transpose_a else a
    b = rng.standard_normal((n, k), dtype=np.float32).T   # layers pass weights transposed
    out = np.zeros((m, n), dtype=np.float32)
    call = ((lambda: blas.matmul(a, b, out=out, beta=1.0)) if accumulate
            else (lambda: np.matmul(a, b, out=out)))
    call()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def products_seconds(products, repeats, rng, cache):
    """{label: [seconds, flops]} summed over products (each shape timed once, kept in cache)."""
    totals = defaultdict(lambda: [0.0, 0])
    for label, m, k, n, transpose_a, accumulate in products:
        key = (m, k, n, transpose_a, accumulate)
        if key not in cache:
            cache[key] = time_product(m, k, n, transpose_a, accumulate, repeats, rng)
        totals[label][0] += cache[key]
        totals[label][1] += 2 * m * k * n
    return totals


def network_products(model, x):
    """[(stage, used, other)] for every Conv2d and Linear of model on input x: the GEMM lists
    of the formulation Conv2d takes (used) and of the other one (the same for Linear and for
    convolutions the grid cannot compute)."""
    listed = []
    for name, (layer, in_shape) in input_shapes(model, x).items():
        if isinstance(layer, Linear):
            n, f_in, f_out = in_shape[0], layer.in_features, layer.out_features
            used = other = [("forward", n, f_in, f_out, False, False),
                            ("dW", f_out, n, f_in, True, False),
                            ("dX", n, f_out, f_in, False, False)]
        else:
            im2col = im2col_products(layer, in_shape)
            geometry = layer.geometry(in_shape)
            algorithm = conv_policy.choose(np, geometry)
            if algorithm == "short":
                used, other = short_products(layer, in_shape), im2col
            elif algorithm == "shifted":
                used, other = shifted_products(layer, in_shape), im2col
            else:
                used = im2col
                other = (shifted_products(layer, in_shape)
                         if conv_policy.can_run("shifted", geometry) else im2col)
        listed.append((name.split(".")[0], used, other))
    return listed


def ceiling(shape, cfg, batch, repeats):
    """{stage: {"used", "other", "used_forward", "other_forward", "flops", "flops_forward"}}:
    seconds of the GEMMs of one training step alone (and of its forward products alone, the
    deployed forward pass), in the formulation Conv2d takes and in the other, and the former's
    FLOPs."""
    model = build_model(cfg, 50, seed=0, input_grad=False).train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + tuple(shape), dtype=np.float32)
    stages = defaultdict(lambda: defaultdict(float))
    cache = {}
    for stage, used, other in network_products(model, x):
        for key, products in (("used", used), ("other", other)):
            parts = products_seconds(products, repeats, rng, cache)
            stages[stage][key] += sum(s for s, _ in parts.values())
            stages[stage][key + "_forward"] += parts["forward"][0]
            if key == "used":
                stages[stage]["flops"] += sum(f for _, f in parts.values())
                stages[stage]["flops_forward"] += parts["forward"][1]
    return stages


def summarise(stages, suffix=""):
    """(seconds as used, seconds with the faster formulation per stage, FLOPs)."""
    used = sum(s["used" + suffix] for s in stages.values())
    best = sum(min(s["used" + suffix], s["other" + suffix]) for s in stages.values())
    return used, best, sum(s["flops" + suffix] for s in stages.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["reference"], choices=list(networks()))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=10, help="PyTorch steps timed")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    keep_freed_memory()
    nets = networks()
    print(f"float32 GEMM (2048^3): {gemm_rate(np):.0f} GFLOP/s; batch {args.batch}")
    results = {}
    for name in args.models:
        shape, cfg = nets[name]
        stages = ceiling(shape, cfg, args.batch, args.repeats)
        print(f"{name}: the GEMMs alone, as Conv2d computes them (ms per batch; in brackets the "
              "other formulation)")
        print(f"  {'stage':8s} {'training step':>22s}   {'forward pass':>22s}")
        for stage, s in stages.items():
            print(f"  {stage:8s} {s['used'] * 1e3:7.1f} ({s['other'] * 1e3:6.1f}) "
                  f"{s['flops'] / s['used'] / 1e9:4.0f} GF/s   "
                  f"{s['used_forward'] * 1e3:7.1f} ({s['other_forward'] * 1e3:6.1f}) "
                  f"{s['flops_forward'] / s['used_forward'] / 1e9:4.0f} GF/s")
        result = {}
        for what, suffix in (("training", ""), ("inference", "_forward")):
            used, best, flops = summarise(stages, suffix)
            result[what] = {"gemm_s": used, "best_s": best, "flops": flops}
            print(f"  {what}: {used * 1e3:.1f} ms, {flops / used / 1e9:.0f} GFLOP/s -> at most "
                  f"{args.batch / used:.1f} clips/s ({args.batch / best:.1f} with the faster "
                  "formulation per stage)")
        if not args.no_torch:
            try:
                import torch  # noqa: F401  (optional: the bench extra)
            except ImportError:
                print("  (PyTorch not installed: no ratio)")
            else:
                t = in_child(measure_torch, shape=tuple(shape), cfg=cfg, batch=args.batch,
                             steps=args.steps, warmup=2, device="cpu")
                if "error" in t:
                    raise RuntimeError(f"PyTorch measurement failed: {t['error']}")
                for what, key in (("training", "train_s"), ("inference", "infer_folded_s")):
                    torch_clips = args.batch / t[key]
                    bound = result[what]
                    bound["torch_s"] = t[key]
                    print(f"  PyTorch {t['torch']} {what} (" +
                          ("BN folded, " if what == "inference" else "") +
                          f"same run): {torch_clips:.1f} clips/s; the GEMMs alone are "
                          f"{args.batch / bound['gemm_s'] / torch_clips:.2f}x of it "
                          f"({args.batch / bound['best_s'] / torch_clips:.2f}x)")
        results[name] = result
    return results


if __name__ == "__main__":
    main()
