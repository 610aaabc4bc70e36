"""experiments.summary: the tables are the run files' numbers, and a fold scored anywhere but
at the end of its schedule is refused; the committed 5-fold results obey that rule."""
import json
import os

import numpy as np
import pytest

from experiments import summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(folder, folds, epochs=3, limit=None, machines=None):
    """A train_esc50-shaped folder: ``folds`` maps fold -> (per-epoch test accuracies,
    seconds, predictions as (target, predicted) pairs or None); ``machines`` maps fold -> the
    machine recorded by each epoch (none recorded where absent, as in runs before 2026-12-06)."""
    results = {"folds": {}, "config": {"train": {"epochs": epochs}, "limit": limit}}
    for fold, (accs, seconds, predictions) in folds.items():
        os.makedirs(folder / f"fold{fold}", exist_ok=True)
        history = [{"epoch": i + 1, "test_acc": a} for i, a in enumerate(accs)]
        for record, machine in zip(history, (machines or {}).get(fold, [])):
            record["machine"] = machine
        (folder / f"fold{fold}" / "metrics.json").write_text(json.dumps(history))
        if predictions is not None:
            (folder / f"fold{fold}" / "predictions.json").write_text(json.dumps(
                [{"file": f"{fold}-{i}.wav", "target": t, "predicted": p}
                 for i, (t, p) in enumerate(predictions)]))
        results["folds"][str(fold)] = {"accuracy": accs[-1], "accuracy_single_view": accs[-1],
                                       "epochs": len(accs), "seconds": seconds}
    (folder / "results.json").write_text(json.dumps(results))


def test_fold_table_reads_each_folds_files(tmp_path):
    write_run(tmp_path, {2: ([0.5, 0.7, 0.75], 600.0, [(0, 0), (1, 1), (2, 2), (3, 0)]),
                         3: ([0.4, 0.6, 0.85], 1200.0, None)},
              machines={2: ["CPU A, 2 threads", "CPU B, 2 threads", "CPU A, 2 threads"]})
    lines = summary.fold_table(summary.fold_rows(str(tmp_path))[1]).splitlines()
    # counted from predictions; resumed on another machine and back, each named once
    assert "| 2 | 75.00% (3/4) | 65.000% | 10.0 | 3 | CPU A, 2 threads; CPU B, 2 threads |" \
        in lines
    # a full official fold, whose epochs name no machine
    assert "| 3 | 85.00% (340/400) | 61.667% | 20.0 | 3 | not recorded |" in lines
    assert "| mean +- std (2 folds) | 80.00% +- 5.00 | | 15.0 per fold | | |" in lines


def test_a_fold_not_scored_at_its_last_epoch_is_refused(tmp_path):
    write_run(tmp_path, {1: ([0.5, 0.8, 0.7], 60.0, None)})
    results = json.loads((tmp_path / "results.json").read_text())
    results["folds"]["1"].update(accuracy=0.8, accuracy_single_view=0.8)  # the best epoch
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(summary.SummaryError, match="fold 1: results.json says 0.8 after 3 "
                                                   "epochs, its metrics.json 0.7 after 3"):
        summary.fold_table(summary.fold_rows(str(tmp_path))[1])
    write_run(tmp_path, {1: ([0.5, 0.7], 60.0, None)}, epochs=3)  # stopped early
    with pytest.raises(summary.SummaryError, match="schedule: 3"):
        summary.fold_table(summary.fold_rows(str(tmp_path))[1])


def test_predictions_must_agree_with_the_reported_accuracy(tmp_path):
    write_run(tmp_path, {1: ([0.5, 0.5, 0.75], 60.0, [(0, 0), (1, 2), (2, 2), (3, 0)])})
    with pytest.raises(summary.SummaryError, match="2/4 right, but results.json says 0.75"):
        summary.fold_table(summary.fold_rows(str(tmp_path))[1])


