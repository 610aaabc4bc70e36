"""Why residual connections keep gradients alive: the seed's toy example, then real networks.

    python -m experiments.gradient_flow --out runs/gradient_flow

1. Toy.  A chain of L scalar layers with weight W.  Plain: y = W^L x, so dy/dx = W^L
   (0.1^5 = 1e-5 for W = 0.1, L = 5: the gradient all but vanishes).  Residual: each layer is
   y <- y + W y, so dy/dx = (1 + W)^L = 1.61051, never below 1 for W >= 0; the seed quoted its
   first-order expansion 1 + L W = 1.5.
2. Real networks built from scratchnet: plain and residual stacks of conv3x3-BN-ReLU pairs
   (the residual one adds the identity shortcut: BasicBlock), depth = number of 3x3 convs in
   the stack (8, 16, 32, 56).  At initialisation, on a batch of ESC-50 log-Mels, the backward
   pass gives ||dL/dx|| at the input of every block.  Then the deepest pair trains for
   --steps steps with the same recipe and data, and the training losses are compared.
Writes gradient_flow.json (every number) and two PNGs (gradient norms; training loss).
"""
import json
import os
import sys
import time
from collections import OrderedDict

import numpy as np

import scratchnet as sn

from experiments import cli


def toy_chain(weight=0.1, layers=5):
    """Exact derivatives dy/dx after each of ``layers`` scalar layers, plain and residual."""
    rows = []
    plain = residual = 1.0
    for layer in range(1, layers + 1):
        plain *= weight               # d(W y)/dy = W
        residual *= 1.0 + weight      # d(y + W y)/dy = 1 + W
        rows.append(dict(layer=layer, plain=plain, residual=residual,
                         residual_first_order=1.0 + layer * weight))
    return rows


class PlainBlock(sn.Layer):
    """BasicBlock without its shortcut: y = ReLU(BN(conv(ReLU(BN(conv(x))))))."""

    def __init__(self, channels, rng):
        super().__init__()
        self.body = sn.Sequential(sn.Conv2d(channels, channels, 3, 1, 1, bias=False, rng=rng),
                                  sn.BatchNorm2d(channels), sn.ReLU(),
                                  sn.Conv2d(channels, channels, 3, 1, 1, bias=False, rng=rng),
                                  sn.BatchNorm2d(channels), sn.ReLU())

    def forward(self, x):
        return self.body.forward(x)

    def backward(self, dy):
        return self.body.backward(dy)


