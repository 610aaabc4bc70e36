"""The mistakes a user makes, tried on every command: each must end with a non-zero exit status
and one ``error:`` line that names the problem, with no traceback, and change no file outside
the test's temporary folder.

Each case runs the command as the shell does (``experiments.cli.run``), from a temporary
working directory, with the feature cache there too.  ``{name}`` in an argument is a file or
folder made by :func:`materials`; ``{data}`` is ESC-50 (cases that need it skip without it).
Status 2 is a bad argument (argparse's usage line, then the error); 1 a failure in use.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchnet import save_checkpoint

from experiments import (classify, evaluate, export, gradient_flow, summary, train_esc50,
                         visualize)
from experiments.inference import DEFAULT_CHECKPOINT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = train_esc50.main
# A run small enough to make in a few seconds: fold 2 of 2 epochs, paused after the first.
TINY = ["--folds", "2", "--epochs", "2", "--batch-size", "4", "--limit", "2", "--preset", "cpu",
        "--widths", "4", "4", "4", "4", "--no-progress"]

CASES = [
    # train_esc50: numbers
    ("epochs 0", TRAIN, ["--epochs", "0"], 2, "argument --epochs: expected a whole number >= 1"),
    ("epochs -1", TRAIN, ["--epochs", "-1"], 2, "--epochs: expected a whole number >= 1"),
    ("limit 0", TRAIN, ["--limit", "0"], 2, "--limit: expected a whole number >= 1"),
    ("batch size 0", TRAIN, ["--batch-size", "0"], 2, "--batch-size: expected a whole number"),
    ("epochs not a number", TRAIN, ["--epochs", "many"], 2, "--epochs: expected a whole number"),
    ("fold 6", TRAIN, ["--folds", "6"], 2, "--folds: expected a fold among 1..5, got '6'"),
    ("fold tested and held out", TRAIN, ["--folds", "1", "--holdout", "1"], 2, "both tested"),
    ("no fold left to train", TRAIN, ["--folds", "1", "--holdout", "2", "3", "4", "5"], 2,
     "leaves no fold to train on"),
    ("negative seed", TRAIN, ["--seed", "-1"], 2, "--seed: expected a whole number >= 0"),
    ("score every 0", TRAIN, ["--score-every", "0"], 2, "--score-every: expected a whole"),
    ("stop after 0", TRAIN, ["--stop-after", "0"], 2, "--stop-after: expected a whole number"),
    ("dropout 1", TRAIN, ["--dropout", "1"], 2, r"--dropout: expected a probability in \[0, 1\)"),
    ("widths per stage", TRAIN, ["--widths", "8", "8"], 2, "--widths: expected 4 positive"),
    ("unknown recipe key", TRAIN, ["--recipe", "mixup=1"], 2, "unknown key 'mixup'"),
    ("negative learning rate", TRAIN, ["--recipe", "lr=-1"], 2, "lr: expected a learning rate"),
    ("mixup probability 2", TRAIN, ["--recipe", "mixup_prob=2"], 2,
     r"mixup_prob: expected a number in \[0, 1\]"),
    ("between-class mixing in dB", TRAIN, ["--preset", "cpu", "--recipe", "bc_mix=1"], 2,
     "needs mixup_power=1"),
    ("resume and overwrite", TRAIN, ["--resume", "--overwrite"], 2, "not allowed with"),
    # train_esc50: paths, data, network, devices, runs
    ("out is a file", TRAIN, ["--out", "{file}"], 2, "--out: .* is a file, not a folder"),
    ("out under a file", TRAIN, ["--out", "{file}/run"], 2, "cannot be made: .* is a file"),
    ("cache dir is a file", TRAIN, ["--cache-dir", "{file}"], 2, "--cache-dir: .* is a file"),
    ("data folder missing", TRAIN, ["--data", "{tmp}/nowhere"], 2, "--data: no such folder"),
    ("data folder not ESC-50", TRAIN, ["--data", "{empty}"], 1,
     "ESC-50 not found at .* expected meta/esc50.csv"),
    ("no data anywhere", TRAIN, [], 1, "ESC-50 not found: pass --data DIR"),
    ("download without a network", TRAIN, ["--download"], 1,
     "cannot download ESC-50 from .*check the network"),
    ("teacher missing", TRAIN, ["--teachers", "{tmp}/teacher.npz", "--recipe", "distill=1"], 2,
     "--teachers: no such file"),
    ("gpu without CuPy", TRAIN, ["--device", "gpu"], 1, "GPU|CuPy|CUDA"),
    ("out holds a run", TRAIN, ["--data", "{data}", "--out", "{run}"] + TINY, 1,
     "already holds a run .*add --resume .* --overwrite"),
    ("resume with another seed", TRAIN,
     ["--data", "{data}", "--out", "{run}", "--resume", "--seed", "5"] + TINY, 1,
     r"started with other settings \(seed: 0 -> 5\)"),
    ("resume a truncated checkpoint", TRAIN,
     ["--data", "{data}", "--out", "{broken_run}", "--resume"] + TINY, 1,
     "checkpoint.npz is truncated or corrupt"),
    # classify
    ("hop 0", classify.main, ["--hop", "0", "{wav}"], 2, "--hop: expected a number > 0"),
    ("hop -1", classify.main, ["--hop", "-1", "{wav}"], 2, "--hop: expected a number > 0"),
    ("hop not finite", classify.main, ["--hop", "nan", "{wav}"], 2, "--hop: expected a number"),
    ("hop below one sample", classify.main, ["--hop", "1e-9", "{wav}"], 1,
     "--hop: hop of 1e-09 s is less than one sample at 16000 Hz"),
    ("top-k 0", classify.main, ["--top-k", "0", "{wav}"], 2, "--top-k: expected a whole"),
    ("batch 0", classify.main, ["--batch", "0", "{wav}"], 2, "--batch: expected a whole"),
    ("nothing to classify", classify.main, [], 2, "give audio files, or --stream"),
    ("checkpoint missing", classify.main, ["--checkpoint", "{tmp}/m.npz", "{wav}"], 2,
     "--checkpoint: no such file"),
    ("checkpoint truncated", classify.main, ["--checkpoint", "{truncated}", "{wav}"], 1,
     "truncated.npz is truncated or corrupt"),
    ("checkpoint not an archive", classify.main, ["--checkpoint", "{garbage}", "{wav}"], 1,
     "garbage.npz is not a checkpoint: not an .npz archive"),
    ("checkpoint of another program", classify.main, ["--checkpoint", "{foreign}", "{wav}"],
     1, "foreign.npz is an .npz archive but not a scratchnet checkpoint"),
    ("checkpoint of another kind", classify.main, ["--checkpoint", "{weights}", "{wav}"], 1,
     "not a classifier checkpoint"),
    ("audio file missing", classify.main, ["{tmp}/nothing.wav"], 1, "audio file not found"),
    ("audio file empty", classify.main, ["{empty_file}"], 1, "file is empty"),
    ("audio file undecodable", classify.main, ["{garbage}"], 1, "cannot decode audio"),
    ("audio file is a folder", classify.main, ["{empty}"], 1, "is a directory"),
    ("s16le stream read as f32le", classify.main,
     ["--stream", "{pcm16}", "--stream-format", "f32le"], 1,
     "the data is not f32le; 16-bit PCM needs --stream-format s16le"),
    ("stream and files", classify.main, ["--stream", "{pcm16}", "{wav}"], 2,
     "--stream reads one source"),
    ("stream file missing", classify.main, ["--stream", "{tmp}/mic.raw"], 2,
     "--stream: no such file"),
    ("stream rate 0", classify.main, ["--stream", "--stream-rate", "0"], 2,
     "--stream-rate: expected a whole number >= 1"),
    ("classify on a gpu without CuPy", classify.main, ["--device", "gpu", "{wav}"], 1,
     "GPU|CuPy|CUDA"),
    # evaluate
    ("evaluate fold 0", evaluate.main, ["--fold", "0"], 2, "--fold: expected a fold"),
    ("evaluate tta views 0", evaluate.main, ["--tta-views", "0"], 2, "--tta-views: expected"),
    ("evaluate shift beyond the clip", evaluate.main, ["--max-shift", "1.5"], 2,
     r"--max-shift: expected a number in \[0, 1\)"),
    ("evaluate a truncated checkpoint", evaluate.main, ["--checkpoint", "{truncated}"], 1,
     "is truncated or corrupt"),
    ("evaluate predictions into a folder", evaluate.main, ["--predictions", "{empty}"], 2,
     "--predictions: .* is a folder, not a file"),
    ("evaluate without data", evaluate.main, [], 1,
     "ESC-50 not found: .*train_esc50 --download fetches it"),
    # visualize
    ("visualize without --out", visualize.main, ["{wav}"], 2, "--out"),
    ("visualize out is a file", visualize.main, ["{wav}", "--out", "{file}"], 2,
     "--out: .* is a file"),
    ("visualize no channels", visualize.main, ["{wav}", "--out", "{tmp}/v", "--channels", "0"],
     2, "--channels: expected a whole number >= 1"),
    ("visualize too many maps", visualize.main,
     ["{wav}", "--out", "{tmp}/v", "--channels", "500"], 2, "--channels: at most 32"),
    ("visualize an undecodable file", visualize.main, ["{garbage}", "--out", "{tmp}/v"], 1,
     "cannot decode audio"),
    # gradient_flow
    ("gradient flow negative steps", gradient_flow.main, ["--out", "{tmp}/g", "--steps", "-1"],
     2, "--steps: expected a whole number >= 0"),
    ("gradient flow odd depth", gradient_flow.main, ["--out", "{tmp}/g", "--depths", "3"], 2,
     "--depths: expected an even number"),
    ("gradient flow without data", gradient_flow.main, ["--out", "{tmp}/g"], 1,
     "ESC-50 not found"),
    # summary and export
    ("summary of a missing folder", summary.main, ["{tmp}/runs"], 2, "no such folder"),
    ("summary of a folder with no run", summary.main, ["{empty}"], 1,
     "results.json is missing"),
    ("export a missing model", export.main, ["{tmp}/m.npz", "{tmp}/small.npz"], 2,
     "no such file"),
    ("export a garbage model", export.main, ["{garbage}", "{tmp}/small.npz"], 1,
     "is not a checkpoint"),
]


def materials(tmp, data, cache):
    """The files the cases name: each bad in its own way, or good where the case needs it."""
    import soundfile as sf
    paths = {"tmp": str(tmp), "data": data or "", "file": str(tmp / "file.txt"),
             "empty": str(tmp / "empty"), "wav": str(tmp / "tone.wav"),
             "empty_file": str(tmp / "silence.wav"), "garbage": str(tmp / "garbage.npz"),
             "truncated": str(tmp / "truncated.npz"), "foreign": str(tmp / "foreign.npz"),
             "weights": str(tmp / "weights.npz"), "pcm16": str(tmp / "mic.s16"),
             "run": str(tmp / "run"), "broken_run": str(tmp / "broken")}
    (tmp / "file.txt").write_text("not a folder\n")
    (tmp / "empty").mkdir()
    t = np.arange(16000 * 2) / 16000
    sf.write(paths["wav"], (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    (tmp / "silence.wav").write_bytes(b"")
    (tmp / "garbage.npz").write_bytes(b"this is not audio, nor an archive\n" * 10)
    packaged = open(DEFAULT_CHECKPOINT, "rb").read()
    (tmp / "truncated.npz").write_bytes(packaged[:len(packaged) // 2])
    np.savez(tmp / "foreign.npz", w=np.zeros(3))
    save_checkpoint(tmp / "weights.npz", {"w": np.zeros(2)}, {"note": "not a classifier"})
    loud = (20000 * np.sin(2 * np.pi * 440 * np.arange(16000 * 3) / 16000)).astype("<i2")
    (tmp / "mic.s16").write_bytes(loud.tobytes())
    if data:  # a finished tiny run, and one whose checkpoint was cut short
        for name in ("run", "broken_run"):
            train_esc50.main(["--data", data, "--out", paths[name], "--cache-dir", str(cache),
                              "--stop-after", "1"] + TINY)
        checkpoint = tmp / "broken" / "fold2" / "checkpoint.npz"  # paths["broken_run"]
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    return paths


def repository_state():
    """The repository's files that git sees as changed or new (ignored ones aside)."""
    done = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True)
    return done.stdout if done.returncode == 0 else None


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    data = os.environ.get("ESC50_DIR")
    if not (data and os.path.isfile(os.path.join(data, "meta", "esc50.csv"))):
        data = None
    tmp = tmp_path_factory.mktemp("bad-inputs")
    cache = tmp_path_factory.mktemp("cache")
    before = repository_state()
    yield materials(tmp, data, cache), cache
    assert repository_state() == before, "a bad input changed files in the repository"


