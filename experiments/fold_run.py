"""One fold of the ESC-50 protocol: train on the other folds for a fixed schedule, score at its
end.

:func:`fold_data` gathers the fold's data (:class:`FoldData`), :func:`set_up` a fresh
network, optimiser, schedule and loss (:class:`FoldRun`); :func:`train` runs its epochs
(:func:`train_epoch`), writing a checkpoint after each (:func:`save_progress`; :func:`restore`
goes on from it).  The fold's result at the end is experiments.report's.  A resumed fold ends bit for bit where an
uninterrupted one does: every random draw comes from (seed, fold, epoch).

Data-parallel (``communicator``, scratchnet.distributed): every rank draws the whole batch and
its augmentation, keeps its rows, scales its loss gradient by its share and sums the gradients
with the others; the held-out fold is scored in shares too; rank 0 alone prints and writes.
"""
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from dsp.mel import mel_frequencies
from scratchnet import (AdamW, Dropout, OneCycleLR, SoftmaxCrossEntropy, load_checkpoint,
                        save_checkpoint)
from scratchnet.averaging import ExponentialMovingAverage
from scratchnet.fusion import fold_batchnorm
from scratchnet.runtime.backend import describe_device

from . import augment, distill, esc50
from .cli import CommandError
from .inference import evaluate
from .models import build_model
from .run_folder import differences, write_json


class RunError(CommandError):
    """A fold that cannot go on as asked (reported as one ``error:`` line, not a traceback)."""


@dataclass
class FoldData:
    """A fold's clips, standardised by the training folds' statistics, on the device."""
    train_idx: np.ndarray        # rows of the training clips (host)
    test_idx: np.ndarray         # rows of the scored fold's clips (host)
    norm: dict                   # the standardisation, as stored in model.npz
    x_train: Any                 # (N, 1, n_mels, frames), on the device
    x_test: Any
    y_train: np.ndarray          # labels (host)
    y_test: np.ndarray
    trained_on: list             # the folds trained on
    power_scale: Optional[Any] = None  # dB per standardised unit, for mixing in power
    gains: Optional[np.ndarray] = None  # each training clip's gain (between-class mixing)
    targets: Optional[Any] = None       # distilled target rows, or None: the labels


@dataclass
class FoldRun:
    """Everything one fold's training holds and advances."""
    fold: int
    seed: int
    recipe: dict                 # the config's "train" entry
    out: str                     # the fold's folder
    data: FoldData
    model: Any
    optimizer: AdamW
    schedule: OneCycleLR
    criterion: SoftmaxCrossEntropy
    ema: Optional[ExponentialMovingAverage]
    machine: str                 # the processor, recorded with every epoch
    config: dict                 # what its checkpoint must have been written with
    history: list = field(default_factory=list)
    start_epoch: int = 0
    elapsed: float = 0.0
    parallel: Optional[Any] = None  # scratchnet.distributed.DataParallel, in a job of ranks

    @property
    def writes(self):
        """Whether this process prints and writes the fold's files (rank 0 of a job)."""
        return self.parallel is None or self.parallel.rank == 0

    @property
    def final(self):
        """The model scored and saved: the weight average when there is one."""
        return self.ema.model if self.ema else self.model

    @property
    def checkpoint_path(self):
        return os.path.join(self.out, "checkpoint.npz")

    @property
    def steps_per_epoch(self):
        return len(self.data.train_idx) // self.recipe["batch_size"]