def build_stack(depth, residual, width=16, num_classes=50, seed=0):
    """stem (conv 3x3/2, BN, ReLU, max-pool 3x3/2) -> depth/2 blocks -> GAP -> linear."""
    rng = np.random.default_rng(seed)
    blocks = [sn.BasicBlock(width, width, 1, rng) if residual else PlainBlock(width, rng)
              for _ in range(depth // 2)]
    return sn.Sequential(OrderedDict(
        stem=sn.Sequential(sn.Conv2d(1, width, 3, 2, 1, bias=False, rng=rng),
                           sn.BatchNorm2d(width), sn.ReLU(), sn.MaxPool2d(3, 2, 1)),
        blocks=sn.Sequential(*blocks), pool=sn.GlobalAvgPool2d(),
        fc=sn.Linear(width, num_classes, rng=rng)))


def block_gradient_norms(model, x, labels):
    """Forward and backward once; ||dL/dx|| at the input of every block, first block first
    (the norm is over the whole batch tensor)."""
    loss = sn.SoftmaxCrossEntropy()
    value = loss.forward(model.forward(x), labels)
    model.zero_grad()
    dy = model.fc.backward(loss.backward())
    dy = model.pool.backward(dy)
    norms = []
    for block in reversed(list(model.blocks)):
        dy = block.backward(dy)
        norms.append(float((dy.astype(np.float64) ** 2).sum() ** 0.5))
    model.stem.backward(dy)
    return norms[::-1], float(value)


def train_losses(model, x, labels, steps, batch, lr, seed, label=""):
    from tqdm import tqdm
    rng = np.random.default_rng(seed)
    loss = sn.SoftmaxCrossEntropy()
    opt = sn.AdamW(list(model.parameters()), lr=lr, weight_decay=1e-4)
    history = []
    for _ in tqdm(range(steps), desc=label, file=sys.stderr, leave=False):
        idx = rng.choice(len(x), size=batch, replace=False)
        opt.zero_grad()
        history.append(float(loss.forward(model.forward(x[idx]), labels[idx])))
        model.backward(loss.backward())
        opt.step()
    return history


def load_data(args):
    """Standardised ESC-50 log-Mels (N, 1, 64, 251) and labels; training folds only."""
    from experiments import esc50
    from experiments.models import get_preset
    root = esc50.find_dataset(args.data, download_hint=False)
    feats, labels, folds = esc50.load_features(root, get_preset("cpu")["features"],
                                               args.cache_dir)
    keep = folds != 1
    x = feats[keep]
    x = ((x - x.mean()) / x.std())[:, None].astype(np.float32)
    return x, labels[keep]


def plot(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (depth, entry) in enumerate(results["init"].items()):
        color = f"C{i}"
        for kind, style in (("plain", "--"), ("residual", "-")):
            norms = entry[kind]["grad_norms"]
            ax.semilogy(range(1, len(norms) + 1), norms, style, color=color,
                        label=f"{kind}, depth {depth}")
    ax.set(xlabel="block (input side = 1)", ylabel="||dL/dx|| at block input",
           title="Gradient norms at initialisation (dashed: plain, solid: residual)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "gradient_norms.png"), dpi=100)
    plt.close(fig)
    if results.get("training"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for kind, losses in results["training"]["losses"].items():
            span = min(10, len(losses))  # a shorter run is averaged over all its steps
            smooth = np.convolve(losses, np.ones(span) / span, mode="valid")
            ax.plot(np.arange(span, len(losses) + 1), smooth,
                    label=f"{kind}, depth {results['training']['depth']}")
        ax.set(xlabel="step", ylabel=f"training loss (mean of the last {span} steps)",
               title="Training the deepest pair on ESC-50 log-Mels")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "training_loss.png"), dpi=100)
        plt.close(fig)


def even_depth(text):
    """A stack depth: an even number of 3x3 convolutions, two per block, at least 2."""
    import argparse
    value = cli.positive_int(text)
    if value % 2:
        raise argparse.ArgumentTypeError(f"expected an even number of convolutions (two per "
                                         f"block), got {text!r}")
    return value


def parse_args(argv=None):
    p = cli.parser("experiments.gradient_flow", __doc__)
    p.add_argument("--out", type=cli.output_dir, required=True, help="output directory")
    cli.data_arguments(p)
    p.add_argument("--depths", type=even_depth, nargs="+", default=[8, 16, 32, 56],
                   help="3x3 convolutions per stack, even (8 16 32 56)")
    p.add_argument("--width", type=cli.positive_int, default=16, help="channels (16)")
    p.add_argument("--batch", type=cli.positive_int, default=32, help="clips per step (32)")
    p.add_argument("--steps", type=cli.nonnegative_int, default=300,
                   help="training steps of the deepest pair (300, about half an hour on 2 "
                        "cores; 0: skip training)")
    p.add_argument("--lr", type=cli.positive_float, default=1e-3, help="learning rate (1e-3)")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    toy = toy_chain()
    print("Toy chain, W = 0.1: dy/dx after each layer")
    print(f"{'layer':>5}  {'plain W^L':>12}  {'residual (1+W)^L':>17}  {'first order 1+LW':>17}")
    for r in toy:
        print(f"{r['layer']:>5}  {r['plain']:>12.6g}  {r['residual']:>17.6g}  "
              f"{r['residual_first_order']:>17.6g}")

    x, labels = load_data(args)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(x), size=args.batch, replace=False)
    results = {"toy": toy, "init": OrderedDict(), "config": vars(args)}
    print("\n||dL/dx|| at initialisation (first block / last block; ratio)")
    for depth in args.depths:
        entry = {}
        for kind in ("plain", "residual"):
            model = build_stack(depth, kind == "residual", args.width, seed=args.seed)
            norms, loss = block_gradient_norms(model, x[idx], labels[idx])
            entry[kind] = dict(grad_norms=norms, loss=loss,
                               first_over_last=norms[0] / norms[-1])
            print(f"depth {depth:>3} {kind:>8}: first {norms[0]:.3e}  last {norms[-1]:.3e}  "
                  f"ratio {norms[0] / norms[-1]:.3e}")
        results["init"][str(depth)] = entry

    if args.steps:
        depth = max(args.depths)
        losses = {}
        for kind in ("plain", "residual"):
            t = time.perf_counter()
            model = build_stack(depth, kind == "residual", args.width, seed=args.seed)
            losses[kind] = train_losses(model, x, labels, args.steps, args.batch, args.lr,
                                        args.seed, f"{kind} depth {depth}")
            print(f"train depth {depth} {kind}: loss {np.mean(losses[kind][:10]):.3f} -> "
                  f"{np.mean(losses[kind][-10:]):.3f} (mean of first/last 10 steps; "
                  f"{time.perf_counter() - t:.0f} s)")
        results["training"] = dict(depth=depth, steps=args.steps, losses=losses)

    with open(os.path.join(args.out, "gradient_flow.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, args.out)
    print(f"\nwrote {args.out}/gradient_flow.json, gradient_norms.png"
          + (", training_loss.png" if args.steps else ""))
    return results


if __name__ == "__main__":
    cli.run(main)
