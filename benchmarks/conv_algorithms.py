"""Each convolution algorithm timed on every convolution of the presets and the shape set,
beside what the cost model (scratchnet.kernels.conv_cost) says: the data the model's constants
are read from, and the check of its choices.

    python -m benchmarks.conv_algorithms [--rounds 5] [--networks cpu128bc seed s5-w24-64x200-b32]

For each distinct geometry (the network's own batch) and each algorithm that can compute it:
a training pass, forward then backward (dx too, except for a one-channel input, whose
gradient no one asks for), on random float32 data, the algorithms alternating within each
round; medians of the rounds.  A plain script: NumPy first, nothing set up.
"""
import numpy as np  # first, as a user's script does

import argparse  # noqa: E402
import collections  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def network_names():
    """The names ``geometries`` knows: the shape set's shapes, then the presets."""
    from experiments.models import PRESETS
    from . import shape_set
    return list(shape_set.SHAPES) + list(PRESETS)


def geometries(names):
    """{ConvGeometry: [network names]} of every convolution in the named networks (presets of
    experiments.models or shapes of benchmarks.shape_set), in order of appearance."""
    import scratchnet as sn
    from experiments.models import PRESETS, build_model
    from scratchnet.kernels import conv_policy
    from . import shape_set
    found = collections.OrderedDict()
    choose = conv_policy.choose

    def record(xp, g):
        found.setdefault(g, []).append(current)
        return choose(xp, g)

    conv_policy.choose = record
    try:
        for current in names:
            if current in shape_set.SHAPES:
                shape, batch, cfg = shape_set.SHAPES[current]
                model = sn.ResNet(shape[0], 50, **cfg)
            else:
                preset = PRESETS[current]
                f, batch = preset["features"], preset["train"]["batch_size"]
                shape = (1,) + tuple(preset["model"].get(
                    "input_size", (f["n_mels"], 1 + int(5 * f["sr"]) // f["hop_length"])))
                model = build_model(preset["model"], 50, seed=0, input_grad=False)
            model.forward(np.zeros((batch,) + tuple(shape), np.float32))
    finally:
        conv_policy.choose = choose
    return found


def operands(g, rng):
    """(x, w, b, dy): random float32 input and weight of geometry ``g`` in scratchnet's
    layouts (channels-last input, weight in patch order), a bias if ``g`` has one, and an
    upstream gradient of the output's shape (channels-last too)."""
    from scratchnet.kernels.im2col import conv_output_size
    kh, kw = g.kernel
    x = rng.standard_normal((g.batch, g.in_channels, g.height, g.width)).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)  # channels-last
    w = rng.standard_normal((g.out_channels, kh, kw, g.in_channels)).astype(np.float32)
    w = w.transpose(0, 3, 1, 2)                                               # patch order
    b = rng.standard_normal(g.out_channels).astype(np.float32) if g.bias else None
    ho = conv_output_size(g.height, kh, g.stride, g.padding)
    wo = conv_output_size(g.width, kw, g.stride, g.padding)
    dy = rng.standard_normal((g.batch, ho, wo, g.out_channels)).astype(np.float32)
    return x, w, b, dy.transpose(0, 3, 1, 2)


def training_pass(algorithm, g, rng):
    """A function running ``algorithm``'s forward and backward on geometry ``g``."""
    from scratchnet.kernels.convolution import ALGORITHMS
    module = ALGORITHMS[algorithm]
    x, w, b, dy = operands(g, rng)

    def run():
        _, saved = module.forward(x, w, b, g.stride, g.padding)
        module.backward(dy, saved, needs_input_grad=g.in_channels > 1)
    return run


def main(argv=None):
    from scratchnet.kernels import conv_cost, conv_policy
    from . import shape_set
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_algorithms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", nargs="+", choices=network_names(), metavar="NAME",
                   default=["cpu128bc", "seed", "ast-tiny"] + list(shape_set.SHAPES),
                   help="shapes of benchmarks.shape_set or presets: " + ", ".join(network_names()))
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'geometry (C HxW k s O N)':<30} {'measured ms':<44} {'best':<8} {'model':<8}")
    for g, where in geometries(args.networks).items():
        algorithms = [a for a in conv_cost.COSTS if conv_policy.can_run(a, g)]
        if len(algorithms) < 2:
            continue
        runs = {a: training_pass(a, g, rng) for a in algorithms}
        for run in runs.values():
            run()  # warm-up
        times = {a: [] for a in algorithms}
        for _ in range(args.rounds):
            for a, run in runs.items():
                t = time.perf_counter()
                run()
                times[a].append(time.perf_counter() - t)
        measured = {a: statistics.median(v) for a, v in times.items()}
        model = {a: conv_cost.COSTS[a](g, conv_cost.CPU) for a in algorithms}
        best, chosen = min(measured, key=measured.get), min(model, key=model.get)
        name = (f"{g.in_channels} {g.height}x{g.width} k{g.kernel[0]} s{g.stride} "
                f"{g.out_channels} {g.batch}")
        text = " ".join(f"{a}={measured[a] * 1e3:.1f}" for a in algorithms)
        loss = "" if best == chosen else f"  model loses x{measured[chosen] / measured[best]:.2f}"
        print(f"{name:<30} {text:<44} {best:<8} {chosen:<8}{loss}", flush=True)
        rows.append(dict(geometry=g._asdict(), networks=where, measured=measured, model=model))
    return rows


if __name__ == "__main__":
    main()
