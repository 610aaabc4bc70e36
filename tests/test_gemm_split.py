"""benchmarks.gemm_split times products it computes through SciPy's OpenBLAS by ctypes
(scratchnet.runtime.blas.cblas): its figures mean something only if those are the products,
whole and split."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def lib():
    """The runtime's BLAS through ctypes (found when the test runs, not when the suite is
    collected: finding it loads the runtime's BLAS)."""
    from scratchnet.runtime import blas
    found = blas.cblas()
    if found is None:
        pytest.skip("SciPy's OpenBLAS exposes no cblas gemm that ctypes finds")
    return found


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed_a", [False, True])
def test_the_c_interface_product_is_numpys(lib, transposed_a, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 23) if not transposed_a else (23, 37)).astype(dtype)
    a = a.T if transposed_a else a                       # (37, 23), F-contiguous when transposed
    b = rng.standard_normal((23, 11)).astype(dtype)
    out = lib.product(a, b, np.empty((37, 11), dtype=dtype))
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_split_shares_add_up_to_the_whole_product(lib):
    """The weight gradient's split: row blocks of the sum, each its own share, added."""
    rng = np.random.default_rng(1)
    patches = rng.standard_normal((1000, 12), dtype=np.float32)
    dy = rng.standard_normal((1000, 5), dtype=np.float32)
    shares = [lib.product(patches[r].T, dy[r], np.empty((12, 5), np.float32))
              for r in (slice(0, 400), slice(400, 1000))]
    np.testing.assert_allclose(shares[0] + shares[1], patches.T.astype(np.float64) @ dy,
                               rtol=1e-4, atol=1e-4)


def test_a_matrix_without_a_unit_stride_has_no_cblas_operand():
    from scratchnet.runtime.blas import CBlas
    assert CBlas.operand(np.zeros((8, 8), dtype=np.float32)[::2, ::2]) is None
    assert CBlas.operand(np.zeros((8, 6), dtype=np.float32)) == (CBlas.NO_TRANS, 6)
    assert CBlas.operand(np.zeros((8, 6), dtype=np.float32).T) == (CBlas.TRANS, 6)


def test_the_benchmark_runs_on_the_runtimes_blas(lib, capsys, monkeypatch):
    from benchmarks import gemm_split
    monkeypatch.setattr(gemm_split, "FORWARD", [(256, 16, 8)])
    monkeypatch.setattr(gemm_split, "WEIGHT_GRADIENT", [(256, 12, 4)])
    gemm_split.main(["--rounds", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "256 x 16 . 16 x 8" in out and "12 x 256 . 256 x 4" in out
