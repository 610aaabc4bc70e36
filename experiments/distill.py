"""Knowledge distillation from an ensemble of trained networks into one (Hinton et al., 2015).

An ensemble of M networks trained with different seeds predicts better than any one of them,
at M times the inference cost.  Its averaged probabilities
    q_i = (1/M) sum_m softmax(f_m(x_i))
over a training clip x_i say more than the label alone: which other classes the clip sounds
like.  A student network of the usual size is trained on the targets
    t_i = (1 - beta) e_{y_i} + beta q_i,
with e_y the one-hot label, instead of on e_{y_i}; Mixup and between-class mixing then mix
these targets as they mix one-hot ones.  The student keeps one network's inference cost.

The teachers score the training clips once, before the student's first step, on the clean
inputs (no augmentation), each standardised by its own stored statistics.  A teacher must
have been trained on exactly the student's training folds: one that saw the student's test
fold or a held-out fold would carry its labels into the student's targets.
"""
import numpy as np

from .inference import Classifier, ensemble_probabilities


class TeacherError(ValueError):
    """A teacher that cannot teach this run (named, with the reason)."""


def teacher_probabilities(paths, feats, features, trained_on, device="cpu"):
    """q (N, K) on the host: the teachers' probabilities averaged over the teachers, for the
    log-Mels ``feats`` (N, n_mels, frames, in dB) of the student's training clips.
    ``features``: the student's feature configuration, which each teacher must share;
    ``trained_on``: the student's training folds, which must be each teacher's."""
    if not paths:
        raise TeacherError("distillation needs at least one teacher model")
    teachers = []
    for path in paths:
        teacher = Classifier(path, device)
        meta = teacher.meta
        if meta["features"] != features:
            raise TeacherError(f"teacher {path} was trained on other features "
                               f"({meta['features']}, the student's {features})")
        if sorted(meta.get("trained_on", [])) != sorted(trained_on):
            raise TeacherError(f"teacher {path} was trained on folds "
                               f"{meta.get('trained_on')}, the student on {sorted(trained_on)}; "
                               "a teacher must have seen exactly the student's training folds")
        teachers.append(teacher)
    # One view each, the clips as they are; the probabilities come back on the host.
    return ensemble_probabilities(teachers, feats).astype(np.float32)


def distilled_targets(labels, probs, beta):
    """t = (1 - beta) e_y + beta q, one row per clip (host float32 (N, K)); each row sums to
    1 when q's rows do."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"distillation weight must be in [0, 1], got {beta}")
    labels = np.asarray(labels)  # host: integer labels
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"{probs.shape[0]} teacher predictions for {labels.shape[0]} clips")
    targets = beta * np.asarray(probs, dtype=np.float32)  # host: the teachers' averages
    targets[np.arange(len(labels)), labels] += 1.0 - beta
    return targets
