"""Distillation from teachers: the target rows, their mixing, and a student trained end to end
(experiments.distill)."""
import json

import numpy as np
import pytest

from experiments import augment, distill, esc50, fold_run, train_esc50


def test_distilled_targets_mix_the_label_with_the_teachers_probabilities(rng):
    q = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    labels = np.array([0, 3, 3, 1])
    t = distill.distilled_targets(labels, q, 0.25)
    expected = 0.25 * q
    for i, y in enumerate(labels):
        expected[i, y] += 0.75
    np.testing.assert_allclose(t, expected, rtol=1e-6)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(distill.distilled_targets(labels, q, 0.0),
                                  np.eye(5, dtype=np.float32)[labels])
    np.testing.assert_allclose(distill.distilled_targets(labels, q, 1.0), q)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got 1.5"):
        distill.distilled_targets(labels, q, 1.5)
    with pytest.raises(ValueError, match="3 teacher predictions for 4 clips"):
        distill.distilled_targets(labels, q[:3], 0.5)


@pytest.mark.parametrize("power", [False, True])
def test_mixup_and_between_class_mix_given_target_rows(rng, power):
    x = rng.standard_normal((6, 1, 4, 5)).astype(np.float32)
    rows = rng.dirichlet(np.ones(7), size=6).astype(np.float32)
    scale = np.float32(0.3) if power else None
    _, mixed = augment.mixup(x, rows, 7, np.random.default_rng(2), 0.2, scale)
    draw = np.random.default_rng(2)
    lam = float(draw.beta(0.2, 0.2))
    perm = draw.permutation(6)
    if power:
        lam = min(max(lam, 1e-7), 1 - 1e-7)
    np.testing.assert_allclose(mixed, lam * rows + (1 - lam) * rows[perm], rtol=1e-5)
    _, mixed = augment.between_class(x, rows, 7, np.random.default_rng(3), np.float32(0.3),
                                     np.zeros(6))
    draw = np.random.default_rng(3)
    perm = draw.permutation(6)
    r = np.clip(draw.uniform(0.0, 1.0, size=6), 1e-7, 1 - 1e-7)[:, None]
    np.testing.assert_allclose(mixed, r * rows + (1 - r) * rows[perm], rtol=1e-5)


def _teacher(esc50_root, tmp_path, fold, seed):
    out = tmp_path / f"teacher-fold{fold}-seed{seed}"
    train_esc50.main(["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"),
                      "--no-progress", "--folds", str(fold), "--epochs", "1", "--batch-size",
                      "8", "--limit", "8", "--seed", str(seed), "--out", str(out)])
    return out / f"fold{fold}"


def test_teachers_score_clips_as_their_own_runs_scored_them(esc50_root, tmp_path):
    """The teachers' probabilities come from each checkpoint with its stored statistics: on a
    teacher's own test fold, their argmax is the class its run wrote in predictions.json."""
    teacher = _teacher(esc50_root, tmp_path, 1, 0)
    meta = json.loads((teacher.parent / "results.json").read_text())["config"]
    rows = esc50.first_of_each_fold(esc50.read_metadata(esc50_root), 8)
    feats, labels, folds = esc50.load_features(esc50_root, meta["features"],
                                               str(tmp_path / "cache"), np, rows, False)
    q = distill.teacher_probabilities([str(teacher / "model.npz")], feats[folds == 1],
                                      meta["features"], [2, 3, 4, 5])
    scored = json.loads((teacher / "predictions.json").read_text())
    assert q.shape == (8, esc50.NUM_CLASSES) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
    assert list(q.argmax(axis=1)) == [r["predicted"] for r in scored]
    np.testing.assert_allclose(q.max(axis=1), [r["probability"] for r in scored], rtol=1e-5)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_a_student_learns_from_the_averaged_teachers(esc50_root, tmp_path, monkeypatch,
                                                     device, request, refused):
    if device == "gpu":
        request.getfixturevalue("standin")
    teachers = [str(_teacher(esc50_root, tmp_path, 1, s) / "model.npz") for s in (0, 1)]
    seen = {}
    real = distill.teacher_probabilities

    def recorded(paths, *args, **kwargs):
        seen["q"] = real(paths, *args, **kwargs)
        seen["paths"] = list(paths)
        return seen["q"]

    monkeypatch.setattr(distill, "teacher_probabilities", recorded)
    common = ["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--epochs", "1", "--batch-size", "8", "--limit", "8", "--device", device, "--preset", "cpu128"]
    out = tmp_path / "student"
    results = train_esc50.main(common + ["--folds", "1", "--teachers", *teachers,
                                         "--recipe", "distill=0.5", "--out", str(out)])
    assert seen["paths"] == teachers and seen["q"].shape == (32, esc50.NUM_CLASSES)
    assert results["config"]["teachers"] == teachers
    assert results["config"]["train"]["distill"] == 0.5
    history = json.loads((out / "fold1" / "metrics.json").read_text())
    assert np.isfinite(history[0]["train_loss"])
    # A teacher that saw the student's test fold is refused, naming it.
    refused(train_esc50.main, common + ["--folds", "2", "--teachers", teachers[0], "--recipe",
                                        "distill=0.5", "--out", str(tmp_path / "leak")],
            "a teacher must have seen exactly the student's training folds")
    refused(train_esc50.main, common + ["--folds", "1", "--teachers", teachers[0], "--recipe",
                                        "distill=0.5", "--preset", "cpu", "--out",
                                        str(tmp_path / "other-input")],
            "was trained on other features")
    refused(train_esc50.main, common + ["--folds", "1", "--teachers", teachers[0],
                                        "--out", str(tmp_path / "no-weight")],
            "distillation needs both --teachers")
    refused(train_esc50.main, common + ["--folds", "1", "--teachers", teachers[0], "--recipe",
                                        "distill=2", "--out", str(tmp_path / "too-heavy")],
            "distill: expected a weight in \\[0, 1\\]")


