"""What the network sees and does with a clip: one PNG per file and one self-contained HTML page.

    python -m experiments.visualize dog.wav rain.flac --out viz/

Each figure shows the waveform, the log-Mel input, the feature maps of every stage (the most
active channels, by mean activation) and the top-5 prediction bars.  The HTML page embeds the
figures as base64 PNGs, so any browser opens it without a server.
"""
from scratchnet.runtime import configure

configure()  # first, before NumPy loads OpenBLAS (scratchnet.runtime)

import argparse
import base64
import html
import os
import sys

import numpy as np

from dsp import load_audio
from scratchnet.runtime.backend import to_numpy

from .inference import open_classifier, probabilities


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--checkpoint")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--channels", type=int, default=8, help="feature maps shown per stage")
    return p.parse_args(argv)


def analyse(clf, y):
    """Run the first window of y through the model; return the pieces the figure shows."""
    window = clf.windows(y, 5.0)[0][:1]
    x = clf.logmel(window)
    logits, stages = clf.model.forward_features(x)
    return dict(window=window[0], logmel=to_numpy(clf.logmel(window, standardised=False))[0, 0],
                stages={k: to_numpy(v)[0] for k, v in stages.items()},
                probs=probabilities(logits)[0])


def figure(clf, name, parts, channels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stages = parts["stages"]
    rows = 2 + len(stages)
    fig = plt.figure(figsize=(14, 2.4 * rows))
    grid = fig.add_gridspec(rows, channels)
    ax = fig.add_subplot(grid[0, :channels // 2])
    t = np.arange(len(parts["window"])) / clf.sr
    ax.plot(t, parts["window"], lw=0.4)
    ax.set(title=f"waveform: {name}", xlabel="s", xlim=(0, t[-1]))
    ax = fig.add_subplot(grid[0, channels // 2 + 1:])  # room for the labels
    top = clf.top(parts["probs"], 5)
    ax.barh([e["label"] for e in top][::-1], [e["prob"] for e in top][::-1])
    ax.set(title="top-5 prediction", xlim=(0, 1))
    ax = fig.add_subplot(grid[1, :])
    ax.imshow(parts["logmel"], origin="lower", aspect="auto", cmap="magma")
    ax.set(title="log-Mel input (dB)", ylabel="mel band", xlabel="frame")
    for r, (stage, maps) in enumerate(stages.items(), start=2):
        strongest = np.argsort(maps.mean(axis=(1, 2)))[::-1][:channels]
        for c, ch in enumerate(strongest):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(maps[ch], origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{stage} ch {ch}", fontsize=7)
    # tight_layout would squeeze the 8 small panels of a row; fixed margins keep them wide.
    fig.subplots_adjust(left=0.05, right=0.98, top=0.97, bottom=0.03, hspace=0.7, wspace=0.12)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_html(entries, path):
    """entries: (file name, png path, top-5 list).  Images are embedded as data URIs."""
    blocks = []
    for name, png, top in entries:
        with open(png, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        labels = "".join(f"<li>{html.escape(e['label'])}: {e['prob']:.3f}</li>" for e in top)
        blocks.append(f"<section><h2>{html.escape(name)}</h2><ol>{labels}</ol>"
                      f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
                      "</section>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>ESC-50 classifier</title>"
            "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}</style></head>"
            "<body><h1>ESC-50 classifier: inputs, feature maps, predictions</h1>"
            + "".join(blocks) + "</body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def main(argv=None):
    args = parse_args(argv)
    clf = open_classifier(args.checkpoint, args.device)
    if clf is None:
        return 2
    os.makedirs(args.out, exist_ok=True)
    entries, failed = [], 0
    for path in args.files:
        try:
            y, _ = load_audio(path, sr=clf.sr)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        parts = analyse(clf, y)
        stem = os.path.splitext(os.path.basename(path))[0]
        png = os.path.join(args.out, f"{stem}.png")
        figure(clf, os.path.basename(path), parts, args.channels, png)
        entries.append((os.path.basename(path), png, clf.top(parts["probs"], 5)))
        print(png)
    if entries:
        page = os.path.join(args.out, "index.html")
        write_html(entries, page)
        print(page)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
