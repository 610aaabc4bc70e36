"""Train and evaluate on ESC-50 with the official 5-fold protocol.

    python -m experiments.train_esc50 --device cpu --folds 1            # CPU preset, fold 1
    python -m experiments.train_esc50 --device gpu --preset seed --folds 1 2 3 4 5

For each test fold k the model trains on the other four folds for a fixed schedule and is
scored on fold k at the end of it: the reported accuracy is never picked by its test score.
Outputs go to --out: results.json, and per fold metrics.json (per epoch), checkpoint.npz
(resumable, written every epoch), model.npz (final weights + config), per-class accuracy,
predictions.json (each test clip's predicted class), training curves and the confusion
matrix (PNG).
"""
from scratchnet.runtime import configure

configure()  # first, before NumPy loads OpenBLAS (scratchnet.runtime)

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from dsp.mel import mel_frequencies
from scratchnet import (AdamW, OneCycleLR, ResNet, SoftmaxCrossEntropy, load_checkpoint,
                        save_checkpoint)
from scratchnet.averaging import ExponentialMovingAverage
from scratchnet.runtime.backend import DeviceError, check_device, describe_device
from scratchnet.fusion import fold_batchnorm
from scratchnet.runtime.memory import keep_freed_memory

from . import augment, distill, esc50
from .inference import evaluate, write_predictions
from .models import PRESETS, build_model, get_preset
from .summary import LAST_EPOCHS, machines_of


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.train_esc50", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="ESC-50 root (default: $ESC50_DIR, else ./data/ESC-50)")
    p.add_argument("--download", action="store_true",
                   help="fetch the official archive into ./data/ESC-50 if it is missing")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model + features + recipe (default: cpu128bc on --device cpu, "
                        "seed on gpu)")
    p.add_argument("--pool", choices=sorted(ResNet.POOLS), default=None,
                   help="the network's global pool, overriding the preset's: avg (over "
                        "frequency and time) or time_max_mean (mean over frequency, then max + "
                        "mean over time; scratchnet.TimeMaxMeanPool)")
    p.add_argument("--dropout", type=float, default=None, metavar="P",
                   help="the probability with which the dropout before the classifier zeroes "
                        "a feature, overriding the preset's (0 <= P < 1)")
    p.add_argument("--deltas", type=int, choices=[0, 1, 2], default=None,
                   help="delta channels before the stem, overriding the preset's: 1 adds the "
                        "input's deltas along time, 2 its deltas and delta-deltas "
                        "(scratchnet.TimeDeltas)")
    p.add_argument("--widths", type=int, nargs="+", default=None, metavar="C",
                   help="channels of each stage, overriding the preset's (as many as its "
                        "stages), e.g. --widths 48 96 192 384")
    p.add_argument("--folds", type=int, nargs="+", default=[1], help="test folds to run")
    p.add_argument("--holdout", type=int, nargs="+", default=[], metavar="FOLD",
                   help="folds kept out of training and testing alike: to choose a recipe "
                        "on a validation fold without touching the test fold (--holdout 1 "
                        "--folds 2 trains on folds 3-5 and scores fold 2)")
    p.add_argument("--epochs", type=int, help="override the preset's epoch count")
    p.add_argument("--batch-size", type=int, help="override the preset's batch size")
    p.add_argument("--recipe", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override entries of the preset's training recipe, e.g. mixup_prob=1 "
                        "ema_decay=0 (0 turns the weight average off); keys as in "
                        "results.json's config.train")
    p.add_argument("--teachers", nargs="+", default=[], metavar="MODEL",
                   help="model.npz files trained on the same folds (other seeds): the student "
                        "learns from their averaged probabilities, weighted by --recipe "
                        "distill=BETA (experiments.distill)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/esc50", help="output directory")
    p.add_argument("--cache-dir", help="log-Mel feature cache (default ~/.cache/scratchnet)")
    p.add_argument("--resume", action="store_true",
                   help="continue each fold from its checkpoint.npz in --out")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N epochs of this invocation (continue later with --resume)")
    p.add_argument("--limit", type=int,
                   help="use only the first N clips of each fold (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--score-every", type=int, default=1, metavar="K",
                   help="score the held-out fold after every K-th epoch and after each of the "
                        f"last {LAST_EPOCHS}, not after the others (default 1: every "
                        "epoch); the scores only watch the training, so the model and the "
                        "fold's result are the same for any K")
    args = p.parse_args(argv)
    if args.score_every < 1:
        p.error(f"--score-every must be a whole number of epochs >= 1, got {args.score_every}")
    if any(f not in range(1, 6) for f in args.folds + args.holdout):
        p.error(f"--folds and --holdout must be among 1..5, got {args.folds} and "
                f"{args.holdout}")
    if set(args.folds) & set(args.holdout):
        p.error(f"fold(s) {sorted(set(args.folds) & set(args.holdout))} are both tested "
                "(--folds) and held out (--holdout)")
    args.preset = args.preset or ("seed" if args.device == "gpu" else "cpu128bc")
    return args