def test_the_loss_is_given_the_teachers_rows(esc50_root, tmp_path, monkeypatch):
    """With beta = 1 and no mixing, every target row the loss sees is one training clip's
    averaged teacher probabilities."""
    teacher = str(_teacher(esc50_root, tmp_path, 1, 0) / "model.npz")
    given = []

    class Recorded(fold_run.SoftmaxCrossEntropy):
        def forward(self, logits, targets):
            given.append(np.array(targets, copy=True))
            return super().forward(logits, targets)

    monkeypatch.setattr(fold_run, "SoftmaxCrossEntropy", Recorded)
    seen = {}
    real = distill.teacher_probabilities
    monkeypatch.setattr(distill, "teacher_probabilities",
                        lambda *a, **k: seen.setdefault("q", real(*a, **k)))
    train_esc50.main(["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"),
                      "--no-progress", "--epochs", "1", "--batch-size", "8", "--limit", "8",
                      "--folds", "1", "--teachers", teacher, "--recipe", "distill=1",
                      "mixup_prob=0", "bc_mix=0", "--out", str(tmp_path / "student")])
    rows = np.concatenate(given)
    assert rows.shape == (32, esc50.NUM_CLASSES)
    q = seen["q"]
    for row in rows:  # each batch row is one clip's q, each clip once per epoch
        assert np.min(np.abs(q - row).max(axis=1)) < 1e-6
    np.testing.assert_allclose(np.sort(rows, axis=0), np.sort(q, axis=0), rtol=1e-6)


def test_evaluate_scores_an_ensemble_by_its_averaged_probabilities(esc50_root, tmp_path,
                                                                   refused):
    from experiments import evaluate
    from experiments.inference import Classifier, evaluate as probabilities_of
    models = [str(_teacher(esc50_root, tmp_path, 2, s) / "model.npz") for s in (0, 1)]
    common = ["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"), "--limit", "8",
              "--no-progress"]
    out = tmp_path / "ensemble.json"
    scored = evaluate.main(common + ["--checkpoint", *models, "--predictions", str(out)])
    # The average, computed here through each checkpoint on its own statistics.
    rows = esc50.first_of_each_fold(esc50.read_metadata(esc50_root), 8)
    clfs = [Classifier(m) for m in models]
    feats, labels, folds = esc50.load_features(esc50_root, clfs[0].meta["features"],
                                               str(tmp_path / "cache"), np, rows, False)
    probs = [probabilities_of(c.model, esc50.standardise(feats[folds == 2],
                                                          c.normalization)[:, None], np)[1]
             for c in clfs]
    assert not np.allclose(probs[0], probs[1])  # two seeds, two networks
    mean = (probs[0] + probs[1]) / 2
    written = json.loads(out.read_text())
    assert [r["predicted"] for r in written] == list(mean.argmax(axis=1))
    np.testing.assert_allclose([r["probability"] for r in written], mean.max(axis=1),
                               rtol=1e-5)
    assert scored["checkpoint"] == models and scored["fold"] == 2
    assert scored["accuracy"] == float((mean.argmax(axis=1) == labels[folds == 2]).mean())
    # Networks that take other inputs cannot be averaged.
    other = tmp_path / "other"
    train_esc50.main(["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"),
                      "--no-progress", "--folds", "2", "--epochs", "1", "--batch-size", "8",
                      "--limit", "8", "--preset", "cpu", "--out", str(other)])
    refused(evaluate.main, common + ["--checkpoint", models[0],
                                     str(other / "fold2" / "model.npz")],
            "takes other features than")
