"""Summarise finished runs of train_esc50 as Markdown: per fold and over folds, and the
accuracy/time frontier, over the folds they share, when several runs are given.

    python -m experiments.summary results/cpu128-5fold
    python -m experiments.summary runs/val-h1-fold2 runs/val-h1-fold2-bc --plot frontier.png
    python -m experiments.summary results/cpu128bc-5fold results/ast-tiny-5fold --classes

Every figure is read from the run's own files (``results.json``, each fold's ``metrics.json``
and ``predictions.json``), and each fold is checked to be scored at the end of its schedule:
its single-view accuracy must be its last epoch's held-out accuracy (no epoch picked), over
as many epochs as the schedule has.
"""
import json
import os

import numpy as np

from . import cli
from .esc50 import LAST_EPOCHS
from .report import machines_of

# An official ESC-50 fold holds 400 clips (8 per class); a run with --limit holds fewer.
CLIPS_PER_FOLD = 400


class SummaryError(cli.CommandError):
    """A run whose files are missing or disagree (reported as one ``error:`` line)."""


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SummaryError(f"{path} is missing: is this a train_esc50 output folder?")


def machine_text(machines):
    """A table cell naming ``machines``, each once: minutes compare only on the same
    processor."""
    return "; ".join(dict.fromkeys(machines)) or "not recorded"


def fold_rows(run_dir):
    """One dict per finished fold of ``run_dir``: accuracy, clips right of clips scored,
    minutes of training, epochs, the machines it trained on (none where its epochs do not
    record them); after checking it against its metrics.json."""
    results = read_json(os.path.join(run_dir, "results.json"))
    epochs_planned = results.get("config", {}).get("train", {}).get("epochs")
    rows = []
    for fold, entry in sorted(results["folds"].items(), key=lambda kv: int(kv[0])):
        history = read_json(os.path.join(run_dir, f"fold{fold}", "metrics.json"))
        last = history[-1]
        single = entry.get("accuracy_single_view", entry["accuracy"])
        if last["test_acc"] != single or len(history) != entry["epochs"] or \
                (epochs_planned and entry["epochs"] != epochs_planned):
            raise SummaryError(
                f"{run_dir} fold {fold}: results.json says {single} after {entry['epochs']} "
                f"epochs, its metrics.json {last['test_acc']} after {len(history)} "
                f"(schedule: {epochs_planned}); a fold must be scored at its last epoch")
        predictions = os.path.join(run_dir, f"fold{fold}", "predictions.json")
        if os.path.isfile(predictions):
            scored = read_json(predictions)
            clips = len(scored)
            right = sum(r["target"] == r["predicted"] for r in scored)
            if right / clips != entry["accuracy"]:
                raise SummaryError(f"{predictions}: {right}/{clips} right, but results.json "
                                   f"says {entry['accuracy']}")
        elif results.get("config", {}).get("limit") is None:
            clips = CLIPS_PER_FOLD
            right = int(round(entry["accuracy"] * clips))
        else:
            clips = right = None
        rows.append(dict(fold=int(fold), accuracy=entry["accuracy"], right=right, clips=clips,
                         minutes=entry["seconds"] / 60, epochs=entry["epochs"],
                         machines=machines_of(history),
                         last10=float(np.mean([h["test_acc"]
                                               for h in history[-LAST_EPOCHS:]]))))
    return results, rows


