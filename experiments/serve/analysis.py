"""One upload classified: its top classes and per-window timeline (the keys of
``classify --json``), and its pictures as PNG data URIs.

The upload is read once, whole: it is at most --max-seconds long, and the pictures need its
waveform and log-Mel as well as its windows.
"""
import base64
import io

import numpy as np

from dsp import load_audio
from scratchnet.runtime.backend import to_numpy

from .. import visualize
from ..classify import file_result

CHANNELS = 8  # feature maps shown per stage


def analyse(clf, path, hop=1.0, top_k=5):
    """{"top", "timeline", "duration", "pictures": {"waveform", "logmel", "feature_maps"[,
    "attention"]}} for the audio file at ``path``."""
    y, _ = load_audio(path, sr=clf.sr)
    windows, starts = clf.windows(y, hop)
    result = file_result(clf, path, starts, clf.predict(windows), top_k, timeline=True)
    seconds = len(y) / clf.sr
    logmel = to_numpy(clf.features(clf.xp.asarray(y)))
    parts = visualize.analyse(clf, clf.windows(y, 5.0)[0][0])
    pictures = dict(waveform=png(waveform_figure, y, clf.sr, result["timeline"]),
                    logmel=png(logmel_figure, clf, logmel, seconds),
                    feature_maps=png(visualize.feature_maps_figure, clf, parts["stages"],
                                     CHANNELS, clf.window / clf.sr))  # the first window
    if parts["attention"]:  # a transformer: where its class token looks, layer by layer
        pictures["attention"] = png(visualize.attention_figure, clf, parts["attention"],
                                    CHANNELS, clf.window / clf.sr)
    return dict(top=result["top"], timeline=result["timeline"], duration=round(seconds, 3),
                pictures=pictures)


def png(draw, *args):
    """``draw(*args, out)`` into memory, as a data URI."""
    buffer = io.BytesIO()
    draw(*args, buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def waveform_figure(y, sr, timeline, out):
    """The waveform, and over it each sliding window's top label at the window's centre."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(12, 2.8))
    step = max(1, len(y) // 20000)  # enough points for the picture, not one per sample
    t = np.arange(0, len(y), step) / sr
    ax.plot(t, y[::step], lw=0.4, color="#3465a4")
    ax.set(xlabel="time (s)", ylabel="amplitude", xlim=(0, max(len(y) / sr, 1e-3)),
           ylim=(-1.05, 1.05))
    for k, w in enumerate(timeline):
        colour = f"C{k % 10}"
        ax.axvspan(w["start"], w["end"], ymin=0.92 - 0.06 * (k % 3), ymax=0.97 - 0.06 * (k % 3),
                   color=colour, alpha=0.35)
        ax.text((w["start"] + w["end"]) / 2, 0.94 - 0.06 * (k % 3), w["label"],
                transform=ax.get_xaxis_transform(), ha="center", va="center", fontsize=6)
    ax.set_title("waveform, with each 5-second window's top class")
    fig.tight_layout()
    fig.savefig(out, dpi=80, format="png")
    plt.close(fig)


def logmel_figure(clf, logmel, seconds, out):
    """The whole clip's log-Mel in dB."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(12, 3.2))
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 0.02])
    visualize.draw_logmel(fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), clf,
                          logmel, seconds, title="log-Mel (the network's input, in dB)")
    fig.subplots_adjust(left=0.08, right=0.93, bottom=0.18, top=0.88, wspace=0.03)
    fig.savefig(out, dpi=80, format="png")
    plt.close(fig)
