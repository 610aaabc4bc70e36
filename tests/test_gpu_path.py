"""The GPU path, on the strict CuPy stand-in (tests/cupy_standin.py) everywhere and on real CuPy
where a CUDA device answers (the fixture ``gpu``): what only the GPU creates (device arrays,
CuPy generators) must never reach a host-only operation, a deep copy or a file; and the same
step on the device gives the NumPy step's numbers."""
import copy
import json
import pickle

import numpy as np
import pytest

import dsp
import scratchnet as sn
from scratchnet.runtime.backend import get_array_module, to_numpy

from experiments import augment, esc50


def small_resnet(seed=0, dropout=0.3, deltas=0):
    return sn.ResNet(1, 6, widths=(4, 8), depths=(1, 1), stem_kernel=3, stem_stride=2,
                     dropout=dropout, seed=seed, input_grad=False, deltas=deltas)


def test_the_standin_refuses_host_conversion_and_mixing(standin):
    a = standin.asarray(np.arange(6.0).reshape(2, 3))
    assert not isinstance(a, np.ndarray) and get_array_module(a) is standin
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError):
        a + np.ones(3)
    with pytest.raises(TypeError):
        np.ones(3) * a
    with pytest.raises(TypeError):
        np.exp(a)
    with pytest.raises(TypeError):
        a[np.array([0, 1])]
    with pytest.raises(TypeError, match="pickle"):
        copy.deepcopy(standin.random.default_rng(0))
    with pytest.raises(TypeError):
        pickle.dumps(standin.random.default_rng(0))
    np.testing.assert_array_equal(standin.asnumpy(a * 2 + 1), np.arange(6.0).reshape(2, 3) * 2 + 1)


def test_upload_keeps_the_channels_last_weight_layout(gpu):
    conv = sn.Conv2d(3, 5, 3, padding=1)
    strides = conv.weight.data.strides
    conv.to("gpu")
    assert get_array_module(conv.weight.data) is gpu
    assert conv.weight.data.strides == strides
    assert conv.weight.grad.strides == strides
    conv.to("cpu")
    assert isinstance(conv.weight.data, np.ndarray) and conv.weight.data.strides == strides


@pytest.mark.parametrize("deltas", [0, 2])
def test_a_device_model_with_dropout_can_be_folded_and_averaged(gpu, deltas):
    """Scoring deep-copies the model (fold_batchnorm) after a training forward pass has made
    Dropout's generator (and TimeDeltas its device operator); the weight average deep-copies
    it too."""
    model = small_resnet(deltas=deltas).to("gpu")
    x = gpu.asarray(np.random.default_rng(0).standard_normal((2, 1, 16, 12)),
                        dtype=np.float32)
    model.train()
    model.forward(x)
    folded = sn.fold_batchnorm(model)
    ema = sn.ExponentialMovingAverage(model, 0.9)
    assert get_array_module(folded.forward(x)) is gpu
    assert get_array_module(ema.model.forward(x)) is gpu


