"""Train and evaluate on ESC-50 with the official 5-fold protocol.

    python -m experiments.train_esc50 --device cpu --folds 1            # CPU preset, fold 1
    python -m experiments.train_esc50 --device gpu --preset seed --folds 1 2 3 4 5
    mpiexec -n 2 python -m experiments.train_esc50 --distributed --folds 1  # 2 ranks (MPI)

For each test fold k the model trains on the other four folds for a fixed schedule and is
scored on fold k at the end of it: the reported accuracy is never picked by its test score.
Outputs go to --out: run.json (what defines the run), results.json, and per fold
metrics.json (per epoch), checkpoint.npz (resumable, written every epoch), model.npz (final
weights + config), per-class accuracy, predictions.json (each test clip's predicted class),
training curves and the confusion matrix (PNG).  An --out that holds a run is continued with
--resume (under the same settings) or started again with --overwrite, never silently.

This module is the command: its arguments, checked as they are parsed, and the loop over the
folds.  The recipe and its checks are in experiments.models, one fold's training in
experiments.fold_run, its report in experiments.report, the output folder's record and
protection in experiments.run_folder.  With --distributed, every rank of an MPI job trains
the same network on its share of each batch (scratchnet.distributed); rank 0 writes.
"""
import json
import os
import sys

import numpy as np

from scratchnet import ResNet
from scratchnet.runtime.backend import check_device
from scratchnet import runtime

from . import cli, esc50, fold_run, report, run_folder
from .models import PRESETS, run_config


def parse_args(argv=None):
    p = cli.parser("experiments.train_esc50", __doc__)
    cli.data_arguments(p)
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
    p.add_argument("--widths", type=cli.positive_int, nargs="+", default=None, metavar="C",
                   help="channels of each stage, overriding the preset's (as many as its "
                        "stages), e.g. --widths 48 96 192 384")
    p.add_argument("--folds", type=cli.fold, nargs="+", default=[1], help="test folds to run")
    p.add_argument("--holdout", type=cli.fold, nargs="+", default=[], metavar="FOLD",
                   help="folds kept out of training and testing alike: to choose a recipe "
                        "on a validation fold without touching the test fold (--holdout 1 "
                        "--folds 2 trains on folds 3-5 and scores fold 2)")
    p.add_argument("--epochs", type=cli.positive_int, help="override the preset's epoch count")
    p.add_argument("--batch-size", type=cli.positive_int,
                   help="override the preset's batch size")
    p.add_argument("--recipe", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override entries of the preset's training recipe, e.g. mixup_prob=1 "
                        "ema_decay=0 (0 turns the weight average off); keys as in "
                        "results.json's config.train")
    p.add_argument("--teachers", type=cli.existing_file, nargs="+", default=[],
                   metavar="MODEL",
                   help="model.npz files trained on the same folds (other seeds): the student "
                        "learns from their averaged probabilities, weighted by --recipe "
                        "distill=BETA (experiments.distill)")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0)
    p.add_argument("--out", type=cli.output_dir, default="runs/esc50",
                   help="output directory (default runs/esc50)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="go on with the run in --out, each fold from its checkpoint.npz "
                            "(the run's settings must be the same)")
    again.add_argument("--overwrite", action="store_true",
                       help="start again in an --out that holds a run, removing its files")
    p.add_argument("--stop-after", type=cli.positive_int, metavar="N",
                   help="stop after N epochs of this invocation (continue later with --resume)")
    p.add_argument("--limit", type=cli.positive_int,
                   help="use only the first N clips of each fold (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an MPI job, launched as mpiexec -n N "
                        "python -m experiments.train_esc50 ... --distributed: each rank takes "
                        "batch/N clips of every batch and the gradients are summed "
                        "(scratchnet.distributed; pip install -e .[mpi])")
    p.add_argument("--sync-batchnorm", action="store_true",
                   help="with --distributed: BatchNorm normalises by the whole batch's "
                        "statistics, summed over the ranks (then N ranks train what one "
                        "process would); default: each rank's own shard, as PyTorch's DDP")
    p.add_argument("--collective-timeout", type=cli.positive_float, default=300.0,
                   metavar="S",
                   help="with --distributed: seconds a rank waits for the others in a "
                        "training step before it ends the job with an error (default 300)")
    p.add_argument("--score-every", type=cli.positive_int, default=1, metavar="K",
                   help="score the held-out fold after every K-th epoch and after each of the "
                        f"last {esc50.LAST_EPOCHS}, not after the others (default 1: every "
                        "epoch); the scores only watch the training, so the model and the "
                        "fold's result are the same for any K")
    args = p.parse_args(argv)
    if set(args.folds) & set(args.holdout):
        p.error(f"fold(s) {sorted(set(args.folds) & set(args.holdout))} are both tested "
                "(--folds) and held out (--holdout)")
    if any(len(set(args.holdout) | {f}) == 5 for f in args.folds):
        p.error(f"--holdout {' '.join(map(str, args.holdout))} leaves no fold to train on")
    if args.sync_batchnorm and not args.distributed:
        p.error("--sync-batchnorm applies to --distributed runs only")
    args.preset = args.preset or ("seed" if args.device == "gpu" else "cpu128bc")
    try:
        args.config = run_config(args.preset, args.epochs, args.batch_size, args.pool,
                                 args.deltas, args.widths, args.dropout, args.recipe,
                                 args.teachers)
    except ValueError as e:
        p.error(str(e))
    return args


