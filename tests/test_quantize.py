"""INT8 post-training quantisation: the weight and activation rounding, the exactness of the
integer sums, the calibration rules, a quantised network against its float original, and the
command end to end on the packaged model."""
import json

import numpy as np
import pytest

import scratchnet as sn
from scratchnet import quantize
from scratchnet.kernels.im2col import conv2d_reference


def test_weights_get_one_symmetric_scale_per_output_channel(rng):
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * np.array(
        [1e-3, 1e-2, 0.1, 1, 10, 100], np.float32)[:, None, None, None]
    q, scale = quantize.quantize_weight(w)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    np.testing.assert_array_equal(np.abs(q).reshape(6, -1).max(axis=1), 127)  # every row's own
    error = np.abs(q * scale[:, None, None, None] - w)
    assert np.all(error <= scale[:, None, None, None] / 2 * (1 + 1e-6))  # round to nearest


def test_activations_unsigned_after_relu_signed_otherwise():
    x = np.array([-3.0, -0.26, 0.0, 0.24, 0.26, 1.0, 80.0], np.float32)
    np.testing.assert_array_equal(quantize.quantize_activation(x, 0.5, unsigned=False),
                                  [-6, -1, 0, 0, 1, 2, 127])
    q = quantize.quantize_activation(np.maximum(x, 0), 0.5, unsigned=True)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [0, 0, 0, 0, 1, 2, 160])


def test_the_float_gemm_of_integers_is_exact(rng):
    """The integer sums equal int64 arithmetic, in the dtype exact_dtype picks, also where
    float32 would not be exact."""
    for c_in, unsigned in ((4, True), (64, True), (64, False)):
        x = rng.integers(0, 256 if unsigned else 128, (2, c_in, 6, 7))
        w = rng.integers(-127, 128, (5, c_in, 3, 3))
        dtype = quantize.exact_dtype(c_in * 9, unsigned)
        assert dtype == (np.float32 if c_in * 9 * 127 * (255 if unsigned else 127) < 2 ** 24
                         else np.float64)
        got = conv2d_reference(x.astype(dtype), w.astype(dtype), None, 1, 1)
        # the same sums in int64, a tap at a time
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        want = sum(np.einsum("nchw,oc->nohw", xp[:, :, a:a + 6, b:b + 7], w[:, :, a, b])
                   for a in range(3) for b in range(3))
        np.testing.assert_array_equal(got, want)
    assert quantize.exact_dtype(7 * 7, False) == np.float32       # the stem: float32 is exact
    assert quantize.exact_dtype(3 * 3 * 256, True) == np.float64  # a wide layer: it is not


def test_calibration_rules_clip_as_they_say(rng):
    values = np.concatenate([rng.exponential(1.0, 100000), [60.0]]).astype(np.float32)
    peak = float(values.max())
    by = {m: quantize.choose_scale(peak, values, m, unsigned=True) for m in quantize.METHODS}
    assert by["max"] == pytest.approx(60.0 / 255)
    assert by["percentile"] * 255 == pytest.approx(np.percentile(values, 99.99), rel=1e-6)
    assert by["mse"] < by["max"]  # one outlier is not worth the coarse steps

    def error(scale):
        return np.mean((values - scale * np.clip(np.rint(values / scale), 0, 255)) ** 2)
    assert error(by["mse"]) <= min(error(by["max"]), error(by["percentile"]))


def small_folded(seed=0):
    model = sn.ResNet(1, 5, widths=(8, 16), depths=(1, 1), stem_kernel=3, stem_stride=1,
                      seed=seed)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(3):  # running statistics away from their initial values
        model.forward(rng.standard_normal((8, 1, 16, 20)).astype(np.float32))
    return sn.fold_batchnorm(model)


def test_a_quantised_network_tracks_its_float_original(rng, tmp_path):
    folded = small_folded()
    calibration = [rng.standard_normal((16, 1, 16, 20)).astype(np.float32) for _ in range(2)]
    x = rng.standard_normal((32, 1, 16, 20)).astype(np.float32)
    reference = folded.forward(x)
    model, spec = quantize.quantize_model(folded, calibration, "mse")
    assert set(spec["layers"]) == {name for name, *_ in quantize.weighted_layers(folded)}
    assert not spec["layers"]["stem.conv"]["unsigned"]        # the input is signed
    assert spec["layers"]["layer1.0.conv1"]["unsigned"] and spec["layers"]["fc"]["unsigned"]
    # the tensors between blocks are held quantised, and each block reads them at their scale
    assert list(spec["points"]) == ["stem.quant", "layer1.0q", "layer2.0q"]
    assert float(model.layer1[0].conv1.input_scale) == float(model.stem.quant.scale)
    assert float(model.layer2[0].downsample[0].input_scale) == \
        float(getattr(model.layer1, "0q").scale)
    assert spec["layers"]["layer1.0.conv2"]["requantize"]
    assert spec["layers"]["layer2.0.downsample.0"]["requantize"]
    assert not spec["layers"]["layer1.0.conv1"]["requantize"]
    logits = model.forward(x)
    # int8 noise, not a wrong answer: a signal-to-noise ratio above 26 dB (a wrong scale, a
    # lost bias or a misread zero point costs all of it)
    noise = np.sqrt(np.mean((logits - reference) ** 2) / np.mean(reference ** 2))
    assert noise < 0.05, noise
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.9
    # saved and loaded into a fresh structure: the same numbers
    sn.save_checkpoint(tmp_path / "q.npz", model.state_dict(), {"quantization": spec})
    state, meta = sn.load_checkpoint(tmp_path / "q.npz")
    assert state["layer1.0.conv1.weight_q"].dtype == np.int8
    loaded = quantize.quantized_structure(small_folded(seed=1), meta["quantization"])
    loaded.load_state_dict(state)
    np.testing.assert_array_equal(loaded.forward(x), logits)