@pytest.mark.parametrize("deltas", [0, 2])
def test_float32_training_step_on_the_device_matches_numpy(gpu, deltas):
    """Loss, every gradient, the AdamW update and BatchNorm's running statistics (with and
    without delta channels in front of the stem)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 16, 12)).astype(np.float32)
    labels = np.array([0, 3, 5, 1])

    def step(device):
        xp = gpu if device == "gpu" else np
        model = small_resnet(dropout=0.0, deltas=deltas).to(device)
        params = list(model.parameters())
        opt = sn.AdamW(params, lr=1e-2, weight_decay=0.01)
        loss_fn = sn.SoftmaxCrossEntropy(0.1)
        loss = loss_fn.forward(model.forward(xp.asarray(x)), xp.asarray(labels))
        model.backward(loss_fn.backward())
        norm = sn.clip_grad_norm(params, 0.5)
        grads = {k: to_numpy(p.grad) for k, p in model.named_parameters()}
        opt.step()
        state = {k: to_numpy(v) for k, v in model.state_dict().items()}
        return float(loss), float(norm), grads, state

    on_cpu, on_gpu = step("cpu"), step("gpu")
    assert on_gpu[0] == pytest.approx(on_cpu[0], rel=1e-5)
    assert on_gpu[1] == pytest.approx(on_cpu[1], rel=1e-4)
    assert on_cpu[1] > 0.5                                      # the clipping did act
    for key in on_cpu[2]:
        np.testing.assert_allclose(on_gpu[2][key], on_cpu[2][key], rtol=1e-3, atol=1e-6,
                                   err_msg=key)
    for key in on_cpu[3]:
        np.testing.assert_allclose(on_gpu[3][key], on_cpu[3][key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    assert any("running_var" in k for k in on_cpu[3])


def test_gradient_checks_run_on_the_device(gpu):
    from scratchnet.gradcheck import check_layer, relative_error
    a, b = gpu.asarray([1.0, 2.0]), gpu.asarray([1.0, 2.5])
    assert relative_error(a, b) == pytest.approx(0.5 / 4.5)
    layer = sn.BasicBlock(2, 3, 2, rng=np.random.default_rng(0)).astype(np.float64).to("gpu")
    x = gpu.asarray(np.random.default_rng(1).standard_normal((2, 2, 5, 5)))
    errors = check_layer(layer, x)
    assert max(errors.values()) < 1e-6, errors
    errors = check_layer(sn.TimeDeltas(2), gpu.asarray(np.random.default_rng(2)
                                                       .standard_normal((2, 2, 3, 6))))
    assert max(errors.values()) < 1e-6, errors


def test_logmel_on_the_device_matches_numpy(gpu):
    y = np.random.default_rng(0).standard_normal((3, 16000)).astype(np.float32)
    logmel = dsp.LogMel()
    a, b = logmel(y), logmel(gpu.asarray(y))
    assert get_array_module(b) is gpu
    np.testing.assert_allclose(gpu.asnumpy(b), a, atol=2e-3)


def test_standardise_keeps_device_features_on_the_device(gpu):
    feats = np.random.default_rng(0).standard_normal((2, 4, 5)).astype(np.float32)
    for norm in (dict(mean=0.5, std=2.0), dict(mean=[0.1, 0.2, 0.3, 0.4], std=[1, 2, 3, 4])):
        on_device = esc50.standardise(gpu.asarray(feats), norm)
        assert get_array_module(on_device) is gpu
        np.testing.assert_allclose(gpu.asnumpy(on_device), esc50.standardise(feats, norm),
                                   rtol=1e-6)


def test_augmentation_on_the_device_matches_numpy(gpu):
    x = np.random.default_rng(0).standard_normal((6, 1, 16, 40)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5])
    scale = np.float32(0.5)

    def augmented(xp):
        rng = np.random.default_rng(3)
        xb = augment.time_shift(xp.asarray(x), rng, 0.2)
        xb = augment.freq_shift(xb, rng, 3)
        xb = augment.spec_augment(xb, rng, 5, 9, masks=2)
        xb, targets = augment.mixup(xb, labels, 8, rng, 0.2, scale)
        xb, mixed_targets = augment.between_class(xb, labels, 8, rng, scale,
                                                  np.linspace(-40, -10, 6))
        return to_numpy(xb), to_numpy(targets), to_numpy(mixed_targets)

    (a, ta, ma), (b, tb, mb) = augmented(np), augmented(gpu)
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(tb, ta)
    np.testing.assert_array_equal(mb, ma)


def test_checkpoint_saved_on_the_device_loads_on_the_cpu_and_back(gpu, tmp_path):
    model = small_resnet().to("gpu")
    state = model.state_dict()
    path = tmp_path / "model.npz"
    sn.save_checkpoint(path, state, {"note": "device"})
    loaded, meta = sn.load_checkpoint(path)
    assert meta == {"note": "device"}
    cpu_model = small_resnet(seed=9).load_state_dict(loaded)
    for key, value in cpu_model.state_dict().items():
        assert isinstance(value, np.ndarray)
        np.testing.assert_array_equal(value, to_numpy(state[key]), err_msg=key)
    back = small_resnet(seed=7).to("gpu").load_state_dict(cpu_model.state_dict())
    for key, value in back.state_dict().items():
        assert get_array_module(value) is gpu
        np.testing.assert_array_equal(to_numpy(value), to_numpy(state[key]), err_msg=key)


def test_the_public_commands_run_with_device_gpu(gpu, esc50_root, tmp_path, capsys):
    """train_esc50 --device gpu stopped after one epoch, resumed to the end (scoring, model.npz),
    then classify, evaluate and visualize --device gpu on that model."""
    from experiments import classify, evaluate, train_esc50, visualize
    out, cache = tmp_path / "run", str(tmp_path / "cache")
    common = ["--data", esc50_root, "--device", "gpu", "--limit", "4", "--batch-size", "4",
              "--epochs", "2", "--folds", "1", "--preset", "cpu", "--out", str(out),
              "--cache-dir", cache, "--no-progress"]
    partial = train_esc50.main(common + ["--stop-after", "1"])
    assert partial["folds"] == {}
    done = train_esc50.main(common + ["--resume"])
    fold = done["folds"]["1"]
    assert fold["epochs"] == 2 and done["config"]["device"] == "gpu"
    history = json.loads((out / "fold1" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    model = str(out / "fold1" / "model.npz")
    capsys.readouterr()
    scored = evaluate.main(["--checkpoint", model, "--data", esc50_root, "--device", "gpu",
                            "--limit", "4", "--cache-dir", cache, "--no-progress"])
    assert scored["accuracy"] == fold["accuracy"] and scored["clips"] == 4
    clip = esc50.audio_path(esc50_root, esc50.read_metadata(esc50_root)[0]["filename"])
    capsys.readouterr()
    assert classify.main([clip, "--checkpoint", model, "--device", "gpu", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 5
    assert visualize.main([clip, "--checkpoint", model, "--device", "gpu",
                           "--out", str(tmp_path / "viz")]) == 0
    assert list((tmp_path / "viz").glob("*.png"))


def test_the_prepared_gpu_check_runs_its_commands_and_writes_its_table(standin, tmp_path):
    """benchmarks.gpu_check without its pytest part (run as its own files here) and its NCCL
    part (tests/test_distributed.py runs that script on the stand-in): the generated data set, train/resume/evaluate/classify --device gpu, one throughput row."""
    from benchmarks import gpu_check
    report = gpu_check.main(["--out", str(tmp_path), "--skip-tests", "--skip-nccl",
                             "--preset", "cpu",
                             "--networks", "preset:cpu", "--batch", "2", "--steps", "1",
                             "--rounds", "1", "--no-torch"])
    assert report["device"] == "cupy stand-in"
    assert report["commands"]["ok"], report["commands"]
    assert [s["command"] for s in report["commands"]["steps"]] == [
        "train_esc50 --stop-after 1", "train_esc50 --resume", "evaluate",
        "classify --device gpu"]
    (row,) = report["throughput"]["rows"]
    assert row["network"] == "preset:cpu" and row["scratchnet_train_clips_s"] > 0
    assert "pytorch_train_clips_s" not in row
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| preset:cpu | 1x64x251 | 2 |" in table and "cupy stand-in" in table
    assert json.loads((tmp_path / "gpu_check.json").read_text())["commands"]["ok"]


def test_a_training_epoch_reads_the_device_twice_and_no_step_reads_it(standin, tmp_path,
                                                                       monkeypatch):
    """Each read of a device value makes the host wait for the GPU.  A training epoch reads
    two (the summed loss and the correct count, once each); its steps read none.  Scoring is
    left out here (it reads each batch's probabilities)."""
    from experiments import fold_run
    from experiments.models import PRESETS
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((40, 16, 24)).astype(np.float32)
    labels, folds = np.arange(40) % 5, np.repeat(np.arange(1, 6), 8)
    cfg = dict(features=dict(PRESETS["cpu"]["features"]),
               model=dict(widths=[4, 8], depths=[1, 1], stem_kernel=3, stem_stride=2,
                          stem_pool=True, dropout=0.2),
               train=dict(PRESETS["cpu"]["train"], epochs=2, batch_size=8, mixup_prob=0.5,
                          freq_mask=4, time_mask=6, freq_shift=2, ema_decay=0.9))
    data = fold_run.fold_data(1, feats, labels, folds, cfg, [], [], "gpu", standin)
    run = fold_run.set_up(1, data, cfg, str(tmp_path), 0, "gpu", [])
    for epoch in range(2):
        before = standin.reads
        fold_run.train_epoch(run, epoch, standin, progress=False, score=False)
        assert standin.reads - before == 2, standin.reads - before
    assert run.steps_per_epoch == 4 and len(run.history) == 2


def test_the_gpu_check_does_not_call_skipped_gpu_tests_passed(monkeypatch):
    """Without a GPU every test on real CuPy skips and pytest passes: the check must say its
    GPU tests did not run, not that they passed."""
    from benchmarks import gpu_check
    from scratchnet.runtime import backend
    monkeypatch.setattr(backend, "_cupy", None)
    record = gpu_check.run_tests(timeout=60)
    assert not record["ok"] and "would only skip" in record["summary"]