def train_fold(fold, feats, labels, folds, cfg, args, xp, names, files, job=None):
    """Train on every fold but ``fold`` (and the held-out ones) and score on ``fold``
    (``files``: each clip's file name, for the fold's predictions.json); returns the fold's
    result dict, or None when --stop-after paused it.  ``job``: the MPI ranks, when
    --distributed."""
    data = fold_run.fold_data(fold, feats, labels, folds, cfg, args.holdout, args.teachers,
                              args.device, xp)
    run = fold_run.set_up(fold, data, cfg, args.out, args.seed, args.device, args.teachers,
                          job, args.sync_batchnorm)
    resume = args.resume and os.path.isfile(run.checkpoint_path)
    if job:  # rank 0's folder decides; every rank reads the same checkpoint
        resume = job.share(resume)
        root_first(job, lambda: os.makedirs(run.out, exist_ok=True))
    else:
        os.makedirs(run.out, exist_ok=True)
    if resume:
        fold_run.restore(run)
        if job:
            job.check_same(run.start_epoch, f"fold {fold} checkpoints (resumed at epochs)")
            run.parallel.broadcast_state()
    if not fold_run.train(run, xp, args.stop_after, args.score_every, not args.no_progress):
        return None
    if not job:
        return report.score(run, args.preset, cfg, xp, names, files)
    result = report.score(run, args.preset, cfg, xp, names, files) if job.rank == 0 else None
    job.wait_for_root(f"waiting for rank 0's report of fold {fold}")
    return job.share(result)


def root_first(job, fn):
    """``fn()`` on rank 0, then on the other ranks (each waiting, without a deadline, until
    rank 0 has finished): for work whose first run leaves files the others then read, such as
    the feature cache.  Without a job, ``fn()`` once."""
    if job is None or job.rank == 0:
        result = fn()
        if job is not None:
            job.wait_for_root()
        return result
    job.wait_for_root("waiting for rank 0 (the data, the output folder, the feature cache)")
    return fn()


def find_data(args):
    """The ESC-50 root, fetched first when it is missing and --download asks for it."""
    try:
        return esc50.find_dataset(args.data)
    except esc50.DatasetNotFound:
        if not args.download or args.data or os.environ.get("ESC50_DIR"):
            raise
    return esc50.download()


def main(argv=None):
    args = parse_args(argv)
    if not args.distributed:
        return run_folds(args)
    from scratchnet.distributed import Communicator, RanksDisagree
    job = Communicator(args.collective_timeout)
    try:
        return run_folds(args, job)
    except RanksDisagree as e:  # found by every rank at once: said once, by rank 0
        if job.rank == 0:
            raise cli.CommandError(str(e)) from None
        sys.exit(1)
    except BaseException as e:  # this rank's own failure: the others would wait for it
        cli.end_job(job, e, "--debug" in (sys.argv if argv is None else argv))


def run_folds(args, job=None):
    """The run: the data, the output folder, then each fold in turn (``job``: the MPI ranks
    of a --distributed run, or None)."""
    cfg = args.config
    xp = check_device(args.device)
    if job and args.device == "gpu":
        job.use_local_gpu()  # one GPU per rank of the host
    settings = run_folder.defining_settings(args.preset, args.seed, cfg, args.limit,
                                            args.holdout, args.teachers)
    if job:
        ranks = job.describe()
        if job.rank == 0:
            print(f"data-parallel job of {ranks}", file=sys.stderr, flush=True)
        job.check_same(dict(settings, folds=args.folds, out=os.path.abspath(args.out),
                            device=args.device, resume=args.resume, overwrite=args.overwrite,
                            sync_batchnorm=args.sync_batchnorm, stop_after=args.stop_after,
                            score_every=args.score_every), "settings")
    root = root_first(job, lambda: find_data(args))
    if job is None or job.rank == 0:
        run_folder.claim(args.out, settings, args.resume, args.overwrite)
    rows = esc50.read_metadata(root)
    names = esc50.class_names(rows)
    if args.limit:
        rows = esc50.first_of_each_fold(rows, args.limit)
    feats, labels, folds = root_first(job, lambda: esc50.load_features(
        root, cfg["features"], args.cache_dir, xp, rows,
        progress=not args.no_progress and (job is None or job.rank == 0)))
    files = np.array([r["filename"] for r in rows])  # host: names
    results_path = os.path.join(args.out, run_folder.RESULTS_FILE)
    done = {}
    if args.resume and os.path.isfile(results_path) and (job is None or job.rank == 0):
        done = run_folder.read_json(results_path).get("folds", {})
    if job:
        done = job.share(done)
    writes = job is None or job.rank == 0
    config = dict(cfg, preset=args.preset, device=args.device, seed=args.seed,
                  data=os.path.abspath(root), limit=args.limit, holdout=args.holdout,
                  teachers=args.teachers, runtime=runtime.settings())
    for fold in args.folds:
        if str(fold) in done:
            if writes:
                print(f"fold {fold}: finished earlier, accuracy "
                      f"{done[str(fold)]['accuracy']:.4f}", file=sys.stderr)
            continue
        result = train_fold(fold, feats, labels, folds, cfg, args, xp, names, files, job)
        if result is None:  # paused by --stop-after
            break
        done[str(fold)] = result
        if writes:
            report.write_results(args.out, done, config)
            print(f"fold {fold}: accuracy {result['accuracy']:.4f}", file=sys.stderr)
    results = report.run_results(done, config)
    if writes:
        print(json.dumps({k: results[k] for k in ("folds", "mean_accuracy", "std_accuracy")}))
    return results


if __name__ == "__main__":
    cli.run(main)