class RunError(Exception):
    """A run that cannot go on as asked (reported as one ``error:`` line, not a traceback)."""


# Settings added after runs had been checkpointed, with the value that reproduces how those
# runs trained, so that --resume accepts their checkpoints.
KEYS_ADDED = {"train": {"spec_masks": 1, "freq_shift": 0, "bc_mix": 0, "distill": 0},
              "model": {"pool": "avg", "deltas": 0}, "data": {"teachers": []}}


def with_added_keys(config):
    """``config`` with every key of KEYS_ADDED it lacks, at that key's original value."""
    return {part: dict(KEYS_ADDED.get(part, {}), **entries) if isinstance(entries, dict)
            else entries for part, entries in config.items()}


def parse_recipe(items, train):
    """["mixup_prob=1", ...] -> {"mixup_prob": 1.0}, checked against the recipe's keys and
    keeping each value's type (numbers stay numbers)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--recipe expects KEY=VALUE, got {item!r}")
        if key not in train:
            raise ValueError(f"--recipe: unknown key {key!r}; the recipe has "
                             f"{', '.join(sorted(train))}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"--recipe {key}: expected a number, got {text!r}")
        out[key] = value
    return out


def sub_state(state, prefix):
    """The entries of a checkpoint's flat state saved under ``prefix``, without it."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class FoldRun:
    """Everything one fold's training holds: its data, network, optimiser, schedule and
    history.  Made by :func:`set_up_fold`; :func:`restore_checkpoint`, :func:`train_epoch` and
    :func:`score_fold` read and advance it."""

    def __init__(self, **parts):
        self.__dict__.update(parts)