@pytest.mark.parametrize("name, main, argv, status, pattern", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_named_error(name, main, argv, status, pattern, made, refused,
                                       tmp_path, monkeypatch):
    paths, cache = made
    if any("{data}" in a for a in argv) and not paths["data"]:
        pytest.skip("needs ESC-50 ($ESC50_DIR)")
    from experiments import esc50
    from scratchnet.runtime import backend
    monkeypatch.chdir(tmp_path)  # ./data/ESC-50 and anything written land here
    monkeypatch.delenv("ESC50_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(esc50, "ARCHIVE_URL", "http://127.0.0.1:9/ESC-50.zip")  # refused
    monkeypatch.setattr(backend, "_cupy", None)  # no GPU here, whatever the machine has
    argv = [a.format(**paths) for a in argv]
    before = sorted(os.listdir(tmp_path))
    got, line = refused(main, argv, pattern)
    assert got == status, line
    assert sorted(os.listdir(tmp_path)) == before, "a refused command left files behind"


def test_debug_shows_the_traceback(made):
    """--debug keeps the exception, for a bug report."""
    from experiments import cli
    from scratchnet import CheckpointError
    paths, _ = made
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        cli.run(classify.main, ["--debug", "--checkpoint", paths["garbage"], paths["wav"]])


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``classify ... --json | head -1``: the reader goes away, the command stops without a
    traceback."""
    import soundfile as sf
    t = np.arange(16000) / 16000
    path = tmp_path / "tone.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    proc = subprocess.Popen([sys.executable, "-m", "experiments.classify", "--json",
                             "--batch", "1"] + [str(path)] * 200, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b'{"file"')
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as a C program's
    assert "Traceback" not in err and "Error" not in err, err


def test_a_bare_stream_reads_stdin(tmp_path):
    """``--stream`` alone and ``--stream -`` read stdin: one line per --hop seconds."""
    pcm = (8000 * np.sin(2 * np.pi * 440 * np.arange(16000 * 2) / 16000)).astype("<i2")
    for flag in (["--stream"], ["--stream", "-"]):
        done = subprocess.run([sys.executable, "-m", "experiments.classify", *flag,
                               "--top-k", "1"], cwd=ROOT, input=pcm.tobytes(),
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        assert len(done.stdout.decode().splitlines()) == 2  # 2 s at the default 1 s hop
