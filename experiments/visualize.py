"""What the network sees and does with a clip: one PNG per file and one self-contained HTML page.

    python -m experiments.visualize dog.wav rain.flac --out viz/

Each figure shows the waveform, the log-Mel input, the feature maps of every stage (the most
active channels, by mean activation), for a transformer where each layer's class token looks
on the log-Mel image, and the top-5 prediction bars.  The HTML page embeds the figures as
base64 PNGs, so any browser opens it without a server.
"""
import base64
import html
import os
import sys

import numpy as np

from dsp import AudioError
from dsp.mel import mel_frequencies
from scratchnet.runtime.backend import to_numpy

from . import cli
from .inference import Classifier, probabilities


MAX_CHANNELS = 32  # panels per row that a 14-inch figure still shows


def parse_args(argv=None):
    p = cli.parser("experiments.visualize", __doc__)
    p.add_argument("files", nargs="+", help="audio files (the first 5 s of each is shown)")
    p.add_argument("--out", type=cli.output_dir, required=True, help="output directory")
    p.add_argument("--checkpoint", type=cli.existing_file,
                   help="model.npz from train_esc50 (default: the packaged model)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--channels", type=cli.positive_int, default=8,
                   help=f"feature maps shown per stage (8; at most {MAX_CHANNELS})")
    args = p.parse_args(argv)
    if args.channels > MAX_CHANNELS:
        p.error(f"argument --channels: at most {MAX_CHANNELS} maps fit a row, got "
                f"{args.channels}")
    return args


def first_window(clf, path):
    """The file's first model window (zero-padded when shorter), read block by block: a long
    file is not loaded whole to show its first seconds."""
    return next(iter(clf.file_windows(path, 5.0, block_seconds=10.0)))[1]


def analyse(clf, window):
    """Run one window through the model; return the pieces the figure shows."""
    window = window[None]
    x = clf.logmel(window)
    logits, stages = clf.model.forward_features(x)
    # A transformer's class token: where each layer looks on the log-Mel image.
    attention = [to_numpy(m)[0] for m in getattr(clf.model, "attention_maps", list)()]
    return dict(window=window[0], logmel=to_numpy(clf.logmel(window, standardised=False))[0, 0],
                stages={k: to_numpy(v)[0] for k, v in stages.items()},
                attention=attention, probs=probabilities(logits)[0])


def mel_axis(ax, clf, bands):
    """Label a mel-band axis of ``bands`` rows in Hz, at the bands' centre frequencies."""
    f = clf.meta["features"]
    centres = mel_frequencies(f["n_mels"] + 2, f["fmin"], f["fmax"] or f["sr"] / 2)[1:-1]
    ticks = np.linspace(0, f["n_mels"] - 1, 5).round().astype(int)
    ax.set_yticks(ticks * bands / f["n_mels"], [f"{centres[t]:.0f}" for t in ticks])


