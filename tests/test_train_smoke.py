"""End to end: two epochs of the CPU preset on a small real subset of ESC-50."""
import json

import numpy as np
import pytest

from scratchnet import load_checkpoint, save_checkpoint
from scratchnet.runtime.backend import describe_device

from experiments import esc50, models, train_esc50


def test_two_epochs_write_results_and_the_loss_falls(esc50_root, tmp_path):
    out = tmp_path / "run"
    argv = ["--data", esc50_root, "--device", "cpu", "--folds", "1", "--epochs", "2",
            "--batch-size", "16", "--limit", "24", "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--seed", "0"]
    train_esc50.main(argv)
    results = json.loads((out / "results.json").read_text())
    assert set(results["folds"]) == {"1"}
    fold = results["folds"]["1"]
    assert 0.0 <= fold["accuracy"] <= 1.0 and fold["epochs"] == 2 and fold["seconds"] > 0
    assert results["mean_accuracy"] == fold["accuracy"] and results["std_accuracy"] == 0.0
    assert results["config"]["preset"] == "cpu128bc"
    history = json.loads((out / "fold1" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] == fold["accuracy"]
    assert "test_acc_raw" not in history[0]  # no weight average in cpu128bc's recipe
    # Each epoch names the processor it ran on, so that its seconds can be compared.
    assert [h["machine"] for h in history] == [describe_device("cpu")] * 2
    assert fold["machines"] == [describe_device("cpu")]
    for name in ["model.npz", "checkpoint.npz", "curves.png", "confusion.png",
                 "per_class_accuracy.json"]:
        assert (out / "fold1" / name).is_file(), name


def test_the_command_and_a_plain_script_get_the_same_runtime_settings(esc50_root, tmp_path):
    """The command sets nothing up before NumPy loads: what it records as the runtime's
    settings (BLAS, memory) is what a script that imports NumPy first gets."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                        "MKL_NUM_THREADS")}
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "experiments.train_esc50", "--data", esc50_root,
                    "--folds", "1", "--epochs", "1", "--batch-size", "16", "--limit", "12",
                    "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                    "--no-progress"], cwd=root, env=env, check=True, capture_output=True)
    script = ("import json, numpy as np, scratchnet as sn\n"
              "from scratchnet import runtime\n"
              "sn.Linear(3, 2).forward(np.ones((2, 3), dtype=np.float32))\n"
              "print(json.dumps(runtime.settings()))")
    plain = subprocess.run([sys.executable, "-c", "import numpy\n" + script], cwd=root,
                           env=env, check=True, capture_output=True, text=True)
    recorded = json.loads((out / "results.json").read_text())["config"]["runtime"]
    assert recorded == json.loads(plain.stdout)
    assert recorded["memory"].startswith("kept") or "environment" in recorded["memory"]


def test_resume_reproduces_an_uninterrupted_run(esc50_root, tmp_path):
    """A run stopped after epoch 1 and resumed ends with the same weights and history as one
    that ran both epochs at once."""
    common = ["--data", esc50_root, "--folds", "2", "--batch-size", "16", "--limit", "12",
              "--epochs", "2", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--seed", "1", "--recipe", "ema_decay=0.9"]  # the average must resume too
    train_esc50.main(common + ["--out", str(tmp_path / "a")])
    partial = train_esc50.main(common + ["--out", str(tmp_path / "b"), "--stop-after", "1"])
    assert partial["folds"] == {}
    assert not (tmp_path / "b" / "fold2" / "model.npz").exists()
    train_esc50.main(common + ["--out", str(tmp_path / "b"), "--resume"])
    losses = [[h["train_loss"] for h in json.loads(
        (tmp_path / run / "fold2" / "metrics.json").read_text())] for run in ("a", "b")]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    a, _ = load_checkpoint(tmp_path / "a" / "fold2" / "model.npz")
    b, _ = load_checkpoint(tmp_path / "b" / "fold2" / "model.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_weight_average_is_scored_and_saved_beside_the_raw_weights(esc50_root, tmp_path):
    out = tmp_path / "run"
    results = train_esc50.main(["--data", esc50_root, "--folds", "3", "--epochs", "2",
                                "--batch-size", "16", "--limit", "12", "--recipe", "ema_decay=0.9",
                                "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                                "--no-progress"])
    assert results["config"]["train"]["ema_decay"] == 0.9
    history = json.loads((out / "fold3" / "metrics.json").read_text())
    assert all(0.0 <= h["test_acc_raw"] <= 1.0 for h in history)
    assert history[-1]["test_acc"] == results["folds"]["3"]["accuracy"]
    state, meta = load_checkpoint(out / "fold3" / "checkpoint.npz")
    assert meta["ema"] == {"updates": 2 * (48 // 16), "decay": 0.9}
    saved, _ = load_checkpoint(out / "fold3" / "model.npz")
    for key, value in saved.items():  # the saved model is the average, not the raw weights
        np.testing.assert_array_equal(value, state["ema." + key], err_msg=key)
    assert any(not np.array_equal(saved[k], state["model." + k]) for k in saved)


def test_recipe_overrides_are_checked():
    train = {"mixup_prob": 0.3, "ema_decay": 0.999, "epochs": 100}
    assert models.parse_recipe(["mixup_prob=1", "ema_decay=0"], train) == \
        {"mixup_prob": 1, "ema_decay": 0}
    for bad, message in [("mixup=1", "unknown key 'mixup'"), ("mixup_prob", "KEY=VALUE"),
                         ("mixup_prob=high", "expected a number")]:
        with pytest.raises(ValueError, match=message):
            models.parse_recipe([bad], train)


def test_resume_refuses_a_checkpoint_written_with_other_settings(esc50_root, tmp_path,
                                                                 refused):
    def argv(*extra, epochs=2):
        return ["--data", esc50_root, "--folds", "4", "--batch-size", "16", "--limit", "12",
                "--epochs", str(epochs), "--no-progress", "--cache-dir", str(tmp_path / "cache"),
                "--out", str(tmp_path / "run"), *extra]

    train_esc50.main(argv("--stop-after", "1"))
    refused(train_esc50.main, argv("--resume", "--recipe", "ema_decay=0.9", "mixup_prob=1"),
            r"train\.ema_decay: 0\.0 -> 0\.9; train\.mixup_prob: 0\.3 -> 1\)")
    refused(train_esc50.main, argv("--resume", epochs=3), r"\(train\.epochs: 2 -> 3\)")
    refused(train_esc50.main, argv("--resume", "--holdout", "1"),
            r"\(data\.holdout: \[\] -> \[1\]\)")
    refused(train_esc50.main, argv("--resume", "--seed", "3"), r"\(seed: 0 -> 3\)")
    # and a fold's checkpoint from other settings is refused too (an --out whose run.json
    # was lost, or a fold folder copied in)
    (tmp_path / "run" / "run.json").unlink()
    refused(train_esc50.main, argv("--resume", "--holdout", "1"),
            r"\(data\.trained_on: \[1, 2, 3, 5\] -> \[2, 3, 5\]\)")
    assert train_esc50.main(argv("--resume"))["folds"]["4"]["epochs"] == 2  # the original go on


def test_too_few_training_clips_is_one_error_line(esc50_root, tmp_path, refused):
    refused(train_esc50.main, ["--data", esc50_root, "--folds", "1", "--batch-size", "16",
                               "--limit", "1", "--no-progress", "--cache-dir",
                               str(tmp_path / "c"), "--out", str(tmp_path / "run")],
            "fold 1: 4 training clips, fewer than one batch of 16")


def test_recipe_options_and_evaluate_reproducing_the_fold_score(esc50_root, tmp_path,
                                                                capsys):
    from experiments import evaluate
    out = tmp_path / "run"
    common = ["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    results = train_esc50.main(common + ["--folds", "2", "--epochs", "1", "--batch-size", "16",
                                         "--limit", "12", "--out", str(out), "--recipe",
                                         "tta_views=3", "per_mel_norm=1", "mixup_power=1",
                                         "mixup_prob=1", "spec_masks=2", "freq_shift=3",
                                         "--pool", "time_max_mean", "--dropout", "0.1",
                                         "--deltas", "2", "--widths", "8", "8", "16", "16"])
    fold = results["folds"]["2"]
    history = json.loads((out / "fold2" / "metrics.json").read_text())
    assert fold["accuracy_single_view"] == history[-1]["test_acc"]  # per epoch: one view
    _, meta = load_checkpoint(out / "fold2" / "model.npz")
    frames = 251  # cpu128's clips: 5 s at a 20 ms hop, centred
    assert len(meta["normalization"]["mean"]) == len(meta["normalization"]["std"]) == 128
    assert meta["model"]["pool"] == "time_max_mean"  # evaluate rebuilds the network below
    assert meta["model"]["deltas"] == 2 and meta["model"]["widths"] == [8, 8, 16, 16]
    assert meta["model"] == results["config"]["model"]
    assert meta["model"]["dropout"] == results["config"]["model"]["dropout"] == 0.1
    assert results["config"]["train"]["spec_masks"] == 2
    assert results["config"]["train"]["freq_shift"] == 3
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert meta["test_time_shifts"] == [-50, 0, 50] == [round(f * 0.2 * frames)
                                                        for f in (-1, 0, 1)]
    capsys.readouterr()
    scored = evaluate.main(["--checkpoint", str(out / "fold2" / "model.npz"), "--limit", "12",
                            "--predictions", str(tmp_path / "evaluated.json")] + common)
    assert scored["fold"] == 2 and scored["clips"] == 12 and scored["shifts"] == [-50, 0, 50]
    assert scored["accuracy"] == fold["accuracy"]
    assert scored["accuracy_single_view"] == fold["accuracy_single_view"]
    assert json.loads(capsys.readouterr().out)["accuracy"] == fold["accuracy"]
    # Clip by clip, not only the accuracy (which after one epoch on 48 clips may well be 0).
    trained = json.loads((out / "fold2" / "predictions.json").read_text())
    evaluated = json.loads((tmp_path / "evaluated.json").read_text())
    assert len(trained) == 12
    assert [(r["file"], r["target"], r["predicted"]) for r in evaluated] == \
        [(r["file"], r["target"], r["predicted"]) for r in trained]
    np.testing.assert_allclose([r["probability"] for r in evaluated],
                               [r["probability"] for r in trained], rtol=1e-6)
    assert all(r["file"].startswith("2-") for r in trained)  # fold 2's clips
    plain = evaluate.main(["--checkpoint", str(out / "fold2" / "model.npz"), "--limit", "12",
                           "--tta-views", "1", "--fold", "3"] + common)
    assert plain["shifts"] == [0] and plain["accuracy"] == plain["accuracy_single_view"]
    assert "trained on fold 3; this is not a held-out score" in capsys.readouterr().err


@pytest.mark.parametrize("item, message", [("tta_views=2.5", "tta_views: expected a whole "
                                            "number >= 1, got 2.5"),
                                           ("spec_masks=-1", "spec_masks: expected a whole "
                                            "number >= 0, got -1"),
                                           ("freq_shift=1.5", "freq_shift: expected a whole "
                                            "number >= 0, got 1.5")])
def test_counted_recipe_entries_must_be_whole_numbers(item, message, tmp_path, refused):
    assert refused(train_esc50.main, ["--recipe", item, "--out", str(tmp_path / "run")],
                   message)[0] == 2


@pytest.mark.parametrize("p", ["1", "-0.1", "nan"])
def test_dropout_must_be_a_probability_below_one(p, tmp_path, refused):
    assert refused(train_esc50.main, ["--dropout", p, "--out", str(tmp_path / "run")],
                   f"--dropout: expected a probability in \\[0, 1\\), got {p}")[0] == 2


def test_resume_accepts_a_checkpoint_from_before_a_setting_existed(esc50_root, tmp_path,
                                                                  refused):
    """A checkpoint written before spec_masks, freq_shift and --pool existed trained with one
    band per axis, no pitch shift and the average pool: resuming it with those goes on, with
    others (the preset's freq_shift=4 among them) is refused as a change."""
    def run(*extra):
        return train_esc50.main(["--data", esc50_root, "--folds", "4", "--batch-size", "16",
                                 "--limit", "12", "--epochs", "2", "--no-progress",
                                 "--cache-dir", str(tmp_path / "cache"),
                                 "--out", str(tmp_path / "run"), *extra])

    run("--stop-after", "1", "--recipe", "freq_shift=0")
    path = tmp_path / "run" / "fold4" / "checkpoint.npz"
    state, meta = load_checkpoint(path)
    del meta["config"]["train"]["spec_masks"]
    del meta["config"]["train"]["freq_shift"]
    save_checkpoint(path, state, meta)
    (tmp_path / "run" / "run.json").unlink()  # as a run recorded before run.json existed

    def refused_with(*extra, message):
        refused(lambda argv: run(*argv), ["--resume", *extra], message)
    refused_with(message=r"\(train\.freq_shift: 0 -> 4\)")  # cpu128 shifts by up to 4 now
    refused_with("--recipe", "spec_masks=2", "freq_shift=0",
                 message=r"\(train\.spec_masks: 1 -> 2\)")
    refused_with("--pool", "time_max_mean", "--recipe", "freq_shift=0",
                 message=r"\(model\.pool: avg -> time_max_mean\)")
    resumed = run("--resume", "--pool", "avg", "--recipe", "freq_shift=0")  # the old ones, named
    assert resumed["folds"]["4"]["epochs"] == 2


def test_holdout_folds_are_neither_trained_on_nor_tested(esc50_root, tmp_path):
    out = tmp_path / "run"
    results = train_esc50.main(["--data", esc50_root, "--folds", "2", "--holdout", "1",
                                "--epochs", "1", "--batch-size", "16", "--limit", "12",
                                "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                                "--no-progress"])
    assert set(results["folds"]) == {"2"} and results["config"]["holdout"] == [1]
    _, meta = load_checkpoint(out / "fold2" / "model.npz")
    assert meta["fold"] == 2 and meta["trained_on"] == [3, 4, 5]


@pytest.mark.parametrize("argv,message", [
    (["--folds", "1", "--holdout", "1"], "both tested"),
    (["--folds", "1", "--holdout", "6"], "among 1..5"),
])
def test_holdout_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        train_esc50.parse_args(argv)
    assert message in capsys.readouterr().err


def test_a_small_network_learns_five_classes_well_above_chance(five_class_training):
    """The training loop must learn: a small network on five distinct classes (chance 20%),
    trained on their clips of folds 2-5 and scored on fold 1's 40, reaches at least 50%.
    (It reached 70%; a wrong gradient, update or schedule stays near chance.)"""
    result, history = five_class_training(
        dict(widths=[8, 16], depths=[1, 1], stem_kernel=7, stem_stride=2, stem_pool=True,
             dropout=0.0), epochs=20, batch_size=16, freq_mask=8, time_mask=20)
    assert result["accuracy"] >= 0.5, result
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]


def test_scoring_every_kth_epoch_trains_the_same_model(esc50_root, tmp_path, monkeypatch,
                                                       capsys):
    """--score-every only leaves out scores: the same losses, model and fold result, and each
    of the last epochs still scored (two of them here, rather than ten, to keep it short)."""
    monkeypatch.setattr(esc50, "LAST_EPOCHS", 2)
    common = ["--data", esc50_root, "--folds", "5", "--batch-size", "16", "--limit", "12",
              "--epochs", "6", "--widths", "8", "16", "32", "64", "--no-progress",
              "--cache-dir", str(tmp_path / "cache"), "--seed", "2"]
    every = train_esc50.main(common + ["--out", str(tmp_path / "every")])
    some = train_esc50.main(common + ["--out", str(tmp_path / "some"), "--score-every", "2"])
    assert every["folds"]["5"]["accuracy"] == some["folds"]["5"]["accuracy"]
    a, b = (json.loads((tmp_path / run / "fold5" / "metrics.json").read_text())
            for run in ("every", "some"))
    assert [h["train_loss"] for h in a] == [h["train_loss"] for h in b]
    assert [h["epoch"] for h in b if "test_acc" in h] == [2, 4, 5, 6]
    assert all(h["test_acc"] == a[h["epoch"] - 1]["test_acc"] for h in b if "test_acc" in h)
    # the scoring's own time is recorded, as a part of its epoch's
    assert all(0 < h["score_seconds"] < h["seconds"] for h in b if "test_acc" in h)
    assert not any("score_seconds" in h for h in b if "test_acc" not in h)
    assert (tmp_path / "some" / "fold5" / "curves.png").is_file()
    wa, _ = load_checkpoint(tmp_path / "every" / "fold5" / "model.npz")
    wb, _ = load_checkpoint(tmp_path / "some" / "fold5" / "model.npz")
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    with pytest.raises(SystemExit):
        train_esc50.parse_args(["--score-every", "0"])
    assert "argument --score-every: expected a whole number >= 1, got '0'" in \
        capsys.readouterr().err


def test_between_class_mixing_replaces_mixup_on_every_batch(esc50_root, tmp_path,
                                                            monkeypatch, refused):
    from experiments import augment
    calls = {"between_class": [], "mixup": 0}
    real = augment.between_class

    def counted(x, labels, num_classes, rng, power_scale, gains):
        calls["between_class"].append(np.asarray(gains).copy())
        return real(x, labels, num_classes, rng, power_scale, gains)

    def no_mixup(*args, **kwargs):
        calls["mixup"] += 1
        raise AssertionError("Mixup ran beside between-class mixing")

    monkeypatch.setattr(augment, "between_class", counted)
    monkeypatch.setattr(augment, "mixup", no_mixup)
    common = ["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"), "--no-progress",
              "--folds", "1", "--epochs", "1", "--batch-size", "8", "--limit", "8"]
    results = train_esc50.main(common + ["--out", str(tmp_path / "run"), "--recipe",
                                         "bc_mix=1", "mixup_prob=1"])
    assert results["config"]["train"]["bc_mix"] == 1
    assert len(calls["between_class"]) == 32 // 8 and calls["mixup"] == 0  # 4 batches, all
    gains = np.concatenate(calls["between_class"])
    assert np.all(np.isfinite(gains)) and np.ptp(gains) > 3.0  # clips differ in loudness
    history = json.loads((tmp_path / "run" / "fold1" / "metrics.json").read_text())
    assert np.isfinite(history[0]["train_loss"])
    refused(train_esc50.main, common + ["--out", str(tmp_path / "run2"), "--recipe",
                                        "bc_mix=1", "mixup_power=0"],
            "bc_mix=1 mixes clips as sounds, by their powers: it needs mixup_power=1")
    refused(train_esc50.main, common + ["--out", str(tmp_path / "run3"), "--recipe",
                                        "bc_mix=2"], "bc_mix: expected 0 or 1, got 2")


@pytest.mark.parametrize("widths", [["48", "96"], ["48", "96", "0", "384"]])
def test_widths_must_be_one_positive_count_per_stage(widths, tmp_path, refused):
    refused(train_esc50.main, ["--widths", *widths, "--out", str(tmp_path / "run")],
            r"--widths: expected 4 positive channel counts \(one per stage of cpu128bc\), got "
            r"\[|argument --widths: expected a whole number >= 1, got '0'")


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_the_cpu128bc_preset_trains_on_either_device(esc50_root, tmp_path, device, request):
    """The adopted recipe end to end (between-class mixing on every batch), on NumPy and on
    the strict CuPy stand-in."""
    if device == "gpu":
        request.getfixturevalue("standin")
    results = train_esc50.main(["--data", esc50_root, "--cache-dir", str(tmp_path / "cache"),
                                "--no-progress", "--folds", "1", "--epochs", "2",
                                "--batch-size", "8", "--limit", "8", "--device", device,
                                "--preset", "cpu128bc", "--out", str(tmp_path / "run")])
    assert results["config"]["preset"] == "cpu128bc"
    assert results["config"]["train"]["bc_mix"] == 1
    history = json.loads((tmp_path / "run" / "fold1" / "metrics.json").read_text())
    assert len(history) == 2 and all(np.isfinite(h["train_loss"]) for h in history)
    assert results["folds"]["1"]["accuracy"] == history[-1]["test_acc"]
    expected = "cupy stand-in" if device == "gpu" else describe_device("cpu")
    assert results["folds"]["1"]["machines"] == [expected]


def test_resuming_a_finished_run_reports_its_folds_again(esc50_root, tmp_path, capsys):
    """--resume on a run whose folds are finished trains nothing and prints their mean, not
    null; a fold not yet run is trained beside them."""
    common = ["--data", esc50_root, "--epochs", "1", "--batch-size", "8", "--limit", "4",
              "--preset", "cpu", "--widths", "4", "4", "4", "4", "--no-progress",
              "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    first = train_esc50.main(common + ["--folds", "2"])
    again = train_esc50.main(common + ["--folds", "2", "--resume"])
    assert again["mean_accuracy"] == first["mean_accuracy"] is not None
    assert "fold 2: finished earlier" in capsys.readouterr().err
    both = train_esc50.main(common + ["--folds", "2", "3", "--resume"])
    assert set(both["folds"]) == {"2", "3"} and both["folds"]["2"] == first["folds"]["2"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["mean_accuracy"] == both["mean_accuracy"]
