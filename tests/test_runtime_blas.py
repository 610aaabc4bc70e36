"""scratchnet.runtime.blas: the BLAS scratchnet's products run on is set up by the runtime,
whatever the user's script imported first; its products are NumPy's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.runtime import blas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LAYOUTS = {
    "C": lambda m: np.ascontiguousarray(m),
    "F": lambda m: np.asfortranarray(m),
    "transposed view": lambda m: np.ascontiguousarray(m.T).T,
    "strided": lambda m: np.repeat(m, 2, axis=1)[:, ::2],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("left", list(LAYOUTS))
@pytest.mark.parametrize("right", list(LAYOUTS))
def test_products_are_numpys(dtype, left, right):
    """a @ b in every layout of either factor, into a new array, into out, and added into
    out (beta = 1): NumPy's numbers (bit for bit where both run OpenBLAS's gemm)."""
    rng = np.random.default_rng(0)
    a = LAYOUTS[left](rng.standard_normal((37, 19)).astype(dtype))
    b = LAYOUTS[right](rng.standard_normal((19, 23)).astype(dtype))
    expected = a @ b
    np.testing.assert_allclose(blas.matmul(a, b), expected, rtol=1e-6 if dtype == np.float32
                               else 1e-13)
    out = np.full((37, 23), 2.0, dtype=dtype)
    blas.matmul(a, b, out=out, beta=1.0)
    np.testing.assert_allclose(out, expected + 2.0, rtol=1e-5 if dtype == np.float32
                               else 1e-12)
    v = rng.standard_normal(37).astype(dtype)
    np.testing.assert_allclose(blas.vector_matmul(v, a), v @ a,
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_same_numbers_as_numpy_on_the_convolutions_shapes():
    """On C-contiguous float32 operands of a stage's shapes the product is NumPy's bit for
    bit (both are OpenBLAS's sgemm on the same kernels), so training keeps its numbers."""
    rng = np.random.default_rng(1)
    cols = rng.standard_normal((32 * 16 * 50, 9 * 24)).astype(np.float32)
    w = rng.standard_normal((24, 9 * 24)).astype(np.float32)
    assert np.array_equal(blas.matmul(cols, w.T), cols @ w.T)
    ones = np.ones(cols.shape[0], dtype=np.float32)
    assert np.array_equal(blas.vector_matmul(ones, cols), ones @ cols)


def test_the_layers_products_run_on_the_runtimes_blas(monkeypatch):
    """Every 2-D product of a ResNet training step (convolutions, BatchNorm's sums, the
    classifier) goes through the runtime's BLAS, not NumPy's matmul."""
    calls = {"gemm": 0, "gemv": 0}
    blas._gemm(np.float32)
    for key, fn in list(blas._GEMM.items()):
        def counted(*args, _fn=fn, _name=key[0], **kwargs):
            calls[_name] += 1
            return _fn(*args, **kwargs)
        monkeypatch.setitem(blas._GEMM, key, counted)
    model = sn.ResNet(1, 5, widths=(8, 16), depths=(1, 1), stem_kernel=3, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 24, 30)).astype(np.float32)
    loss = sn.SoftmaxCrossEntropy()
    loss.forward(model.forward(x), np.arange(4) % 5)
    model.backward(loss.backward())
    assert calls["gemm"] >= 3 * 5 + 2   # every convolution's three products, the classifier
    assert calls["gemv"] >= 2 * 5       # BatchNorm's column sums


SETTINGS = ("import json, numpy as np, scratchnet as sn\n"
            "from scratchnet.runtime import blas\n"
            "sn.Linear(3, 2).forward(np.ones((2, 3), dtype=np.float32))\n"
            "print(json.dumps(blas.settings()))")


def test_a_plain_script_gets_the_commands_settings():
    """A script that imports NumPy before scratchnet (no configure(), no variable) gets the
    BLAS settings the commands get: the runtime sets them before its BLAS loads."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                          "MKL_NUM_THREADS")}
    user = subprocess.run([sys.executable, "-c", "import numpy\n" + SETTINGS], cwd=ROOT,
                          env=clean, capture_output=True, text=True, check=True)
    command = subprocess.run([sys.executable, "-c", "from scratchnet.runtime import configure;"
                              " configure()\n" + SETTINGS], cwd=ROOT, env=clean,
                             capture_output=True, text=True, check=True)
    assert json.loads(user.stdout) == json.loads(command.stdout) == {
        "OPENBLAS_THREAD_TIMEOUT": "18"}
    # Under an MPI launcher with two ranks on the host: each rank's share of the cores too.
    shared = subprocess.run([sys.executable, "-c", "import numpy\n" + SETTINGS], cwd=ROOT,
                            env=dict(clean, MPI_LOCALNRANKS="2"), capture_output=True,
                            text=True, check=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert json.loads(shared.stdout)["OPENBLAS_NUM_THREADS"] == str(max(1, cores // 2))


def test_a_blas_loaded_before_scratchnet_is_said_so():
    """If the script loaded SciPy's BLAS first, its settings were read then: settings() says
    so instead of claiming the runtime's."""
    out = subprocess.run([sys.executable, "-c", "import numpy, scipy.linalg\n" + SETTINGS],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == "loaded before scratchnet: its own settings"