def test_frontier_marks_the_runs_nothing_beats_and_plots_them(tmp_path, capsys):
    for name, minutes, acc in [("fast", 30, 0.70), ("slow_better", 90, 0.80),
                               ("slow_worse", 95, 0.75), ("mid", 60, 0.78)]:
        write_run(tmp_path / name, {2: ([acc] * 3, minutes * 60.0, None)})
    runs = [str(tmp_path / n) for n in ("slow_worse", "fast", "mid", "slow_better")]
    summary.main(runs + ["--plot", str(tmp_path / "frontier.png")])
    out = capsys.readouterr().out
    assert "| fast | 1 | 30.0 | 70.00% | yes | not recorded |" in out
    assert "| mid | 1 | 60.0 | 78.00% | yes | not recorded |" in out
    assert "| slow_better | 1 | 90.0 | 80.00% | yes | not recorded |" in out
    assert "| slow_worse | 1 | 95.0 | 75.00% | no | not recorded |" in out
    assert (tmp_path / "frontier.png").stat().st_size > 1000


def test_the_frontier_compares_runs_on_the_folds_they_share(tmp_path, capsys, refused):
    # five folds against a run that has finished two: fold 4's 0.95 must not enter
    write_run(tmp_path / "five", {f: ([a] * 3, 3000.0, None) for f, a in
                                  zip(range(1, 6), [0.80, 0.79, 0.82, 0.95, 0.79])})
    write_run(tmp_path / "two", {1: ([0.83] * 3, 6000.0, None), 2: ([0.81] * 3, 5400.0, None)},
              machines={1: ["CPU A, 2 threads"] * 3, 2: ["CPU A, 2 threads", "CPU B, 2 threads",
                                                        "CPU B, 2 threads"]})
    summary.main([str(tmp_path / "five"), str(tmp_path / "two")])
    out = capsys.readouterr().out
    assert "Over folds 1, 2, the folds every run has finished:" in out
    assert "| five | 2 | 50.0 | 79.50% | yes | not recorded |" in out
    # its minutes come from two processors, each named once
    assert "| two | 2 | 95.0 | 82.00% | yes | CPU A, 2 threads; CPU B, 2 threads |" in out
    assert "| mean +- std (5 folds) | 83.00% +- 6.10 |" in out  # its own table keeps all five
    write_run(tmp_path / "other", {3: ([0.7] * 3, 60.0, None)})
    refused(summary.main, [str(tmp_path / "two"), str(tmp_path / "other")],
            r"the runs share no finished fold: .*two has fold\(s\) 1, 2; .*other has "
            r"fold\(s\) 3")


def test_a_folder_without_results_is_one_error_line(tmp_path, refused):
    refused(summary.main, [str(tmp_path)],
            "results.json is missing: is this a train_esc50 output folder")


COMMITTED = sorted(d for d in os.listdir(os.path.join(ROOT, "results"))
                   if os.path.isfile(os.path.join(ROOT, "results", d, "results.json")))


@pytest.mark.parametrize("name", ["cpu128-5fold", "cpu128bc-5fold"])
def test_the_five_fold_runs_are_committed_with_all_five_folds(name):
    results, rows = summary.fold_rows(os.path.join(ROOT, "results", name))
    assert [r["fold"] for r in rows] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("name", COMMITTED)