def set_up_fold(fold, feats, labels, folds, cfg, args, xp):
    """The data of fold ``fold`` (trained on every other fold but the held-out ones, scored on
    it), standardised by the training folds' statistics, and a fresh network, optimiser,
    one-cycle schedule and loss."""
    tr = cfg["train"]
    out = os.path.join(args.out, f"fold{fold}")
    os.makedirs(out, exist_ok=True)
    # Training: every fold but the test fold and the held-out ones.
    train_idx = np.flatnonzero((folds != fold) & ~np.isin(folds, args.holdout))
    test_idx = np.flatnonzero(folds == fold)
    # Standardise with statistics of the training folds only (scalars, or one per mel bin).
    norm = esc50.feature_statistics(feats[train_idx], per_mel=bool(tr["per_mel_norm"]))
    # Mixup in the power domain needs the dB scale of a standardised unit: ln(10)/10 * std.
    power_scale = None
    if tr["mixup_power"]:
        std = np.asarray(norm["std"], dtype=np.float32)  # host: numbers from the statistics
        power_scale = np.float32(np.log(10) / 10) * (std[:, None] if std.ndim else std)
    # Between-class mixing weighs each clip by its gain, from the dB features (host, once).
    gains = None
    if tr["bc_mix"]:
        if power_scale is None:
            raise RunError("--recipe bc_mix=1 mixes clips as sounds, by their powers: it "
                           "needs mixup_power=1")
        features = cfg["features"]
        bands = mel_frequencies(features["n_mels"] + 2, features["fmin"],
                                features["fmax"] or features["sr"] / 2)[1:-1]
        gains = augment.clip_gains(feats[train_idx], bands)
    # Distillation: each training clip's target row mixes its label with the teachers' view.
    trained_on = sorted(set(folds[train_idx].tolist()))
    targets = None
    if tr["distill"]:
        try:
            q = distill.teacher_probabilities(args.teachers, feats[train_idx], cfg["features"],
                                              trained_on, args.device)
        except (OSError, ValueError) as e:
            raise RunError(f"fold {fold}: {e}")
        targets = xp.asarray(distill.distilled_targets(labels[train_idx], q, tr["distill"]))
    batch = tr["batch_size"]
    steps_per_epoch = len(train_idx) // batch
    if steps_per_epoch == 0:
        raise RunError(f"fold {fold}: {len(train_idx)} training clips, fewer than one batch "
                       f"of {batch}")
    model = build_model(cfg["model"], esc50.NUM_CLASSES, seed=args.seed,
                        input_grad=False).to(args.device)
    optimizer = AdamW(list(model.parameters()), lr=tr["lr"], weight_decay=tr["weight_decay"])
    # With ema_decay the model evaluated every epoch, scored at the end and saved is the
    # running average of the weights (scratchnet.averaging); the raw weights are scored too.
    ema = ExponentialMovingAverage(model, tr["ema_decay"]) if tr.get("ema_decay") else None
    return FoldRun(
        fold=fold, tr=tr, out=out, train_idx=train_idx, test_idx=test_idx, norm=norm,
        x_train=xp.asarray(esc50.standardise(feats[train_idx], norm)[:, None]),
        x_test=xp.asarray(esc50.standardise(feats[test_idx], norm)[:, None]),
        y_train=labels[train_idx], y_test=labels[test_idx], power_scale=power_scale,
        gains=gains, targets=targets,
        batch=batch, steps_per_epoch=steps_per_epoch, model=model, optimizer=optimizer,
        schedule=OneCycleLR(optimizer, max_lr=tr["max_lr"],
                            total_steps=tr["epochs"] * steps_per_epoch,
                            pct_start=tr["warmup"], div_factor=tr["max_lr"] / tr["lr"]),
        criterion=SoftmaxCrossEntropy(label_smoothing=tr["label_smoothing"]), ema=ema,
        final=ema.model if ema else model, history=[], start_epoch=0, elapsed=0.0,
        ckpt_path=os.path.join(out, "checkpoint.npz"), trained_on=trained_on,
        machine=describe_device(args.device),
        run_config=dict(features=cfg["features"], model=cfg["model"], train=tr,
                        data=dict(trained_on=trained_on, teachers=list(args.teachers))))


def restore_checkpoint(run):
    """Continue ``run`` from its checkpoint.npz: weights, optimiser, schedule, average and
    history, after checking that it was written with the same settings."""
    state, meta = load_checkpoint(run.ckpt_path)
    # A resumed run reaches the uninterrupted run's result only under the same settings.
    # Checkpoints from before this check lack the config; keys added since one was
    # written count as their original behaviour on both sides.
    saved = with_added_keys(meta.get("config", run.run_config))
    now = with_added_keys(run.run_config)
    # tta_views only changes how the finished model is scored, so it may differ; the
    # training folds are compared where the checkpoint records them (not before --holdout).
    changed = [f"{part}.{key}: {saved[part].get(key)} -> {now[part].get(key)}"
               for part in now if part in saved
               for key in sorted((set(saved[part]) | set(now[part])) - {"tta_views"})
               if saved[part].get(key) != now[part].get(key)]
    if changed:
        raise RunError(f"fold {run.fold}: {run.ckpt_path} was written with other settings "
                       f"({'; '.join(changed)}); resume with the original ones or "
                       "choose another --out")
    run.model.load_state_dict(sub_state(state, "model."))
    run.optimizer.load_state_dict({"lr": meta["optimizer"]["lr"],
                                   "step_count": meta["optimizer"]["step_count"],
                                   "buffers": [state[f"optim.{i}"] for i in
                                               range(len(run.optimizer._buffers()))]})
    if run.ema:
        run.ema.load_state_dict(dict(meta["ema"], model=sub_state(state, "ema.")))
    run.schedule.load_state_dict(meta["schedule"])
    run.history, run.start_epoch, run.elapsed = meta["history"], meta["epoch"], meta["seconds"]
    print(f"fold {run.fold}: resumed from {run.ckpt_path} at epoch {run.start_epoch}",
          file=sys.stderr)