def fold_table(rows):
    """Markdown of a run's :func:`fold_rows`: one line per fold, then the mean and standard
    deviation over the folds (the population's, as results.json's)."""
    lines = ["| fold | accuracy | mean of its last 10 epochs | minutes | epochs | machine |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        count = f" ({r['right']}/{r['clips']})" if r["clips"] else ""
        lines.append(f"| {r['fold']} | {100 * r['accuracy']:.2f}%{count} | "
                     f"{100 * r['last10']:.3f}% | {r['minutes']:.1f} | {r['epochs']} | "
                     f"{machine_text(r['machines'])} |")
    accs = np.array([r["accuracy"] for r in rows])  # host: numbers read from JSON
    minutes = np.mean([r["minutes"] for r in rows])
    folds = f"{len(rows)} fold" + ("s" if len(rows) != 1 else "")
    lines.append(f"| mean +- std ({folds}) | {100 * accs.mean():.2f}% +- "
                 f"{100 * accs.std():.2f} | | {minutes:.1f} per fold | | |")
    return "\n".join(lines)


def frontier(rows_by_run, plot=None):
    """Markdown: each run's mean accuracy against its mean minutes per fold (``rows_by_run``:
    run folder -> its :func:`fold_rows`), over the folds every run has finished, since folds
    differ by several points and a mean over other folds compares nothing; with ``plot`` a PNG
    of the same, the runs on the frontier (none both faster and more accurate) joined."""
    folds = shared_folds(rows_by_run)
    rows_by_run = {run: [r for r in rows if r["fold"] in folds]
                   for run, rows in rows_by_run.items()}
    points = [(os.path.basename(os.path.normpath(run_dir)),
               float(np.mean([r["minutes"] for r in rows])),
               float(np.mean([r["accuracy"] for r in rows])), len(rows),
               machine_text(m for r in rows for m in r["machines"]))
              for run_dir, rows in rows_by_run.items()]
    best = [p for p in points
            if not any(q[1] <= p[1] and q[2] > p[2] or q[1] < p[1] and q[2] >= p[2]
                       for q in points)]
    lines = [f"Over fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}, "
             "the folds every run has finished:", "",
             "| run | folds | minutes per fold | mean accuracy | on the frontier | machine |",
             "|---|---|---|---|---|---|"]
    for point in sorted(points, key=lambda p: p[1]):
        name, minutes, acc, n, machines = point
        mark = "yes" if point in best else "no"
        lines.append(f"| {name} | {n} | {minutes:.1f} | {100 * acc:.2f}% | {mark} | "
                     f"{machines} |")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter([p[1] for p in points], [100 * p[2] for p in points])
        for name, minutes, acc, *_ in points:
            ax.annotate(name, (minutes, 100 * acc), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        best.sort(key=lambda p: p[1])
        ax.plot([p[1] for p in best], [100 * p[2] for p in best], "--", alpha=0.6)
        ax.set(xlabel="minutes per fold (2 cores)", ylabel="mean accuracy (%)",
               title="accuracy against training time")
        fig.tight_layout()
        fig.savefig(plot, dpi=100)
        plt.close(fig)
    return "\n".join(lines)


def shared_folds(rows_by_run):
    """The folds every run of ``rows_by_run`` (run folder -> its :func:`fold_rows`) has
    finished, sorted; refused when there are none."""
    folds = sorted(set.intersection(*({r["fold"] for r in rows}
                                      for rows in rows_by_run.values())))
    if not folds:
        raise SummaryError("the runs share no finished fold: " + "; ".join(
            f"{run} has fold(s) {', '.join(str(r['fold']) for r in rows)}"
            for run, rows in rows_by_run.items()))
    return folds


def class_counts(run_dir, folds):
    """{class name: (clips right, clips)} over ``folds`` of ``run_dir``, from each fold's
    predictions.json.  The names are those of a fold's per_class_accuracy.json that lists
    every class 0..K-1 its predictions hold, in class order ("class K" where no fold's does):
    a fold that lacks a class (under --limit) lists fewer names, which would shift them."""
    scored = {}
    names = None
    for fold in folds:
        path = os.path.join(run_dir, f"fold{fold}", "predictions.json")
        if not os.path.isfile(path):
            raise SummaryError(f"{path} is missing: the per-class comparison counts each "
                               "clip's prediction")
        scored[fold] = read_json(path)
        names_file = os.path.join(run_dir, f"fold{fold}", "per_class_accuracy.json")
        if names is None and os.path.isfile(names_file):
            listed = list(read_json(names_file))
            if {r["target"] for r in scored[fold]} == set(range(len(listed))):
                names = listed
    counts = {}
    for rows in scored.values():
        for r in rows:
            t = r["target"]
            name = names[t] if names is not None and t < len(names) else f"class {t}"
            right, clips = counts.get(name, (0, 0))
            counts[name] = (right + (r["predicted"] == t), clips + 1)
    return counts


def class_comparison(rows_by_run):
    """Markdown: each class's accuracy in every run, pooled over the folds every run has
    finished, the classes ordered by the last run's lead over the first; and on how many
    classes the last run trails, equals and leads the first."""
    folds = shared_folds(rows_by_run)
    runs = list(rows_by_run)
    counts = [class_counts(run, folds) for run in runs]
    names = [n for n in counts[0] if all(n in c for c in counts[1:])]
    accuracy = [{n: c[n][0] / c[n][1] for n in names} for c in counts]
    lead = {n: accuracy[-1][n] - accuracy[0][n] for n in names}
    label = [os.path.basename(os.path.normpath(run)) for run in runs]
    behind = sum(d < 0 for d in lead.values())
    level = sum(d == 0 for d in lead.values())
    sizes = {counts[0][n][1] for n in names}
    each = f" ({sizes.pop()} clips of each class)" if len(sizes) == 1 else ""
    lines = [f"Per class, over fold{'s' if len(folds) > 1 else ''} "
             f"{', '.join(map(str, folds))}{each}: {label[-1]} behind {label[0]} on {behind} "
             f"classes, level on {level}, ahead on {len(names) - behind - level}.", "",
             "| class | " + " | ".join(label) + " | difference |",
             "|---|" + "---|" * (len(label) + 1)]
    for n in sorted(names, key=lambda n: (lead[n], n)):
        lines.append(f"| {n} | " + " | ".join(f"{100 * a[n]:.1f}%" for a in accuracy)
                     + f" | {100 * lead[n]:+.1f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = cli.parser("experiments.summary", __doc__)
    p.add_argument("runs", nargs="+", type=cli.existing_dir,
                   help="train_esc50 output folders (--out)")
    p.add_argument("--plot", type=cli.output_file,
                   help="with several runs: write the frontier as this PNG")
    p.add_argument("--classes", action="store_true",
                   help="with several runs: each class's accuracy in each, over the folds "
                        "they share, and where the last run trails or leads the first")
    args = p.parse_args(argv)
    if args.classes and len(args.runs) < 2:
        p.error("--classes compares runs: give at least two")
    return args


def main(argv=None):
    args = parse_args(argv)
    rows_by_run = {run: fold_rows(run)[1] for run in args.runs}  # each run read once
    text = "\n\n".join(f"{run}:\n\n{fold_table(rows)}" for run, rows in rows_by_run.items())
    if len(args.runs) > 1 or args.plot:
        text += "\n\n" + frontier(rows_by_run, args.plot)
    if args.classes:
        text += "\n\n" + class_comparison(rows_by_run)
    print(text)
    return text


if __name__ == "__main__":
    cli.run(main)
