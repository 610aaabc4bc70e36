"""Quantise a trained model to INT8 (scratchnet.quantize), calibrated on its own training folds.

    python -m experiments.quantize runs/esc50/fold1/model.npz runs/esc50/fold1/model-int8.npz \
        --calibration-clips 200

The activation scales are calibrated on --calibration-clips clips drawn from the folds the
model was trained on (never its held-out fold), by each rule of scratchnet.quantize (max,
percentile, mse).  The rule kept is the one whose int8 model agrees most often with the float
model's top class on --check-clips other training clips (not used for calibration).  OUT keeps
SRC's metadata (fold, training folds, classes, features, normalisation) and records the
quantisation; classify, evaluate, visualize and serve take it as --checkpoint.
"""
import json
import sys

import numpy as np

from scratchnet import CheckpointError, save_checkpoint
from scratchnet.quantize import METHODS, quantize_model

from . import cli, esc50
from .inference import Classifier, evaluate


def parse_args(argv=None):
    p = cli.parser("experiments.quantize", __doc__)
    p.add_argument("src", type=cli.existing_file, help="model.npz from train_esc50")
    p.add_argument("out", type=cli.output_file, help="the int8 checkpoint to write (.npz)")
    p.add_argument("--calibration-clips", type=cli.positive_int, default=200, metavar="N",
                   help="training clips whose activations set the scales (200)")
    p.add_argument("--check-clips", type=cli.positive_int, default=200, metavar="M",
                   help="other training clips on which the rules are compared (200)")
    p.add_argument("--method", choices=("auto",) + METHODS, default="auto",
                   help="the calibration rule (auto: the one that agrees best on the check "
                        "clips)")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="LAYER",
                   help="layers left in float32, by name (e.g. stem.conv fc)")
    cli.data_arguments(p)
    p.add_argument("--seed", type=cli.nonnegative_int, default=0,
                   help="which training clips are drawn (0)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def training_clips(clf, root, n_calibration, n_check, seed, cache_dir, progress):
    """(calibration inputs, check inputs): disjoint random clips of the model's training
    folds, standardised as the model's inputs were."""
    trained_on = clf.meta.get("trained_on")
    if not trained_on:
        raise cli.CommandError(f"{clf.path} does not record the folds it was trained on; "
                               "calibration must use training clips only")
    rows = [r for r in esc50.read_metadata(root) if r["fold"] in trained_on]
    if n_calibration + n_check > len(rows):
        raise cli.CommandError(f"--calibration-clips {n_calibration} and --check-clips "
                               f"{n_check} need {n_calibration + n_check} clips; the training "
                               f"folds {trained_on} have {len(rows)}")
    order = np.random.default_rng(seed).permutation(len(rows))
    chosen = [rows[i] for i in np.sort(order[:n_calibration + n_check])]
    feats, _, _ = esc50.load_features(root, clf.meta["features"], cache_dir, np, chosen,
                                      progress=progress)
    x = esc50.standardise(feats, clf.normalization)[:, None]
    is_calibration = np.isin(np.sort(order[:n_calibration + n_check]), order[:n_calibration])
    return x[is_calibration], x[~is_calibration]


def agreement(model, reference_probs, x):
    """(share of clips whose top class is the float model's, mean and largest absolute change
    of a class probability)."""
    _, probs = evaluate(model, x, np)
    change = np.abs(probs - reference_probs)
    return (float((probs.argmax(axis=1) == reference_probs.argmax(axis=1)).mean()),
            float(change.mean()), float(change.max()))


def main(argv=None):
    args = parse_args(argv)
    clf = Classifier(args.src)
    if "quantization" in clf.meta:
        raise CheckpointError(f"{args.src} is already quantised; quantise the float model")
    root = esc50.find_dataset(args.data, download_hint=False)
    calibration, check = training_clips(clf, root, args.calibration_clips, args.check_clips,
                                        args.seed, args.cache_dir, not args.no_progress)
    batches = [calibration[s:s + 50] for s in range(0, len(calibration), 50)]
    _, reference = evaluate(clf.model, check, np)
    methods = METHODS if args.method == "auto" else (args.method,)
    tried = {}
    for method in methods:
        model, spec = quantize_model(clf.model, batches, method, args.keep_float)
        agree, mean_change, max_change = agreement(model, reference, check)
        tried[method] = dict(model=model, spec=spec, agreement=agree,
                             mean_prob_change=mean_change, max_prob_change=max_change)
        print(f"{method:>10}: top class as float32 on {agree:.2%} of {len(check)} check clips;"
              f" probability change mean {mean_change:.2e}, largest {max_change:.4f}",
              file=sys.stderr)
    # The most agreement; among equals, the probabilities closest to float32's.
    best = max(methods, key=lambda m: (tried[m]["agreement"], -tried[m]["mean_prob_change"]))
    chosen = tried[best]
    # The source's accuracy is the float model's; the int8 model's own is evaluate's to give.
    meta = {k: v for k, v in clf.meta.items() if k != "accuracy"}
    meta = dict(meta, float_accuracy=clf.meta.get("accuracy"), stored_dtype="int8",
                quantization=dict(
        chosen["spec"], calibration_clips=args.calibration_clips,
        check_clips=args.check_clips, calibrated_on=clf.meta["trained_on"], seed=args.seed,
        agreement={m: tried[m]["agreement"] for m in methods},
        mean_prob_change={m: tried[m]["mean_prob_change"] for m in methods}))
    save_checkpoint(args.out, chosen["model"].state_dict(), meta)
    summary = dict(out=args.out, method=best, agreement=chosen["agreement"],
                   mean_prob_change=chosen["mean_prob_change"],
                   max_prob_change=chosen["max_prob_change"],
                   layers_int8=len(chosen["spec"]["layers"]),
                   layers_float=chosen["spec"]["float_layers"])
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    cli.run(main)
