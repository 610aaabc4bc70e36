"""scratchnet.runtime.blas: the BLAS scratchnet's products run on is set up by the runtime,
whatever the user's script imported first; its products are NumPy's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.runtime import blas, parallel

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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_products_are_numpys(dtype):
    """Stacks as attention forms them: (N, H, T, d) views of one (N T, 3 D) matrix against
    each other's transposes, one gemm per matrix; a stack against a matrix, as one gemm over
    the stacked rows (contiguous) or per matrix (rows that do not merge); added into out."""
    rng = np.random.default_rng(2)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    qkv = rng.standard_normal((3 * 7, 3 * 8)).astype(dtype)
    q, k, v = qkv.reshape(3, 7, 3, 2, 4).transpose(2, 0, 3, 1, 4)   # each (3, 2, 7, 4)
    scores = blas.matmul(q, k.transpose(0, 1, 3, 2))
    assert scores.shape == (3, 2, 7, 7)
    np.testing.assert_allclose(scores, q @ k.transpose(0, 1, 3, 2), **tol)
    np.testing.assert_allclose(blas.matmul(scores, v), scores @ v, **tol)
    m = rng.standard_normal((4, 5)).astype(dtype)
    for stack in (rng.standard_normal((3, 6, 4)).astype(dtype),                 # rows merge
                  rng.standard_normal((6, 3, 4)).astype(dtype).transpose(1, 0, 2)):  # do not
        np.testing.assert_allclose(blas.matmul(stack, m), stack @ m, **tol)
        out = np.full((3, 6, 5), 1.5, dtype=dtype)
        blas.matmul(stack, m, out=out, beta=1.0)
        np.testing.assert_allclose(out, stack @ m + 1.5, **tol)
    calls = []
    gemm = blas._gemm(dtype)
    try:
        blas._GEMM[("gemm", np.dtype(dtype))] = lambda *a, **kw: calls.append(1) or gemm(*a, **kw)
        blas.matmul(q, k.transpose(0, 1, 3, 2))
    finally:
        blas._GEMM[("gemm", np.dtype(dtype))] = gemm
    assert len(calls) == 3 * 2     # one gemm per matrix, on the runtime's BLAS


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
            "from scratchnet import runtime\n"
            "sn.Linear(3, 2).forward(np.ones((2, 3), dtype=np.float32))\n"
            "print(json.dumps(runtime.settings()))")
KEPT = "kept (M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB)"


def test_a_plain_script_gets_the_runtimes_settings_whatever_it_imports_first():
    """A script that imports NumPy before scratchnet (no preamble, no variable) gets the
    runtime's settings, as one that imports scratchnet first does: the runtime sets its BLAS's
    before it loads, and keeps freed memory, at its first product.  (The commands record
    theirs: tests/test_train_smoke.py holds them to a plain script's.)"""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                          "MKL_NUM_THREADS", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
    user = subprocess.run([sys.executable, "-c", "import numpy\n" + SETTINGS], cwd=ROOT,
                          env=clean, capture_output=True, text=True, check=True)
    first = subprocess.run([sys.executable, "-c", "import scratchnet\n" + SETTINGS], cwd=ROOT,
                           env=clean, capture_output=True, text=True, check=True)
    assert json.loads(user.stdout) == json.loads(first.stdout) == {
        "blas": {"OPENBLAS_THREAD_TIMEOUT": "18"}, "memory": KEPT}
    # Under an MPI launcher with two ranks on the host: each rank's share of the cores too.
    shared = subprocess.run([sys.executable, "-c", "import numpy\n" + SETTINGS], cwd=ROOT,
                            env=dict(clean, MPI_LOCALNRANKS="2"), capture_output=True,
                            text=True, check=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert json.loads(shared.stdout)["blas"]["OPENBLAS_NUM_THREADS"] == str(max(1, cores // 2))
    # A user's own malloc tuning is kept, and said.
    tuned = subprocess.run([sys.executable, "-c", "import numpy\n" + SETTINGS], cwd=ROOT,
                           env=dict(clean, MALLOC_TRIM_THRESHOLD_="65536"), capture_output=True,
                           text=True, check=True)
    assert json.loads(tuned.stdout)["memory"] == "the environment's (MALLOC_TRIM_THRESHOLD_)"


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
BLAS_THREADS = ("from threadpoolctl import threadpool_info\n"
                "threads = [i['num_threads'] for i in threadpool_info()\n"
                "           if i['user_api'] == 'blas']\n")
FIRST_PRODUCT = "sn.Linear(3, 2).forward(np.ones((2, 3), dtype=np.float32))\n"


def run_script(code, **environment):
    """The JSON a fresh script prints, run without the BLAS thread variables of this process
    and with ``environment`` added."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, **environment),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_a_ranks_share_reaches_a_blas_loaded_before_the_runtime():
    """Under a launcher with two ranks on the host, a script that loaded SciPy's BLAS first
    (scipy.signal does, as dsp's resampling imports it) still runs every BLAS of the process
    on the rank's share of the cores once the runtime has run a product."""
    counts = run_script("import numpy as np, scipy.signal, scratchnet as sn, json\n" +
                        FIRST_PRODUCT + BLAS_THREADS + "print(json.dumps(threads))",
                        MPI_LOCALNRANKS="4")
    assert counts and set(counts) == {max(1, CORES // 4)}


def test_a_thread_count_the_script_set_itself_is_kept():
    """A script that limits NumPy's BLAS to one thread with threadpoolctl before scratchnet's
    first product gets the runtime's BLAS on one thread too, and settings() says whose it
    is."""
    if CORES < 2:
        pytest.skip("one core: a limit of one thread is everyone's default")
    said, counts = run_script(
        "import numpy as np, json\n"
        "from threadpoolctl import threadpool_limits\n"
        "threadpool_limits(1, user_api='blas')\n"
        "import scratchnet as sn\n"
        "from scratchnet import runtime\n" + FIRST_PRODUCT + BLAS_THREADS +
        "print(json.dumps([runtime.settings()['blas'].get('threads'), threads]))")
    assert said == "1 (the script's own limit)"
    assert len(counts) >= 2 and set(counts) == {1}   # NumPy's and the runtime's


def test_a_blas_loaded_before_scratchnet_is_said_so():
    """If the script loaded SciPy's BLAS first, its settings were read then: settings() says
    so instead of claiming the runtime's."""
    out = subprocess.run([sys.executable, "-c", "import numpy, scipy.linalg\n" + SETTINGS],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["blas"] == "loaded before scratchnet: its own settings"


LONG = blas.LONG_SUM + 123  # terms per output: enough to be cut into parts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["patches^T dY", "dY^T patches"])
def test_long_sums_are_the_products_to_rounding(dtype, layout):
    """summed_matmul on a weight gradient's shapes, either orientation, into a new array and
    into out: the float64 product to float rounding; the parts add up in a fixed order."""
    rng = np.random.default_rng(0)
    patches = rng.standard_normal((LONG, 27)).astype(dtype)
    dy = rng.standard_normal((LONG, 8)).astype(dtype)
    a, b = (patches.T, dy) if layout == "patches^T dY" else (dy.T, patches)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    got = blas.summed_matmul(a, b)
    np.testing.assert_allclose(got, exact, rtol=tol, atol=tol * np.sqrt(LONG))
    out = np.full(exact.shape, np.nan, dtype=dtype)
    assert blas.summed_matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, got)
    lib = blas.cblas()
    if lib is not None:  # the parts, each a one-thread product, added in order: bit for bit
        bounds = parallel.even_bounds(LONG, blas.SUM_PARTS)
        threads = lib.get_threads()
        lib.set_threads(1)
        try:
            parts = [lib.product(a[:, lo:hi], b[lo:hi], np.empty(exact.shape, dtype))
                     for lo, hi in zip(bounds, bounds[1:])]
        finally:
            lib.set_threads(threads)
        expected = parts[0].copy()
        for p in parts[1:]:
            expected += p
        np.testing.assert_array_equal(got, expected)


def test_long_sums_are_the_same_on_any_number_of_cores(monkeypatch):
    """The parts are fixed, not one per thread: one thread gives the same numbers bit for bit,
    and the BLAS's thread count is what it was after the call."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((LONG, 49)).astype(np.float32).T   # 49 rows: OpenBLAS's own
    b = rng.standard_normal((LONG, 32)).astype(np.float32)     # products round by thread count
    lib = blas.cblas()
    before = lib.get_threads() if lib else None
    if lib is not None and CORES >= 2:
        lib.set_threads(2)   # a count above one, whatever an earlier call left
    try:
        many = blas.summed_matmul(a, b)
        if lib is not None and CORES >= 2:
            assert lib.get_threads() == 2   # held to one for the parts, then given back
    finally:
        if lib is not None:
            lib.set_threads(before)
    monkeypatch.setenv("SCRATCHNET_THREADS", "1")
    np.testing.assert_array_equal(blas.summed_matmul(a, b), many)


def test_short_sums_and_large_outputs_are_plain_products():
    rng = np.random.default_rng(2)
    short = rng.standard_normal((300, 20)).astype(np.float32)
    wide = rng.standard_normal((LONG, 200)).astype(np.float32)
    for a, b in ((short.T, short), (wide.T, wide[:, :100])):   # 400 or 20000 outputs
        np.testing.assert_array_equal(blas.summed_matmul(a, b), blas.matmul(a, b))


def test_long_sums_without_the_c_interface_run_the_parts_in_turn(monkeypatch):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((LONG, 12)).astype(np.float64).T
    b = rng.standard_normal((LONG, 5)).astype(np.float64)
    monkeypatch.setattr(blas, "_CBLAS", False)
    np.testing.assert_allclose(blas.summed_matmul(a, b), a @ b, rtol=1e-10, atol=1e-9)


def test_the_long_sums_benchmark_alternates_ours_and_openblass(monkeypatch):
    """benchmarks.long_sums: SMALL_OUTPUT = 0 sends every product to OpenBLAS's threads,
    as before the change (bit for bit blas.matmul); the steps alternate the two settings
    round by round after a warm-up of each, and the setting is given back."""
    from benchmarks import long_sums
    rng = np.random.default_rng(4)
    a = rng.standard_normal((LONG, 12)).astype(np.float32).T
    b = rng.standard_normal((LONG, 5)).astype(np.float32)
    ours = blas.SMALL_OUTPUT
    monkeypatch.setattr(blas, "SMALL_OUTPUT", 0)
    np.testing.assert_array_equal(blas.summed_matmul(a, b), blas.matmul(a, b))
    monkeypatch.setattr(blas, "SMALL_OUTPUT", ours)
    seen = []
    times = long_sums.alternate(lambda: seen.append(blas.SMALL_OUTPUT), rounds=3)
    assert seen == [0, ours, 0, ours, ours, 0, 0, ours]
    assert blas.SMALL_OUTPUT == ours and len(times["ours"]) == len(times["openblas"]) == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reachable", [True, False])
def test_one_thread_products_add_into_rows_and_give_the_threads_back(dtype, reachable,
                                                                     monkeypatch):
    """Products into row blocks of one output, the first of each block written (beta 0) and
    the rest added (beta 1), on the runtime's threads through the C interface or in turn
    through matmul: NumPy's products, and BLAS's thread count as it was."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 60, 7)).astype(dtype)
    b = rng.standard_normal((3, 5, 7)).astype(dtype).transpose(0, 2, 1)   # read transposed
    out = np.full((60, 5), np.nan, dtype)
    bounds = [0, 13, 30, 47, 60]
    if not reachable:
        monkeypatch.setattr(blas, "_CBLAS", False)
    lib = blas.cblas()
    before = lib.get_threads() if lib else None

    def work(blocks, product):
        if lib is not None and CORES >= 2 and before > 1:
            assert lib.get_threads() == 1     # held to one thread inside
        for j in range(blocks.start, blocks.stop):
            rows = slice(bounds[j], bounds[j + 1])
            for t in range(3):
                product(a[t, rows], b[t], out[rows], 0.0 if t == 0 else 1.0)

    blas.one_thread_products(work, len(bounds) - 1, out.size)
    np.testing.assert_allclose(out, sum(a[t] @ b[t] for t in range(3)),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    if lib is not None:
        assert lib.get_threads() == before


def test_one_thread_products_give_each_piece_its_own_slice(monkeypatch):
    """Each block of work is a slice of its own, which the threads take in turn: 12 even
    blocks then split 6 and 6 between two cores, where slices of about PIECE_ELEMENTS (3 of
    4 blocks for this much work) left one core 8 blocks and the other 4."""
    monkeypatch.setenv("SCRATCHNET_THREADS", "2")
    lib = blas.cblas()
    if lib is None or lib.get_threads() < 2 or CORES < 2:
        pytest.skip("the pieces run in turn: SciPy's OpenBLAS unreachable or one thread")
    seen = []
    blas.one_thread_products(lambda part, product: seen.append(part), 12,
                             3 * parallel.PIECE_ELEMENTS)
    assert sorted(part.stop - part.start for part in seen) == [1] * 12
    assert sorted(part.start for part in seen) == list(range(12))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_add_into_their_output_in_place(rng, dtype):
    out = rng.standard_normal((50, 6)).astype(dtype)
    a = rng.standard_normal((50, 4)).astype(dtype)
    b = rng.standard_normal((6, 4)).astype(dtype).T        # a transposed view, as Conv2d passes
    expected = out + a @ b
    result = blas.matmul(a, b, out=out, beta=1.0)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_products_with_beta_scale_or_overwrite_the_output(rng, dtype, beta):
    out = rng.standard_normal((50, 6)).astype(dtype)
    out[0, 0] = np.nan                      # beta = 0 must write, not scale, what was there
    a = rng.standard_normal((50, 4)).astype(dtype)
    b = rng.standard_normal((4, 6)).astype(dtype)
    expected = a @ b + (beta * out if beta else 0)  # NaN at [0, 0] for beta = 0.5
    result = blas.matmul(a, b, out=out, beta=beta)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_products_into_a_non_contiguous_output(rng, beta):
    base = rng.standard_normal((50, 12))
    out = base[:, ::2]                                      # the fallback, without BLAS
    a, b = rng.standard_normal((50, 3)), rng.standard_normal((3, 6))
    expected = a @ b + beta * out
    blas.matmul(a, b, out=out, beta=beta)
    np.testing.assert_allclose(base[:, ::2], expected, rtol=1e-12)