def test_keep_float_leaves_the_named_layers_alone(rng):
    folded = small_folded()
    calibration = [rng.standard_normal((8, 1, 16, 20)).astype(np.float32)]
    model, spec = quantize.quantize_model(folded, calibration, "max", ["stem.conv", "fc"])
    assert "stem.conv" not in spec["layers"] and spec["float_layers"] == ["fc", "stem.conv"]
    assert isinstance(model.stem.conv, sn.Conv2d) and isinstance(model.fc, sn.Linear)
    assert isinstance(model.layer1[0].conv1, quantize.QuantizedConv2d)


def test_quantize_command_calibrates_on_training_folds_and_classify_runs_it(
        esc50_root, tmp_path, capsys, monkeypatch):
    from experiments import classify, evaluate
    from experiments import quantize as command
    from experiments.inference import DEFAULT_CHECKPOINT
    drawn = []
    real = command.esc50.load_features

    def recorded(root, features, cache_dir, xp, rows, progress):
        drawn.extend(rows)
        return real(root, features, cache_dir, xp, rows, progress)

    monkeypatch.setattr(command.esc50, "load_features", recorded)
    out = tmp_path / "int8.npz"
    summary = command.main([DEFAULT_CHECKPOINT, str(out), "--calibration-clips", "24",
                            "--check-clips", "24", "--no-progress",
                            "--cache-dir", str(tmp_path / "cache")])
    assert len(drawn) == 48 and {r["fold"] for r in drawn} <= {2, 3, 4, 5}  # never fold 1
    assert summary["agreement"] >= 0.9 and summary["layers_int8"] == 21
    state, meta = sn.load_checkpoint(out)
    assert meta["stored_dtype"] == "int8" and meta["fold"] == 1
    assert "accuracy" not in meta and meta["float_accuracy"] == 0.8275  # not the int8's own
    assert meta["trained_on"] == [2, 3, 4, 5] and len(meta["classes"]) == 50
    assert meta["quantization"]["calibrated_on"] == [2, 3, 4, 5]
    assert meta["quantization"]["method"] in quantize.METHODS
    assert sum(v.nbytes for v in state.values()) < 3.2e6  # the int8 weights of 2.8 M
    capsys.readouterr()
    assert classify.main([f"{esc50_root}/audio/1-100032-A-0.flac", "--checkpoint", str(out),
                          "--json", "--top-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["label"] == "dog"
    scored = evaluate.main(["--checkpoint", str(out), "--limit", "20", "--no-progress",
                            "--cache-dir", str(tmp_path / "cache")])
    assert scored["fold"] == 1 and scored["clips"] == 20 and scored["accuracy"] > 0.5


def test_a_quantised_model_is_not_quantised_again(tmp_path, refused, esc50_root):
    from experiments import quantize as command
    from experiments.inference import DEFAULT_CHECKPOINT
    out = tmp_path / "int8.npz"
    command.main([DEFAULT_CHECKPOINT, str(out), "--calibration-clips", "8", "--check-clips",
                  "8", "--method", "max", "--no-progress", "--cache-dir", str(tmp_path / "c")])
    refused(command.main, [str(out), str(tmp_path / "again.npz")], "already quantised")
    refused(command.main, [DEFAULT_CHECKPOINT, str(out), "--calibration-clips", "0"],
            "--calibration-clips: expected a whole number >= 1")


def test_a_quantised_network_runs_on_the_device(standin, rng):
    """The int8 layers on CuPy arrays (the strict stand-in): the same numbers as on NumPy."""
    folded = small_folded()
    calibration = [rng.standard_normal((8, 1, 16, 20)).astype(np.float32)]
    model, _ = quantize.quantize_model(folded, calibration, "max")
    x = rng.standard_normal((4, 1, 16, 20)).astype(np.float32)
    on_host = model.forward(x)
    on_device = model.to("gpu").forward(standin.asarray(x))
    np.testing.assert_allclose(standin.asnumpy(on_device), on_host, rtol=1e-6, atol=1e-6)
