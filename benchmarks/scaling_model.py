"""A model, on paper, of data-parallel training on 8 to 64 nodes: when does adding nodes stop
paying?

    python -m benchmarks.scaling_model --clip-ms cpu128bc=14.7 seed=120

Per step, every node sums S = 4 P bytes of float32 gradients (P parameters).  A ring
allreduce sends and receives 2 (N - 1) / N x S bytes per node over 2 (N - 1) messages, so on
links of B bytes/s with a latency alpha per message

    T_allreduce(N) = 2 (N - 1) / N x S / B + 2 (N - 1) alpha,

nearly 2 S / B whatever N.  A node computes its b = G / N clips of a global batch G in b t
(t: seconds per clip, measured by benchmarks.distributed_step on one node), so a step takes
b t + T_allreduce when the sum is not overlapped with the backward pass (as here), and the
parallel efficiency is b t / (b t + T_allreduce).  It falls to one half when the compute per
node falls to the allreduce: b = T_allreduce / t clips per node, a global batch of
G* = N T_allreduce / t.  Below G*, adding nodes stops paying: more than half of each step is
communication.  The recipe's global batch (32 for cpu128bc and seed) is far below it; scaling
out therefore needs a larger global batch (and its learning-rate recipe re-chosen), or a
network with more work per parameter.

The figures are a model: links at their nominal rate, no overlap, no contention, compute per
clip independent of the local batch (small local batches run below that rate on a CPU).
"""
import argparse

from experiments.models import PRESETS, build_model

LINKS_GBIT = (10, 25, 100)
NODES = (8, 16, 32, 64)


def parameters(preset):
    model = build_model(PRESETS[preset]["model"], 50, seed=0)
    return int(sum(p.data.size for p in model.parameters()))


def allreduce_seconds(nbytes, nodes, gbit, latency):
    return 2 * (nodes - 1) / nodes * nbytes / (gbit * 1e9 / 8) + 2 * (nodes - 1) * latency


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip-ms", nargs="+", required=True, metavar="PRESET=MS",
                   help="measured training milliseconds per clip on one node, per preset")
    p.add_argument("--latency-us", type=float, default=5.0,
                   help="per-message latency alpha (default 5 us)")
    args = p.parse_args(argv)
    latency = args.latency_us * 1e-6
    rows = []
    for item in args.clip_ms:
        preset, ms = item.split("=")
        count, clip = parameters(preset), float(ms) / 1000
        batch = PRESETS[preset]["train"]["batch_size"]
        print(f"\n{preset}: {count:,} parameters, {4 * count / 1e6:.1f} MB of gradients per "
              f"step; {clip * 1000:.1f} ms per clip on one node; recipe batch {batch}")
        print(f"{'link':>9} {'nodes':>5} {'allreduce':>10} {'G* (50% efficiency)':>20} "
              f"{'efficiency at G=' + str(batch):>18}")
        for gbit in LINKS_GBIT:
            for nodes in NODES:
                t = allreduce_seconds(4 * count, nodes, gbit, latency)
                g_star = nodes * t / clip
                local = batch / nodes
                efficiency = local * clip / (local * clip + t) if local >= 1 else None
                shown = (f"{100 * efficiency:>17.0f}%" if efficiency is not None
                         else f"{'(under 1 clip/node)':>18}")
                print(f"{gbit:>5} Gb/s {nodes:>5} {t * 1000:>8.1f} ms {g_star:>14,.0f} clips"
                      f" {shown}")
                rows.append(dict(preset=preset, gbit=gbit, nodes=nodes, allreduce=t,
                                 g_star=g_star, efficiency=efficiency))
    return rows


if __name__ == "__main__":
    main()