def fold_data(fold, feats, labels, folds, cfg, holdout, teachers, device, xp):
    """The data of fold ``fold``: trained on every fold but it and the held-out ones, scored
    on it, standardised with statistics of the training folds only."""
    tr = cfg["train"]
    train_idx = np.flatnonzero((folds != fold) & ~np.isin(folds, holdout))
    test_idx = np.flatnonzero(folds == fold)
    # Scalars, or one mean and std per mel bin.
    norm = esc50.feature_statistics(feats[train_idx], per_mel=bool(tr["per_mel_norm"]))
    trained_on = sorted(set(folds[train_idx].tolist()))
    data = FoldData(train_idx=train_idx, test_idx=test_idx, norm=norm,
                    x_train=xp.asarray(esc50.standardise(feats[train_idx], norm)[:, None]),
                    x_test=xp.asarray(esc50.standardise(feats[test_idx], norm)[:, None]),
                    y_train=labels[train_idx], y_test=labels[test_idx], trained_on=trained_on)
    # Mixup in the power domain needs the dB scale of a standardised unit: ln(10)/10 * std.
    if tr["mixup_power"]:
        std = np.asarray(norm["std"], dtype=np.float32)  # host: numbers from the statistics
        data.power_scale = np.float32(np.log(10) / 10) * (std[:, None] if std.ndim else std)
    # Between-class mixing weighs each clip by its gain, from the dB features (host, once).
    if tr["bc_mix"]:
        features = cfg["features"]
        bands = mel_frequencies(features["n_mels"] + 2, features["fmin"],
                                features["fmax"] or features["sr"] / 2)[1:-1]
        data.gains = augment.clip_gains(feats[train_idx], bands)
    # Distillation: each training clip's target row mixes its label with the teachers' view.
    if tr["distill"]:
        try:
            q = distill.teacher_probabilities(teachers, feats[train_idx], cfg["features"],
                                              trained_on, device)
        except (OSError, ValueError) as e:
            raise RunError(f"fold {fold}: {e}")
        data.targets = xp.asarray(distill.distilled_targets(labels[train_idx], q,
                                                            tr["distill"]))
    return data


def set_up(fold, data, cfg, out, seed, device, teachers, communicator=None,
           sync_batchnorm=False):
    """A fresh network, optimiser, one-cycle schedule and loss for the fold's ``data``; with a
    ``communicator``, this rank's part of a data-parallel job (rank 0's parameters)."""
    tr = cfg["train"]
    steps_per_epoch = len(data.train_idx) // tr["batch_size"]
    if steps_per_epoch == 0:
        raise RunError(f"fold {fold}: {len(data.train_idx)} training clips, fewer than one "
                       f"batch of {tr['batch_size']}")
    model = build_model(cfg["model"], esc50.NUM_CLASSES, seed=seed, input_grad=False)
    model.to(device)
    optimizer = AdamW(model, lr=tr["lr"], weight_decay=tr["weight_decay"])
    parallel = None
    if communicator is not None:
        from scratchnet.distributed import DataParallel
        parallel = DataParallel(model, optimizer, communicator, sync_batchnorm)
    # With ema_decay the model evaluated every epoch, scored at the end and saved is the
    # running average of the weights (scratchnet.averaging); the raw weights are scored too.
    ema = ExponentialMovingAverage(model, tr["ema_decay"]) if tr["ema_decay"] else None
    schedule = OneCycleLR(optimizer, max_lr=tr["max_lr"],
                          total_steps=tr["epochs"] * steps_per_epoch, pct_start=tr["warmup"],
                          div_factor=tr["max_lr"] / tr["lr"])
    config = dict(features=cfg["features"], model=cfg["model"], train=tr,
                  data=dict(trained_on=data.trained_on, teachers=list(teachers)))
    return FoldRun(fold=fold, seed=seed, recipe=tr, out=os.path.join(out, f"fold{fold}"),
                   data=data, model=model, optimizer=optimizer, schedule=schedule,
                   criterion=SoftmaxCrossEntropy(label_smoothing=tr["label_smoothing"]),
                   ema=ema, machine=describe_device(device), config=config, parallel=parallel)


def restore(run):
    """Continue ``run`` from its checkpoint.npz: weights, optimiser, schedule, average and
    history, after checking that it was written with the same settings."""
    state, meta = load_checkpoint(run.checkpoint_path)
    if not {"epoch", "optimizer", "schedule", "history"} <= set(meta):
        raise RunError(f"{run.checkpoint_path} is not a train_esc50 checkpoint (its metadata "
                       f"has {sorted(meta)}); remove it or choose another --out")
    # A resumed run reaches the uninterrupted run's result only under the same settings.
    # Checkpoints from before this check lack the config; tta_views only changes how the
    # finished model is scored, so it may differ.
    changed = differences(meta.get("config", run.config), run.config, ignore={"tta_views"})
    if changed:
        raise RunError(f"fold {run.fold}: {run.checkpoint_path} was written with other "
                       f"settings ({'; '.join(changed)}); resume with the original ones or "
                       "choose another --out")
    try:
        run.model.load_state_dict(sub_state(state, "model."))
        buffers = [state[f"optim.{i}"] for i in range(len(run.optimizer.state_buffers()))]
        run.optimizer.load_state_dict(dict(meta["optimizer"], buffers=buffers))
        if run.ema:
            run.ema.load_state_dict(dict(meta["ema"], model=sub_state(state, "ema.")))
    except (KeyError, ValueError) as e:
        raise RunError(f"{run.checkpoint_path} does not fit this run's network ({e})") from e
    run.schedule.load_state_dict(meta["schedule"])
    run.history, run.start_epoch, run.elapsed = meta["history"], meta["epoch"], meta["seconds"]
    if not run.writes:
        return
    print(f"fold {run.fold}: resumed from {run.checkpoint_path} at epoch {run.start_epoch}",
          file=sys.stderr)


