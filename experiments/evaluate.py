"""Score a trained model (model.npz from train_esc50, or the packaged one) on an ESC-50 fold.

    python -m experiments.evaluate                                  # packaged model, its fold
    python -m experiments.evaluate --checkpoint runs/x/fold1/model.npz --tta-views 5
    python -m experiments.evaluate --checkpoint runs/a/fold2/model.npz runs/b/fold2/model.npz

The accuracy is that of the model as it is: no training, no choice among epochs.  With
``--tta-views K`` the probabilities are averaged over K circular time shifts spread over
+-``--max-shift`` of the clip (the training shift range); without it, the shifts stored in the
checkpoint are used (none in checkpoints written before test-time shifts existed).  Scoring a
fold the model was trained on works, with a warning that the figure is not a held-out one.
Several checkpoints score their ensemble: the networks' probabilities averaged, each network
on its own standardisation of the clips.
"""
from scratchnet.runtime import configure

configure()  # first, before NumPy loads OpenBLAS (scratchnet.runtime)

import argparse
import json
import sys

from scratchnet.runtime.backend import DeviceError

from . import augment, esc50
from .inference import (DEFAULT_CHECKPOINT, Classifier, ensemble_probabilities,
                        write_predictions)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", default=[DEFAULT_CHECKPOINT], metavar="MODEL",
                   help="model.npz from train_esc50 (default: the packaged model); several "
                        "score their ensemble, the networks' probabilities averaged")
    p.add_argument("--data", help="ESC-50 root (default: $ESC50_DIR, else ./data/ESC-50)")
    p.add_argument("--fold", type=int, help="fold to score (default: the checkpoint's test fold)")
    p.add_argument("--tta-views", type=int, help="circular time shifts to average over")
    p.add_argument("--max-shift", type=float, default=0.2,
                   help="largest shift as a fraction of the clip (default 0.2, the recipes')")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--cache-dir", help="log-Mel feature cache (default ~/.cache/scratchnet)")
    p.add_argument("--limit", type=int,
                   help="use only the first N clips of each fold (as train_esc50 --limit)")
    p.add_argument("--predictions", metavar="PATH",
                   help="also write each clip's prediction there (JSON, as train_esc50's "
                        "predictions.json)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.fold is not None and args.fold not in range(1, 6):
        p.error(f"--fold must be among 1..5, got {args.fold}")
    if args.tta_views is not None and args.tta_views < 1:
        p.error(f"--tta-views must be at least 1, got {args.tta_views}")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        models = [Classifier(path, args.device) for path in args.checkpoint]
        root = esc50.find_dataset(args.data)
    except (OSError, ValueError, DeviceError) as e:
        sys.exit(f"error: {e}")
    meta = models[0].meta
    for path, clf in zip(args.checkpoint[1:], models[1:]):
        if clf.meta["features"] != meta["features"]:
            sys.exit(f"error: {path} takes other features than {args.checkpoint[0]} "
                     f"({clf.meta['features']} against {meta['features']}); an ensemble "
                     "scores one input")
    fold = args.fold or meta.get("fold")
    if fold is None:
        sys.exit(f"error: {args.checkpoint[0]} does not say which fold it was tested on; "
                 "pass --fold")
    for path, clf in zip(args.checkpoint, models):
        if fold in clf.meta.get("trained_on", []):
            print(f"warning: {path} was trained on fold {fold}; this is not a held-out score",
                  file=sys.stderr)
    rows = esc50.read_metadata(root)
    if args.limit:
        rows = esc50.first_of_each_fold(rows, args.limit)
    xp = models[0].xp
    feats, labels, folds = esc50.load_features(root, meta["features"], args.cache_dir, xp,
                                               rows, progress=not args.no_progress)
    test = folds == fold
    frames = feats.shape[-1]
    shift_sets = [augment.test_time_shifts(frames, args.max_shift, args.tta_views)
                  if args.tta_views is not None else clf.shifts for clf in models]
    probs = ensemble_probabilities(models, feats[test], shift_sets)
    pred = probs.argmax(axis=1)
    if args.predictions:
        files = [r["filename"] for r, tested in zip(rows, test) if tested]
        write_predictions(args.predictions, files, labels[test], probs)
    if all(shifts == [0] for shifts in shift_sets):
        single = pred
    else:
        single = ensemble_probabilities(models, feats[test]).argmax(axis=1)
    result = dict(checkpoint=args.checkpoint[0] if len(models) == 1 else args.checkpoint,
                  fold=int(fold), clips=int(test.sum()),
                  shifts=shift_sets[0] if len(models) == 1 else shift_sets,
                  accuracy=float((pred == labels[test]).mean()),
                  accuracy_single_view=float((single == labels[test]).mean()))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