def figure(clf, name, parts, channels, path):
    """The waveform, the log-Mel input, the strongest feature maps of every stage (each
    spanning the input's time and frequency, time across and frequency up) and the top-5."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    stages = parts["stages"]
    heights = [2.4, 2.4] + [1.6] * len(stages) + ([1.8] if parts.get("attention") else [])
    fig = plt.figure(figsize=(14, sum(heights)))
    # A narrow last column holds each row's colour scale.
    grid = fig.add_gridspec(len(heights), channels + 1, height_ratios=heights,
                            width_ratios=[1] * channels + [0.06])
    seconds = len(parts["window"]) / clf.sr
    ax = fig.add_subplot(grid[0, :channels // 2])
    t = np.arange(len(parts["window"])) / clf.sr
    ax.plot(t, parts["window"], lw=0.4)
    ax.set(title=f"waveform: {name}", xlabel="time (s)", ylabel="amplitude", xlim=(0, seconds))
    ax = fig.add_subplot(grid[0, channels // 2 + 1:channels])  # room for the labels
    top = clf.top(parts["probs"], 5)
    ax.barh([e["label"] for e in top][::-1], [e["prob"] for e in top][::-1])
    ax.set(title="top-5 prediction", xlabel="probability", xlim=(0, 1))
    draw_logmel(fig.add_subplot(grid[1, :channels]), fig.add_subplot(grid[1, channels]), clf,
                parts["logmel"], seconds)
    draw_feature_maps(fig, grid, 2, clf, stages, channels, seconds)
    if parts.get("attention"):
        draw_attention(fig, grid, 2 + len(stages), clf, parts["attention"], channels, seconds)
    # tight_layout would squeeze the 8 small panels of a row; fixed margins keep them wide.
    fig.subplots_adjust(left=0.06, right=0.95, top=0.97, bottom=0.03, hspace=0.8, wspace=0.15)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def draw_logmel(ax, cax, clf, logmel, seconds, title="log-Mel input"):
    """A log-Mel image in dB on ``ax``, time in seconds across, frequency in Hz up, and its
    colour scale on ``cax``."""
    image = ax.imshow(logmel, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, seconds, 0, logmel.shape[0]))
    ax.figure.colorbar(image, cax=cax, label="power (dB)")
    mel_axis(ax, clf, logmel.shape[0])
    ax.set(title=title, ylabel="frequency (Hz, mel scale)", xlabel="time (s)")


def draw_feature_maps(fig, grid, first_row, clf, stages, channels, seconds):
    """The ``channels`` most active maps of each stage, a row per stage from ``first_row`` of
    ``grid`` (whose last column holds each row's colour scale)."""
    for r, (stage, maps) in enumerate(stages.items(), start=first_row):
        strongest = np.argsort(maps.mean(axis=(1, 2)))[::-1][:channels]
        for c, ch in enumerate(strongest):
            ax = fig.add_subplot(grid[r, c])
            # Each map covers the input's 5 s and its frequency range, at its own resolution.
            image = ax.imshow(maps[ch], origin="lower", aspect="auto", cmap="viridis",
                              extent=(0, seconds, 0, maps.shape[1]))
            ax.set_box_aspect(maps.shape[1] / maps.shape[2])  # square cells: its true shape
            ax.set_title(f"{stage} ch {ch} ({maps.shape[1]}x{maps.shape[2]})", fontsize=7)
            ax.tick_params(labelsize=6)
            if c == 0:
                mel_axis(ax, clf, maps.shape[1])
                ax.set_ylabel("Hz", fontsize=7)
            else:
                ax.set_yticks([])
            ax.set_xlabel("time (s)", fontsize=6)
        scale = fig.colorbar(image, cax=fig.add_subplot(grid[r, channels]))  # the last map's
        scale.set_label("activation", fontsize=6)
        scale.ax.tick_params(labelsize=6)


def draw_attention(fig, grid, row, clf, maps, channels, seconds):
    """Each layer's class-token attention over the patches (F', T'), on the log-Mel image's
    axes: where the layer looks, in time and frequency."""
    n_mels = clf.meta["features"]["n_mels"]
    for c, a in enumerate(maps[:channels]):
        ax = fig.add_subplot(grid[row, c])
        image = ax.imshow(a, origin="lower", aspect="auto", cmap="inferno",
                          extent=(0, seconds, 0, n_mels))
        ax.set_box_aspect(a.shape[0] / a.shape[1])  # square cells, as the feature maps
        ax.set_title(f"layer {c + 1} attention ({a.shape[0]}x{a.shape[1]})", fontsize=7)
        ax.tick_params(labelsize=6)
        if c == 0:
            mel_axis(ax, clf, n_mels)
            ax.set_ylabel("Hz", fontsize=7)
        else:
            ax.set_yticks([])
        ax.set_xlabel("time (s)", fontsize=6)
    scale = fig.colorbar(image, cax=fig.add_subplot(grid[row, channels]))
    scale.set_label("attention weight", fontsize=6)
    scale.ax.tick_params(labelsize=6)


def feature_maps_figure(clf, stages, channels, seconds, out):
    """The feature-map rows alone, saved as PNG to ``out`` (a path or a binary file)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(14, 1.6 * len(stages)))
    grid = fig.add_gridspec(len(stages), channels + 1, width_ratios=[1] * channels + [0.06])
    draw_feature_maps(fig, grid, 0, clf, stages, channels, seconds)
    fig.subplots_adjust(left=0.06, right=0.95, top=0.95, bottom=0.08, hspace=0.9, wspace=0.15)
    fig.savefig(out, dpi=80, format="png")
    plt.close(fig)


def attention_figure(clf, maps, channels, seconds, out):
    """The attention row alone, saved as PNG to ``out`` (a path or a binary file)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(14, 1.9))
    grid = fig.add_gridspec(1, channels + 1, width_ratios=[1] * channels + [0.06])
    draw_attention(fig, grid, 0, clf, maps, channels, seconds)
    fig.subplots_adjust(left=0.06, right=0.95, top=0.85, bottom=0.2, wspace=0.15)
    fig.savefig(out, dpi=80, format="png")
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
    clf = Classifier(args.checkpoint, args.device)
    os.makedirs(args.out, exist_ok=True)
    entries, failed = [], 0
    for path in args.files:
        try:
            parts = analyse(clf, first_window(clf, path))
        except (OSError, AudioError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
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
    cli.run(main)
