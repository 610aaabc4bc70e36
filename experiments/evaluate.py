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
import json
import sys

from . import augment, cli, esc50
from .inference import (DEFAULT_CHECKPOINT, Classifier, ensemble_probabilities,
                        write_predictions)


def parse_args(argv=None):
    p = cli.parser("experiments.evaluate", __doc__)
    p.add_argument("--checkpoint", type=cli.existing_file, nargs="+",
                   default=[DEFAULT_CHECKPOINT], metavar="MODEL",
                   help="model.npz from train_esc50 (default: the packaged model); several "
                        "score their ensemble, the networks' probabilities averaged")
    cli.data_arguments(p)
    p.add_argument("--fold", type=cli.fold,
                   help="fold to score (default: the checkpoint's test fold)")
    p.add_argument("--tta-views", type=cli.positive_int,
                   help="circular time shifts to average over")
    p.add_argument("--max-shift", type=cli.fraction, default=0.2,
                   help="largest shift as a fraction of the clip, in [0, 1) (default 0.2, the "
                        "recipes')")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--limit", type=cli.positive_int,
                   help="use only the first N clips of each fold (as train_esc50 --limit)")
    p.add_argument("--predictions", type=cli.output_file, metavar="PATH",
                   help="also write each clip's prediction there (JSON, as train_esc50's "
                        "predictions.json)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    models = [Classifier(path, args.device) for path in args.checkpoint]
    root = esc50.find_dataset(args.data, download_hint=False)
    meta = models[0].meta
    for path, clf in zip(args.checkpoint[1:], models[1:]):
        if clf.meta["features"] != meta["features"]:
            raise cli.CommandError(f"{path} takes other features than {args.checkpoint[0]} "
                                   f"({clf.meta['features']} against {meta['features']}); an "
                                   "ensemble scores one input")
    fold = args.fold or meta.get("fold")
    if fold is None:
        raise cli.CommandError(f"{args.checkpoint[0]} does not say which fold it was tested "
                               "on; pass --fold")
    for path, clf in zip(args.checkpoint, models):
        if fold in clf.meta.get("trained_on", []):
            print(f"warning: {path} was trained on fold {fold}; this is not a held-out score",
                  file=sys.stderr)
    rows = esc50.read_metadata(root)
    if args.limit:
        rows = esc50.first_of_each_fold(rows, args.limit)
    rows = [r for r in rows if r["fold"] == fold]  # each clip's features are its own alone
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
    cli.run(main)
