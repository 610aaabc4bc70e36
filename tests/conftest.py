import os

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def esc50_root():
    """The ESC-50 root from $ESC50_DIR; tests that need it skip with a reason otherwise, except
    in CI ($CI set), where a missing data set is an error: a wrong path must not turn a dozen
    end-to-end tests into quiet skips."""
    root = os.environ.get("ESC50_DIR")
    if not root or not os.path.isfile(os.path.join(root, "meta", "esc50.csv")):
        message = ("ESC-50 not available: set $ESC50_DIR to a folder with meta/esc50.csv "
                   f"(it is {root!r})")
        if os.environ.get("CI"):
            pytest.fail(message + "; in CI the data set is required", pytrace=False)
        pytest.skip(message)
    return root


@pytest.fixture
def standin(monkeypatch):
    """The strict CuPy stand-in (tests/cupy_standin.py) installed as ``cupy``: --device gpu
    and every CuPy-side branch run on it."""
    import sys

    import cupy_standin
    import scratchnet.runtime.backend as backend
    monkeypatch.setitem(sys.modules, "cupy", cupy_standin)
    for name in ("cupyx", "cupyx.scipy", "cupyx.scipy.special"):
        module = cupy_standin
        for part in name.split("."):
            module = getattr(module, part)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backend, "_cupy", cupy_standin)
    return cupy_standin


def real_cupy():
    """CuPy itself, or a skip where it or a CUDA device is missing (python -m
    benchmarks.gpu_check runs these tests on a GPU machine)."""
    from scratchnet.runtime import backend
    if not backend.gpu_available():
        pytest.skip("CuPy or a CUDA device is missing")
    return backend._cupy


@pytest.fixture(params=["cupy-standin", "cupy"])
def gpu(request):
    """The device's array module: the CuPy stand-in, and real CuPy where a GPU answers."""
    return request.getfixturevalue("standin") if request.param == "cupy-standin" else real_cupy()


@pytest.fixture(params=["numpy", "cupy-standin", "cupy"])
def xp(request):
    """Run a test on NumPy, on the CuPy stand-in, and on real CuPy where a GPU answers."""
    if request.param == "numpy":
        return np
    return request.getfixturevalue("standin") if request.param == "cupy-standin" else real_cupy()


@pytest.fixture
def refused(capsys):
    """``refused(main, argv, pattern)``: the command, run as from the shell
    (experiments.cli.run), exits with a non-zero status and one ``error:`` line on stderr that
    matches ``pattern``, with no traceback; returns (status, that line)."""
    import re

    from experiments import cli

    def check(main, argv, pattern):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            cli.run(main, argv)
        err = capsys.readouterr().err
        assert info.value.code not in (0, None), err
        assert "Traceback" not in err, err
        last = err.strip().splitlines()[-1]
        assert "error:" in last and re.search(pattern, last), err
        return info.value.code, last
    return check


@pytest.fixture
def five_class_training(esc50_root, tmp_path):
    """``train(model, **recipe)``: a network trained on five distinct classes (dog, rain,
    crying baby, door knock, helicopter; chance 20%) on their clips of folds 2-5 and scored on
    fold 1's 40, with the cpu preset's features and recipe changed by ``recipe``; returns (the
    fold's result, its per-epoch history)."""
    import json

    from experiments import esc50, train_esc50
    from experiments.models import PRESETS

    def train(model, **recipe):
        rows = [r for r in esc50.read_metadata(esc50_root)
                if r["target"] in {0, 10, 20, 30, 40}]
        cfg = dict(features=dict(PRESETS["cpu"]["features"]), model=model,
                   train=dict(PRESETS["cpu"]["train"], **recipe))
        feats, labels, folds = esc50.load_features(esc50_root, cfg["features"],
                                                   tmp_path / "cache", rows=rows,
                                                   progress=False)
        args = train_esc50.parse_args(["--out", str(tmp_path / "run"), "--no-progress"])
        names = esc50.class_names(esc50.read_metadata(esc50_root))
        result = train_esc50.train_fold(1, feats, labels, folds, cfg, args, np, names,
                                        np.array([r["filename"] for r in rows]))
        history = json.loads((tmp_path / "run" / "fold1" / "metrics.json").read_text())
        return result, history
    return train