def sub_state(state, prefix):
    """The entries of a checkpoint's flat state saved under ``prefix``, without it."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def augmented_batch(run, idx, rng, xp):
    """The batch of training clips ``idx``, augmented as the recipe says, and its targets
    (host labels, or rows on the device when mixed or distilled).  Every rank of a job draws
    the whole batch, so that the numbers drawn are one process's."""
    tr, data = run.recipe, run.data
    xb, yb = data.x_train[xp.asarray(idx)], data.y_train[idx]
    tb = yb if data.targets is None else data.targets[xp.asarray(idx)]  # label or row
    xb = augment.time_shift(xb, rng, tr["time_shift"])
    if tr["freq_shift"]:  # drawn only when asked, so other recipes keep their numbers
        xb = augment.freq_shift(xb, rng, tr["freq_shift"])
    xb = augment.spec_augment(xb, rng, tr["freq_mask"], tr["time_mask"], masks=tr["spec_masks"])
    if tr["bc_mix"]:  # every batch, in place of Mixup
        return augment.between_class(xb, tb, esc50.NUM_CLASSES, rng, data.power_scale,
                                     data.gains[idx])
    if tr["mixup_alpha"] > 0 and rng.random() < tr["mixup_prob"]:
        return augment.mixup(xb, tb, esc50.NUM_CLASSES, rng, tr["mixup_alpha"],
                             data.power_scale)
    return xb, tb


def train_epoch(run, epoch, xp, progress=True, score=True):
    """One pass over the training clips in a seeded order, each batch augmented, then (when
    ``score``) the held-out fold scored as deployed; appends the epoch's record to
    ``run.history``."""
    from tqdm import tqdm
    tr, model, optimizer = run.recipe, run.model, run.optimizer
    batch = tr["batch_size"]
    t0 = time.perf_counter()
    # One generator per (seed, fold, epoch): a resumed run draws the same numbers.
    rng = np.random.default_rng([run.seed, run.fold, epoch])
    # Every dropout's masks from (seed, fold, epoch) too: the first as it always was, the
    # others (a transformer's) offset from it.
    dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
    for i, dropout in enumerate(dropouts):
        dropout.reseed(run.seed * 100003 + run.fold * 1009 + epoch + 7919 * i)
    order = rng.permutation(len(run.data.train_idx))
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(range(run.steps_per_epoch), desc=f"fold {run.fold} epoch {epoch + 1}/"
               f"{tr['epochs']}", disable=not (progress and run.writes), file=sys.stderr,
               leave=False)
    for step in bar:
        idx = order[step * batch:(step + 1) * batch]
        xb, targets = augmented_batch(run, idx, rng, xp)
        if run.parallel:  # this rank's rows of the batch
            rows, _ = run.parallel.shard(len(idx))
            xb, targets, idx = xb[rows], targets[rows], idx[rows]
        optimizer.zero_grad()
        logits = model.forward(xb)
        loss = run.criterion.forward(logits, targets)
        # In a job: this rank's share of the batch's loss gradient, summed over the ranks.
        (run.parallel or model).backward(run.criterion.backward())
        optimizer.clip_grad_norm(tr["clip_norm"])
        optimizer.step()
        run.schedule.step()
        if run.ema:
            run.ema.update()
        # Summed where they are computed and read once per epoch (and by a shown progress
        # bar): on a GPU each read would wait for the step to finish.
        loss_sum = loss_sum + loss.astype(xp.float64) * len(idx)
        correct = correct + (logits.argmax(axis=1) == xp.asarray(run.data.y_train[idx])).sum()
        seen += len(idx)
        if not bar.disable:
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}",
                            acc=f"{int(correct) / seen:.3f}",
                            clips_s=f"{seen / (time.perf_counter() - t0):.1f}",
                            lr=f"{optimizer.lr:.2e}")
    loss_sum, correct = float(loss_sum), int(correct)
    if run.parallel:  # the epoch's figures over every rank's shards
        loss_sum, correct, seen = run.parallel.communicator.sum([loss_sum, correct, seen],
                                                                "the epoch's loss")
        correct, seen = int(correct), int(seen)
        run.parallel.average_buffers()
        run.parallel.check_replicas()
    if not math.isfinite(loss_sum):
        raise RunError(f"fold {run.fold} epoch {epoch + 1}: the training loss is not finite; "
                       "lower the learning rate or check the input features")
    record = dict(epoch=epoch + 1, train_loss=loss_sum / seen, train_acc=correct / seen)
    scored = "not scored"
    if score:
        record.update(score_held_out(run, xp))
        scored = f"test acc {record['test_acc']:.3f}" + (
            f" (raw weights {record['test_acc_raw']:.3f})" if run.ema else "")
    seconds = time.perf_counter() - t0
    run.elapsed += seconds
    record.update(lr=optimizer.lr, seconds=seconds, machine=run.machine)
    run.history.append(record)
    if not run.writes:
        return
    print(f"fold {run.fold} epoch {epoch + 1}/{tr['epochs']}: loss {loss_sum / seen:.4f} "
          f"train acc {correct / seen:.3f} {scored} "
          f"({seconds:.0f} s, {seen / seconds:.1f} clips/s)", file=sys.stderr, flush=True)


