"""A finished fold's report: its accuracy at the end of the schedule, and its files.

model.npz (the final weights and everything ``classify`` needs), predictions.json (each
test clip), per_class_accuracy.json, curves.png and confusion.png in the fold's folder; the
run's results.json (every fold, their mean and standard deviation) beside them.
"""
import os

import numpy as np

from scratchnet import save_checkpoint
from scratchnet.fusion import fold_batchnorm

from . import augment, esc50
from .inference import evaluate, write_predictions
from .run_folder import RESULTS_FILE, write_json


def machines_of(history):
    """The machines a fold's epochs record, each once, in the order they first trained it (a
    fold run in pieces may move between machines; epochs before 2026-12-06 record none)."""
    return list(dict.fromkeys(h["machine"] for h in history if "machine" in h))


def score(run, preset, cfg, xp, names, files):
    """The fold's accuracy at the end of its schedule, and its files (``files``: each clip's
    file name, for predictions.json)."""
    tr, data = run.recipe, run.data
    y_test = data.y_test
    # The final model, its predictions averaged over the recipe's test-time shifts (one
    # view, no shift, unless tta_views > 1); the single view's beside it.
    shifts = augment.test_time_shifts(data.x_test.shape[-1], tr["time_shift"], tr["tta_views"])
    deployed = fold_batchnorm(run.final)
    pred, probs = evaluate(deployed, data.x_test, xp, shifts)
    write_predictions(os.path.join(run.out, "predictions.json"), files[data.test_idx], y_test,
                      probs)
    accuracy = float((pred == y_test).mean())
    single_view = accuracy if shifts == [0] else float(
        (evaluate(deployed, data.x_test, xp)[0] == y_test).mean())
    config = dict(preset=preset, features=cfg["features"], model=cfg["model"],
                  normalization=data.norm, classes=names, fold=run.fold,
                  trained_on=data.trained_on, accuracy=accuracy, test_time_shifts=shifts)
    save_checkpoint(os.path.join(run.out, "model.npz"), run.final.state_dict(), config)
    per_class = {names[c]: float((pred[y_test == c] == c).mean())
                 for c in range(esc50.NUM_CLASSES) if (y_test == c).any()}
    write_json(os.path.join(run.out, "per_class_accuracy.json"), per_class)
    plot_curves(run.out, run.history)
    plot_confusion(run.out, y_test, pred, names)
    return dict(accuracy=accuracy, accuracy_single_view=single_view, epochs=tr["epochs"],
                seconds=run.elapsed, machines=machines_of(run.history))


def run_results(folds, config):
    """Every finished fold's result, their mean and (population) standard deviation (None
    before a fold has finished), and the run's configuration: results.json's contents."""
    accs = [r["accuracy"] for r in folds.values()]
    return dict(folds=folds, mean_accuracy=float(np.mean(accs)) if accs else None,
                std_accuracy=float(np.std(accs)) if accs else None, config=config)


def write_results(out, folds, config):
    """results.json (:func:`run_results`); returns what it wrote."""
    results = run_results(folds, config)
    write_json(os.path.join(out, RESULTS_FILE), results)
    return results


def plot_curves(out, history):
    """curves.png: training loss, and training and held-out accuracy, per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history])
    a.set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)", title="loss")
    b.plot(epochs, [h["train_acc"] for h in history], label="train (augmented)")
    scored = [h for h in history if "test_acc" in h]  # every --score-every epochs
    averaged = bool(scored) and "test_acc_raw" in scored[-1]  # a weight average was scored
    b.plot([h["epoch"] for h in scored], [h["test_acc"] for h in scored],
           label="held-out fold (weight average)" if averaged else "held-out fold")
    if averaged:
        b.plot([h["epoch"] for h in scored], [h["test_acc_raw"] for h in scored],
               alpha=0.6, label="held-out fold (raw weights)")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    b.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=100)
    plt.close(fig)


def plot_confusion(out, y_true, y_pred, names):
    """confusion.png: clips of each true class (rows) by predicted class (columns)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)  # host-side counting of 400 pairs, not a training path
    fig, ax = plt.subplots(figsize=(12, 11))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.6, label="clips")
    ax.set_xticks(range(k), names, rotation=90, fontsize=6)
    ax.set_yticks(range(k), names, fontsize=6)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (held-out fold)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "confusion.png"), dpi=100)
    plt.close(fig)