def train_epoch(run, epoch, args, xp):
    """One pass over the training clips in a seeded order, each batch augmented, then the
    held-out fold scored as deployed (on the epochs --score-every names); appends the epoch's
    record to ``run.history``."""
    from tqdm import tqdm
    tr, model, optimizer = run.tr, run.model, run.optimizer
    t0 = time.perf_counter()
    # One generator per (seed, fold, epoch): a resumed run draws the same numbers.
    rng = np.random.default_rng([args.seed, run.fold, epoch])
    model.dropout.reseed(args.seed * 100003 + run.fold * 1009 + epoch)
    order = rng.permutation(len(run.train_idx))
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(range(run.steps_per_epoch), desc=f"fold {run.fold} epoch {epoch + 1}/"
               f"{tr['epochs']}", disable=args.no_progress, file=sys.stderr, leave=False)
    for step in bar:
        idx = order[step * run.batch:(step + 1) * run.batch]
        xb, yb = run.x_train[xp.asarray(idx)], run.y_train[idx]
        tb = yb if run.targets is None else run.targets[xp.asarray(idx)]  # label or row
        xb = augment.time_shift(xb, rng, tr["time_shift"])
        if tr["freq_shift"]:  # drawn only when asked, so other recipes keep their numbers
            xb = augment.freq_shift(xb, rng, tr["freq_shift"])
        xb = augment.spec_augment(xb, rng, tr["freq_mask"], tr["time_mask"],
                                   masks=tr["spec_masks"])
        if tr["bc_mix"]:  # every batch, in place of Mixup
            xb, targets = augment.between_class(xb, tb, esc50.NUM_CLASSES, rng,
                                                run.power_scale, run.gains[idx])
        elif tr["mixup_alpha"] > 0 and rng.random() < tr["mixup_prob"]:
            xb, targets = augment.mixup(xb, tb, esc50.NUM_CLASSES, rng, tr["mixup_alpha"],
                                        run.power_scale)
        else:
            # Host labels (the loss checks their range without a GPU sync), or distilled rows.
            targets = tb
        optimizer.zero_grad()
        logits = model.forward(xb)
        loss = run.criterion.forward(logits, targets)
        model.backward(run.criterion.backward())
        optimizer.clip_grad_norm(tr["clip_norm"])
        optimizer.step()
        run.schedule.step()
        if run.ema:
            run.ema.update()
        # Summed where they are computed and read once per epoch (and by a shown progress
        # bar): on a GPU each read would wait for the step to finish.
        loss_sum = loss_sum + loss.astype(xp.float64) * len(idx)
        correct = correct + (logits.argmax(axis=1) == xp.asarray(yb)).sum()
        seen += len(idx)
        if not bar.disable:
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}",
                            acc=f"{int(correct) / seen:.3f}", clips_s=f"{rate:.1f}",
                            lr=f"{optimizer.lr:.2e}")
    loss_sum, correct = float(loss_sum), int(correct)
    if not math.isfinite(loss_sum):
        raise RunError(f"fold {run.fold} epoch {epoch + 1}: the training loss is not finite; "
                       "lower the learning rate or check the input features")
    record = dict(epoch=epoch + 1, train_loss=loss_sum / seen, train_acc=correct / seen)
    scored = "not scored"
    if (epoch + 1) % args.score_every == 0 or epoch + 1 > tr["epochs"] - LAST_EPOCHS:
        record.update(score_held_out(run, xp))
        scored = f"test acc {record['test_acc']:.3f}" + (
            f" (raw weights {record['test_acc_raw']:.3f})" if run.ema else "")
    seconds = time.perf_counter() - t0
    run.elapsed += seconds
    record.update(lr=optimizer.lr, seconds=seconds, machine=run.machine)
    run.history.append(record)
    print(f"fold {run.fold} epoch {epoch + 1}/{tr['epochs']}: loss {loss_sum / seen:.4f} "
          f"train acc {correct / seen:.3f} {scored} "
          f"({seconds:.0f} s, {seen / seconds:.1f} clips/s)", file=sys.stderr, flush=True)


def score_held_out(run, xp):
    """The held-out fold's accuracy now, as deployed (experiments.inference: BatchNorm folded
    into the convolutions, the same function with one pass fewer per convolution); with a
    weight average, the raw weights' too; and the seconds the scoring took."""
    t0 = time.perf_counter()
    pred, _ = evaluate(fold_batchnorm(run.final), run.x_test, xp)
    scores = dict(test_acc=float((pred == run.y_test).mean()))
    if run.ema:
        pred_raw, _ = evaluate(fold_batchnorm(run.model), run.x_test, xp)
        scores["test_acc_raw"] = float((pred_raw == run.y_test).mean())
    scores["score_seconds"] = time.perf_counter() - t0  # a part of the epoch's seconds
    return scores