def test_the_committed_results_are_scored_at_the_end_of_their_schedules(name):
    results, rows = summary.fold_rows(os.path.join(ROOT, "results", name))  # raises if picked
    assert rows and all(r["epochs"] == results["config"]["train"]["epochs"] for r in rows)
    accs = [r["accuracy"] for r in rows]
    assert results["mean_accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert results["std_accuracy"] == pytest.approx(np.std(accs), abs=1e-12)


def test_the_cpu128bc_preset_is_the_recipe_adopted_on_the_validation_split():
    """The preset must be what the adopting run trained, on the split it was adopted on."""
    from experiments.models import PRESETS
    config = summary.read_json(os.path.join(ROOT, "results", "val-h1-fold2-bc-e150",
                                            "results.json"))["config"]
    assert config["holdout"] == [1] and config["seed"] == 0 and not config["teachers"]
    for part in ("features", "model", "train"):
        assert PRESETS["cpu128bc"][part] == config[part], part
    # cpu128 with only the two adopted changes:
    assert PRESETS["cpu128bc"]["train"] == dict(PRESETS["cpu128"]["train"], epochs=150,
                                                bc_mix=1)


@pytest.mark.parametrize("name", [n for n in COMMITTED if n.endswith("-5fold")])
def test_a_five_fold_run_is_its_presets_configuration_on_every_fold(name):
    """results/<preset>-5fold is the figure README gives for <preset>: trained with exactly
    the preset's features, network and recipe (keys added since count at their original
    values), seed 0, every clip, no fold held out and no teachers."""
    from experiments.models import PRESETS
    from experiments.run_folder import with_added_keys
    config = summary.read_json(os.path.join(ROOT, "results", name, "results.json"))["config"]
    preset = name[:-len("-5fold")]
    assert config["preset"] == preset and config["seed"] == 0 and config["limit"] is None
    assert config["holdout"] == [] and not config.get("teachers")
    parts = ("features", "model", "train")
    assert with_added_keys({p: config[p] for p in parts}) == \
        with_added_keys({p: PRESETS[preset][p] for p in parts})


def test_classes_compares_runs_class_by_class_over_shared_folds(tmp_path, capsys, refused):
    """Pooled over the folds both runs finished (fold 3 only the first has), named as
    per_class_accuracy.json names them; the classes ordered by the last run's lead."""
    first = [(0, 0), (0, 0), (1, 1), (1, 1), (2, 2), (2, 0)]
    second = [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 2)]
    write_run(tmp_path / "a", {1: ([0.5, 5 / 6, 5 / 6], 60.0, first),
                               3: ([0.5, 0.5, 0.0], 60.0, [(0, 1), (1, 0)])})
    write_run(tmp_path / "b", {1: ([0.5, 5 / 6, 5 / 6], 60.0, second)})
    for run in ("a", "b"):
        (tmp_path / run / "fold1" / "per_class_accuracy.json").write_text(
            json.dumps({"dog": 0.0, "rain": 0.0, "siren": 0.0}))
    summary.main([str(tmp_path / "a"), str(tmp_path / "b"), "--classes"])
    out = capsys.readouterr().out
    assert ("Per class, over fold 1 (2 clips of each class): b behind a on 1 classes, level on "
            "1, ahead on 1.") in out
    rows = [line for line in out.splitlines() if line.startswith(("| dog", "| rain", "| siren"))]
    assert rows == ["| dog | 100.0% | 50.0% | -50.0 |", "| rain | 100.0% | 100.0% | +0.0 |",
                    "| siren | 50.0% | 100.0% | +50.0 |"]
    refused(summary.main, [str(tmp_path / "a"), "--classes"], "--classes compares runs")


def test_classes_takes_names_only_from_a_fold_that_lists_every_class(tmp_path):
    """Under --limit a fold may lack a class; its per_class_accuracy.json then lists fewer
    names, and reading them by index would misname the classes after the gap."""
    write_run(tmp_path, {1: ([1.0, 1.0, 1.0], 60.0, [(0, 0), (2, 2)]),
                         2: ([0.5, 0.5, 2 / 3], 60.0, [(0, 0), (1, 1), (2, 0)])})
    (tmp_path / "fold1" / "per_class_accuracy.json").write_text(
        json.dumps({"dog": 1.0, "siren": 1.0}))              # class 1 (rain) absent
    (tmp_path / "fold2" / "per_class_accuracy.json").write_text(
        json.dumps({"dog": 1.0, "rain": 1.0, "siren": 0.0}))
    counts = summary.class_counts(str(tmp_path), [1, 2])
    assert counts == {"dog": (2, 2), "rain": (1, 1), "siren": (1, 2)}
