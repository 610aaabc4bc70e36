"""What a newcomer reaches for first: the library used as PyTorch is, long files read in
bounded memory, and a run folder that protects its finished work."""
import json

import numpy as np
import pytest

import scratchnet as sn
from dsp import load_audio
from dsp.io import audio_blocks

from experiments.inference import Classifier, sliding_windows


def tiny_model():
    return sn.Sequential(sn.Conv2d(1, 4, 3, padding=1), sn.BatchNorm2d(4), sn.ReLU(),
                         sn.GlobalAvgPool2d(), sn.Linear(4, 3))


def test_losses_are_called_like_layers_and_optimisers_take_a_model(rng):
    model = tiny_model()
    loss_fn = sn.SoftmaxCrossEntropy()
    optimizer = sn.AdamW(model, lr=1e-2)
    assert len(optimizer.params) == len(list(model.parameters())) == 6
    x = rng.standard_normal((6, 1, 5, 7)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    first = float(loss_fn(model(x), y))
    assert first == float(sn.SoftmaxCrossEntropy().forward(model.forward(x), y))
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        optimizer.step()
    assert float(loss) < first
    sn.SGD(model.parameters(), lr=0.1)  # or its parameters
    with pytest.raises(TypeError, match="parameter 0 is a ndarray, not a Parameter"):
        sn.AdamW([p.data for p in model.parameters()])


@pytest.mark.parametrize("layer, shape", [
    (sn.Conv2d(1, 2, 3), (2, 1, 5, 5)), (sn.BatchNorm2d(2), (3, 2, 4, 4)), (sn.ReLU(), (2, 3)),
    (sn.MaxPool2d(2), (1, 1, 4, 4)), (sn.GlobalAvgPool2d(), (2, 3, 4, 4)),
    (sn.Linear(3, 2), (4, 3)), (sn.Flatten(), (2, 3, 4)), (sn.TimeMaxMeanPool(), (2, 3, 4, 5)),
    (sn.TimeDeltas(1), (2, 1, 4, 9))])
def test_backward_without_a_forward_is_a_named_error(layer, shape, rng):
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=f"{name}.backward: no forward pass"):
        layer.backward(np.ones((2, 2), np.float32))
    y = layer.forward(rng.standard_normal(shape).astype(np.float32))
    layer.backward(np.ones_like(y))
    with pytest.raises(RuntimeError, match=f"{name}.backward: no forward pass"):
        layer.backward(np.ones_like(y))  # the forward's saved values were handed over once


def test_the_loss_backward_needs_its_forward():
    with pytest.raises(RuntimeError, match="SoftmaxCrossEntropy.backward: no forward pass"):
        sn.SoftmaxCrossEntropy().backward()


@pytest.fixture(scope="module")
def classifier():
    return Classifier()


def test_predict_windows_a_1d_clip_and_pads_a_short_one(classifier, rng):
    sr = classifier.sr
    long = (0.1 * rng.standard_normal(12 * sr)).astype(np.float32)
    windows, _ = classifier.windows(long, 1.0)
    np.testing.assert_allclose(classifier.predict(long), classifier.predict(windows).mean(axis=0),
                               rtol=1e-6)
    short = long[:2 * sr]
    padded = np.pad(short, (0, classifier.window - len(short)))
    np.testing.assert_array_equal(classifier.predict(short[None]),
                                  classifier.predict(padded[None]))
    np.testing.assert_array_equal(classifier.predict(short), classifier.predict(padded[None])[0])
    with pytest.raises(ValueError, match="longer than the model's 80000"):
        classifier.predict(long[None])


@pytest.mark.parametrize("total", [1, 79999, 80000, 80001, 96000, 123457])
@pytest.mark.parametrize("block", [1000, 80000, 300000])
def test_sliding_windows_over_blocks_are_the_windows_of_the_whole(total, block):
    y = np.arange(total, dtype=np.float32)
    blocks = [y[s:s + block] for s in range(0, total, block)]
    streamed = list(sliding_windows(blocks, 80000, 16000))
    whole = list(sliding_windows([y], 80000, 16000))
    assert [s for s, _ in streamed] == [s for s, _ in whole]
    for (_, a), (_, b) in zip(streamed, whole):
        np.testing.assert_array_equal(a, b)
    starts = [s for s, _ in whole]
    if total > 80000:  # every hop, and one window ending at the last sample
        assert starts[-1] == total - 80000 and all(b - a <= 16000 for a, b in
                                                   zip(starts, starts[1:]))
    else:
        assert starts == [0] and len(whole[0][1]) == 80000


@pytest.mark.parametrize("rate, channels", [(44100, 2), (22050, 1), (16000, 1), (8000, 2)])
def test_blocks_of_a_file_are_the_samples_load_audio_gives(tmp_path, rng, rate, channels):
    import soundfile as sf
    path = tmp_path / "noise.wav"
    sf.write(path, (0.2 * rng.standard_normal((rate * 7 + 321, channels))).astype(np.float32),
             rate, subtype="FLOAT")
    whole, _ = load_audio(path, sr=16000)
    for seconds in (0.7, 2.0, 60.0):
        blocks = list(audio_blocks(path, sr=16000, block_seconds=seconds))
        assert max(len(b) for b in blocks) <= 16000 * seconds + 16000  # bounded by the block
        np.testing.assert_allclose(np.concatenate(blocks), whole, rtol=0, atol=1e-6)


def test_classify_reads_a_long_file_as_windows_of_its_whole(tmp_path, rng, classifier):
    import soundfile as sf
    sr = 44100
    y = (0.1 * rng.standard_normal(sr * 13)).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, y, sr, subtype="FLOAT")
    streamed = list(classifier.file_windows(path, 1.0, block_seconds=2.0))
    loaded, _ = load_audio(path, sr=classifier.sr)
    windows, starts = classifier.windows(loaded, 1.0)
    assert [s for s, _ in streamed] == starts
    np.testing.assert_allclose(np.stack([w for _, w in streamed]), windows, atol=1e-6)


def test_an_out_with_a_run_is_kept_unless_resumed_or_overwritten(tmp_path):
    from experiments import cli, run_folder
    out = str(tmp_path / "run")
    settings = dict(preset="cpu", seed=0, features={}, model={}, train={"epochs": 2},
                    data=dict(limit=None, holdout=[], teachers=[]))
    run_folder.claim(out, settings, resume=False, overwrite=False)  # a new folder
    (tmp_path / "run" / "fold1").mkdir()
    (tmp_path / "run" / "fold1" / "metrics.json").write_text("[]")
    with pytest.raises(cli.CommandError, match="already holds a run .*fold1"):
        run_folder.claim(out, settings, resume=False, overwrite=False)
    with pytest.raises(cli.CommandError, match=r"train.epochs: 2 -> 3"):
        run_folder.claim(out, dict(settings, train={"epochs": 3}), resume=True,
                         overwrite=False)
    run_folder.claim(out, settings, resume=True, overwrite=False)
    assert (tmp_path / "run" / "fold1").is_dir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    run_folder.claim(out, dict(settings, seed=1), resume=False, overwrite=True)
    assert not (tmp_path / "run" / "fold1").exists()  # the run's files go, and only those
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seed"] == 1
