"""Deployment: the ONNX graph from raw audio to classes (float and QDQ int8) against this
package's engine, and the live monitor's events (hysteresis, sources, engines)."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dsp import load_audio
from experiments.deploy.events import EventDetector, dbfs
from experiments.inference import DEFAULT_CHECKPOINT, Classifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOG, CHAINSAW = "1-100032-A-0.flac", "1-116765-A-41.flac"  # fold 1, 0.75 and 0.82 alone



def required(name):
    """A module of the test extra: skipped without it, except in CI ($CI), where it must be."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is not installed (the test extra has it)")


onnx, ort = required("onnx"), required("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, esc50_root):
    """The packaged model as a float graph, and its int8 version as a QDQ graph."""
    from experiments import export, quantize
    folder = tmp_path_factory.mktemp("onnx")
    int8 = folder / "int8.npz"
    quantize.main([DEFAULT_CHECKPOINT, str(int8), "--calibration-clips", "32",
                   "--check-clips", "16", "--no-progress", "--cache-dir", str(folder / "c")])
    export.main([DEFAULT_CHECKPOINT, str(folder / "float.onnx")])
    export.main([str(int8), str(folder / "int8.onnx")])
    return folder


def clips(esc50_root, count=24):
    names = sorted(n for n in os.listdir(os.path.join(esc50_root, "audio"))
                   if n.startswith("1-"))[:count]
    return np.stack([load_audio(os.path.join(esc50_root, "audio", n), sr=16000)[0][:80000]
                     for n in names]).astype(np.float32)


def session(path, optimized=None):
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_the_float_graph_is_the_classifier(exported, esc50_root):
    model = onnx.load(exported / "float.onnx")
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    assert [i.name for i in graph.input] == ["audio"]
    assert [o.name for o in graph.output] == ["probabilities"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 80000
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    clf = Classifier(DEFAULT_CHECKPOINT)
    assert meta["classes"] == clf.classes and meta["sample_rate"] == 16000
    x = clips(esc50_root)
    got = session(exported / "float.onnx").run(None, {"audio": x})[0]
    assert got.shape == (len(x), 50)
    np.testing.assert_allclose(got, clf.predict(x), atol=1e-5)  # float32 rounding only
    np.testing.assert_allclose(got.sum(axis=1), 1, atol=1e-5)


def test_the_int8_graph_runs_integer_kernels_and_tracks_the_int8_engine(exported,
                                                                        esc50_root):
    x = clips(esc50_root)
    optimized = exported / "int8.optimized.onnx"
    got = session(exported / "int8.onnx", optimized).run(None, {"audio": x})[0]
    ops = [n.op_type for n in onnx.load(optimized).graph.node]
    # every convolution of the network (the front end's DFT is float) and every residual
    # addition run in integers
    assert ops.count("QLinearConv") == 20 and ops.count("QLinearAdd") == 8
    ours = Classifier(str(exported / "int8.npz")).predict(x)
    assert (got.argmax(1) == ours.argmax(1)).mean() >= 0.95
    assert np.abs(got - ours).max() < 0.05
    assert os.path.getsize(exported / "int8.onnx") < 0.35 * os.path.getsize(
        exported / "float.onnx")


def test_the_readme_deployment_example_needs_no_scratchnet(exported, esc50_root, tmp_path):
    """onnxruntime, numpy and soundfile only: docs/deployment.md's script, with scratchnet
    unimportable."""
    page = open(os.path.join(ROOT, "docs", "deployment.md"), encoding="utf-8").read()
    start = page.index("# deploy.py")
    code = page[start:page.index("```", start)]
    (tmp_path / "blocker").mkdir()
    for name in ("scratchnet", "dsp", "experiments"):
        (tmp_path / "blocker" / f"{name}.py").write_text(
            f"raise ImportError('{name} must not be needed')\n")
    (tmp_path / "deploy.py").write_text(code)
    wav = os.path.join(esc50_root, "audio", DOG)
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "blocker"))
    done = subprocess.run([sys.executable, "deploy.py", str(exported / "float.onnx"), wav],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "dog"


def test_hysteresis_makes_one_sound_one_event():
    classes = ["dog", "siren", "rain"]
    detector = EventDetector(classes, {"dog": 0.5, "siren": 0.6}, hysteresis=0.6)
    # dog: rises, wobbles around 0.5 but stays above 0.3, falls: one event
    dog = [0.1, 0.55, 0.45, 0.52, 0.35, 0.2, 0.1, 0.7, 0.1]
    events = []
    for t, p in enumerate(dog):
        events += detector.update(float(t), t + 5.0, np.array([p, 0.0, 0.9]), -20.0 - t)
    events += detector.finish()
    assert [(e["class"], e["start"], e["end"]) for e in events] == [("dog", 1.0, 9.0),
                                                                      ("dog", 7.0, 12.0)]
    assert events[0]["confidence"] == 0.55 and events[0]["dbfs"] == -21.0  # loudest window
    with pytest.raises(ValueError, match="not classes of this model: cat"):
        EventDetector(classes, {"cat": 0.5})


def test_dbfs_of_a_full_scale_sine():
    t = np.arange(16000) / 16000
    assert dbfs(np.sin(2 * np.pi * 100 * t)) == pytest.approx(-3.01, abs=0.01)
    assert dbfs(np.zeros(10)) == float("-inf")


@pytest.fixture(scope="module")
def street(tmp_path_factory, esc50_root):
    """32 s: silence, a dog (8-13 s), silence, a chainsaw (21-26 s), silence; as a 16 kHz WAV
    and as raw s16le."""
    import soundfile as sf
    folder = tmp_path_factory.mktemp("street")
    quiet = [np.zeros(16000 * s, np.float32) for s in (8, 8, 6)]
    y = np.concatenate([quiet[0], load_audio(os.path.join(esc50_root, "audio", DOG), 16000)[0],
                        quiet[1], load_audio(os.path.join(esc50_root, "audio", CHAINSAW),
                                             16000)[0], quiet[2]])
    sf.write(folder / "street.wav", y, 16000)
    sf.write(folder / "street44k.wav", np.stack([y, y], 1), 16000)  # (stereo)
    pcm = np.clip(np.rint(y * 32768), -32768, 32767).astype("<i2")
    (folder / "street.s16").write_bytes(pcm.tobytes())
    return folder


def run_monitor(argv, stdin=None):
    done = subprocess.run([sys.executable, "-m", "experiments.monitor", *argv], cwd=ROOT,
                          input=stdin, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return [json.loads(line) for line in done.stdout.decode().splitlines()], \
        done.stderr.decode()


def test_the_monitor_finds_the_dog_and_the_chainsaw(street):
    events, err = run_monitor([str(street / "street.wav")])
    assert [e["class"] for e in events] == ["dog", "chainsaw"]
    dog, saw = events
    assert 6 <= dog["start"] <= 10 and dog["end"] <= 18 and saw["start"] >= 16
    assert set(dog) == {"start", "end", "class", "confidence", "dbfs"}
    assert dog["confidence"] >= 0.5 and dog["dbfs"] < 0
    assert "real-time factor" in err
    # the same events from the raw PCM on stdin, and from a stereo file
    assert [e["class"] for e in run_monitor(["-", "--quiet"],
                                            (street / "street.s16").read_bytes())[0]] == \
        ["dog", "chainsaw"]
    assert run_monitor([str(street / "street44k.wav"), "--quiet"])[0] == events


def test_a_stream_at_another_rate_is_resampled_as_it_arrives(street):
    """s16le at 22.05 kHz on stdin (--rate 22050): the blocks are resampled to the model's
    16 kHz with their neighbours' context, and the same two sounds are found."""
    import soundfile as sf

    from dsp import resample
    y, sr = sf.read(street / "street.wav", dtype="float32")
    pcm = np.clip(np.rint(resample(y, sr, 22050) * 32768), -32768, 32767).astype("<i2")
    events, _ = run_monitor(["--rate", "22050", "--quiet"], pcm.tobytes())
    assert [e["class"] for e in events] == ["dog", "chainsaw"]


def test_the_monitor_on_onnxruntime_alone(street, exported):
    events, _ = run_monitor([str(street / "street.wav"), "--onnx",
                             str(exported / "float.onnx"), "--quiet"])
    ours, _ = run_monitor([str(street / "street.wav"), "--quiet"])
    assert [(e["class"], e["start"], e["end"]) for e in events] == \
        [(e["class"], e["start"], e["end"]) for e in ours]


def test_an_event_open_at_the_end_is_written(street, tmp_path):
    import soundfile as sf
    y, sr = sf.read(street / "street.wav", dtype="float32")
    sf.write(tmp_path / "cut.wav", y[:sr * 14], sr)  # the stream ends during the dog
    events, _ = run_monitor([str(tmp_path / "cut.wav"), "--watch", "dog", "--quiet"])
    assert [e["class"] for e in events] == ["dog"] and events[0]["end"] == 14.0


def test_the_monitor_checks_what_it_is_given(refused, street):
    from experiments import monitor
    refused(monitor.main, ["--watch", "unicorn", "--quiet", str(street / "street.wav")],
            "not classes of this model: unicorn")
    refused(monitor.main, ["--watch", "dog=1.5"], "a threshold is a probability")
    refused(monitor.main, ["--hysteresis", "2"], "--hysteresis: a fraction")
    refused(monitor.main, ["nowhere.wav"], "argument source: no such file")
    refused(monitor.main, ["--onnx", str(street / "street.wav")], "not an ONNX model")