def save_progress(run, epoch):
    """checkpoint.npz (everything :func:`restore_checkpoint` needs) and metrics.json."""
    state = {"model." + k: v for k, v in run.model.state_dict().items()}
    state.update({f"optim.{i}": b for i, b in enumerate(run.optimizer._buffers())})
    meta = dict(epoch=epoch + 1, seconds=run.elapsed, history=run.history,
                config=run.run_config, schedule=run.schedule.state_dict(),
                optimizer={"lr": run.optimizer.lr, "step_count": run.optimizer.step_count})
    if run.ema:
        averaged = run.ema.state_dict()
        state.update({"ema." + k: v for k, v in averaged.pop("model").items()})
        meta["ema"] = averaged
    save_checkpoint(run.ckpt_path, state, meta)
    with open(os.path.join(run.out, "metrics.json"), "w") as f:
        json.dump(run.history, f, indent=1)


def score_fold(run, args, cfg, xp, names, files):
    """The fold's accuracy at the end of its schedule, and its files: model.npz,
    predictions.json, per-class accuracy, curves and confusion matrix."""
    tr, y_test = run.tr, run.y_test
    # The final model, its predictions averaged over the recipe's test-time shifts (one
    # view, no shift, unless tta_views > 1); the single view's beside it.
    shifts = augment.test_time_shifts(run.x_test.shape[-1], tr["time_shift"], tr["tta_views"])
    deployed = fold_batchnorm(run.final)
    pred, probs = evaluate(deployed, run.x_test, xp, shifts)
    write_predictions(os.path.join(run.out, "predictions.json"), files[run.test_idx], y_test,
                      probs)
    accuracy = float((pred == y_test).mean())
    single_view = accuracy if shifts == [0] else float(
        (evaluate(deployed, run.x_test, xp)[0] == y_test).mean())
    config = dict(preset=args.preset, features=cfg["features"], model=cfg["model"],
                  normalization=run.norm, classes=names, fold=run.fold,
                  trained_on=run.trained_on, accuracy=accuracy, test_time_shifts=shifts)
    save_checkpoint(os.path.join(run.out, "model.npz"), run.final.state_dict(), config)
    per_class = {names[c]: float((pred[y_test == c] == c).mean())
                 for c in range(esc50.NUM_CLASSES) if (y_test == c).any()}
    with open(os.path.join(run.out, "per_class_accuracy.json"), "w") as f:
        json.dump(per_class, f, indent=1)
    plot_fold(run.out, run.history, y_test, pred, names)
    return dict(accuracy=accuracy, accuracy_single_view=single_view, epochs=tr["epochs"],
                seconds=run.elapsed, machines=machines_of(run.history))


def train_fold(fold, feats, labels, folds, cfg, args, xp, names, files):
    """Train on every fold but ``fold`` and score on ``fold`` (``files``: each clip's file
    name, for the fold's predictions.json); returns the fold's result dict, or None when
    --stop-after paused it."""
    run = set_up_fold(fold, feats, labels, folds, cfg, args, xp)
    if args.resume and os.path.isfile(run.ckpt_path):
        restore_checkpoint(run)
    epochs = run.tr["epochs"]
    for epoch in range(run.start_epoch, epochs):
        train_epoch(run, epoch, args, xp)
        save_progress(run, epoch)
        if args.stop_after and epoch + 1 - run.start_epoch >= args.stop_after \
                and epoch + 1 < epochs:
            print(f"fold {fold}: stopped after epoch {epoch + 1} (--stop-after); continue "
                  "with --resume", file=sys.stderr)
            return None
    return score_fold(run, args, cfg, xp, names, files)