def score_held_out(run, xp):
    """The held-out fold's accuracy now, as deployed (experiments.inference: BatchNorm folded
    into the convolutions, the same function with one pass fewer per convolution); with a
    weight average, the raw weights' too; and the seconds the scoring took."""
    t0 = time.perf_counter()
    y_test = run.data.y_test
    pred = predictions(run, run.final, xp)
    scores = dict(test_acc=float((pred == y_test).mean()))
    if run.ema:
        pred_raw = predictions(run, run.model, xp)
        scores["test_acc_raw"] = float((pred_raw == y_test).mean())
    scores["score_seconds"] = time.perf_counter() - t0  # a part of the epoch's seconds
    return scores


def predictions(run, model, xp):
    """The held-out clips' predicted classes (host), by ``model`` as deployed; in a job each
    rank predicts its share of the clips and every rank gets them all."""
    x = run.data.x_test
    if run.parallel is None:
        return evaluate(fold_batchnorm(model), x, xp)[0]
    rows = run.parallel.rows(x.shape[0])
    pred = evaluate(fold_batchnorm(model), x[rows], xp)[0]
    return np.concatenate(run.parallel.communicator.gather_all(pred, "scoring the fold"))


def save_progress(run, epoch):
    """checkpoint.npz (everything :func:`restore` needs) and metrics.json, each written to a
    temporary file and renamed: a kill leaves the last good one.  Rank 0 of a job writes."""
    if not run.writes:
        return
    optimizer = run.optimizer.state_dict()
    state = {"model." + k: v for k, v in run.model.state_dict().items()}
    state.update({f"optim.{i}": b for i, b in enumerate(optimizer.pop("buffers"))})
    meta = dict(epoch=epoch + 1, seconds=run.elapsed, history=run.history, config=run.config,
                schedule=run.schedule.state_dict(), optimizer=optimizer)
    if run.ema:
        averaged = run.ema.state_dict()
        state.update({"ema." + k: v for k, v in averaged.pop("model").items()})
        meta["ema"] = averaged
    save_checkpoint(run.checkpoint_path, state, meta)
    write_json(os.path.join(run.out, "metrics.json"), run.history)


def train(run, xp, stop_after=None, score_every=1, progress=True):
    """Run the fold's remaining epochs; True when its schedule is finished, False when
    ``stop_after`` epochs of this call paused it.  The held-out fold is scored after every
    ``score_every``-th epoch and each of the last esc50.LAST_EPOCHS."""
    epochs = run.recipe["epochs"]
    for epoch in range(run.start_epoch, epochs):
        score = (epoch + 1) % score_every == 0 or epoch + 1 > epochs - esc50.LAST_EPOCHS
        train_epoch(run, epoch, xp, progress, score)
        save_progress(run, epoch)
        if stop_after and epoch + 1 - run.start_epoch >= stop_after and epoch + 1 < epochs:
            if not run.writes:
                return False
            print(f"fold {run.fold}: stopped after epoch {epoch + 1} (--stop-after); "
                  "continue with --resume", file=sys.stderr)
            return False
    return True