def plot_fold(out, history, y_true, y_pred, names):
    """Training curves and the confusion matrix as PNGs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if history:
        epochs = [h["epoch"] for h in history]
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        a.plot(epochs, [h["train_loss"] for h in history])
        a.set(xlabel="epoch", ylabel="training loss", title="loss")
        b.plot(epochs, [h["train_acc"] for h in history], label="train (augmented)")
        scored = [h for h in history if "test_acc" in h]  # every --score-every epochs
        averaged = "test_acc_raw" in scored[-1]  # the run scored a weight average
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
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)  # host-side counting of 400 pairs, not a training path
    fig, ax = plt.subplots(figsize=(12, 11))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=90, fontsize=6)
    ax.set_yticks(range(k), names, fontsize=6)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (held-out fold)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "confusion.png"), dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()  # reuse the step's large arrays instead of page-faulting them anew
    try:
        xp = check_device(args.device)
    except DeviceError as e:
        sys.exit(f"error: {e}")
    cfg = json.loads(json.dumps(get_preset(args.preset)))
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    if args.batch_size:
        cfg["train"]["batch_size"] = args.batch_size
    if args.pool:
        cfg["model"]["pool"] = args.pool
    if args.deltas is not None:
        cfg["model"]["deltas"] = args.deltas
    if args.widths:
        stages = len(cfg["model"]["depths"])
        if len(args.widths) != stages or min(args.widths) < 1:
            sys.exit(f"error: --widths: expected {stages} positive channel counts (one per "
                     f"stage of {args.preset}), got {args.widths}")
        cfg["model"]["widths"] = args.widths
    if args.dropout is not None:
        if not 0.0 <= args.dropout < 1.0:
            sys.exit(f"error: --dropout: expected a probability in [0, 1), got {args.dropout}")
        cfg["model"]["dropout"] = args.dropout
    try:
        cfg["train"].update(parse_recipe(args.recipe, cfg["train"]))
        for key, least in (("tta_views", 1), ("spec_masks", 0), ("freq_shift", 0)):
            value = cfg["train"][key]
            if not isinstance(value, int) or value < least:
                raise ValueError(f"--recipe {key}: expected a whole number >= {least}, "
                                 f"got {value}")
        if not 0 <= cfg["train"]["distill"] <= 1:
            raise ValueError(f"--recipe distill: expected a weight in [0, 1], got "
                             f"{cfg['train']['distill']}")
        if bool(cfg["train"]["distill"]) != bool(args.teachers):
            raise ValueError("distillation needs both --teachers MODEL ... and --recipe "
                             "distill=BETA (0 < BETA <= 1)")
        if cfg["train"]["bc_mix"] not in (0, 1):
            raise ValueError(f"--recipe bc_mix: expected 0 (Mixup) or 1 (between-class "
                             f"mixing), got {cfg['train']['bc_mix']}")
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        root = esc50.find_dataset(args.data)
    except esc50.DatasetNotFound as e:
        if not args.download:
            sys.exit(f"error: {e}")
        root = esc50.download()
    rows = esc50.read_metadata(root)
    if args.limit:
        rows = esc50.first_of_each_fold(rows, args.limit)
    names = esc50.class_names(esc50.read_metadata(root))
    feats, labels, folds = esc50.load_features(root, cfg["features"], args.cache_dir, xp, rows,
                                               progress=not args.no_progress)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = {"folds": {}}
    if args.resume and os.path.isfile(results_path):
        with open(results_path) as f:
            results["folds"] = json.load(f).get("folds", {})
    for fold in args.folds:
        if args.resume and str(fold) in results["folds"]:
            continue
        try:
            result = train_fold(fold, feats, labels, folds, cfg, args, xp, names,
                                np.array([r["filename"] for r in rows]))  # host: names
        except RunError as e:
            sys.exit(f"error: {e}")
        if result is None:  # interrupted by --stop-after
            break
        results["folds"][str(fold)] = result
        accs = [r["accuracy"] for r in results["folds"].values()]
        results.update(mean_accuracy=float(np.mean(accs)), std_accuracy=float(np.std(accs)),
                       config=dict(cfg, preset=args.preset, device=args.device, seed=args.seed,
                                   data=os.path.abspath(root), limit=args.limit,
                                   holdout=args.holdout, teachers=args.teachers))
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"fold {fold}: accuracy {results['folds'][str(fold)]['accuracy']:.4f}",
              file=sys.stderr)
    print(json.dumps({k: results.get(k) for k in ("folds", "mean_accuracy", "std_accuracy")}))
    return results


if __name__ == "__main__":
    main()
