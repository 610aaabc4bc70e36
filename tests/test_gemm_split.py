"""benchmarks.gemm_split times products it computes through SciPy's OpenBLAS by ctypes: its
figures mean something only if those are the products, whole and split."""
import numpy as np
import pytest

from benchmarks import gemm_split


@pytest.fixture(scope="module")
def sgemm():
    """SciPy's cblas sgemm (found when the test runs, not when the suite is collected: finding
    it loads the runtime's BLAS)."""
    found = gemm_split.runtime_cblas()
    if found is None:
        pytest.skip("SciPy's OpenBLAS exposes no cblas sgemm that ctypes finds")
    return found[0]


@pytest.mark.parametrize("transposed_a", [False, True])
def test_the_c_interface_product_is_numpys(sgemm, transposed_a):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 23) if not transposed_a else (23, 37), dtype=np.float32)
    a = a.T if transposed_a else a                       # (37, 23), F-contiguous when transposed
    b = rng.standard_normal((23, 11), dtype=np.float32)
    out = gemm_split.product(sgemm, a, b, np.empty((37, 11), dtype=np.float32))
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


def test_split_shares_add_up_to_the_whole_product(sgemm):
    """The weight gradient's split: row blocks of the sum, each its own share, added."""
    rng = np.random.default_rng(1)
    patches = rng.standard_normal((1000, 12), dtype=np.float32)
    dy = rng.standard_normal((1000, 5), dtype=np.float32)
    shares = [gemm_split.product(sgemm, patches[r].T, dy[r], np.empty((12, 5), np.float32))
              for r in (slice(0, 400), slice(400, 1000))]
    np.testing.assert_allclose(shares[0] + shares[1], patches.T.astype(np.float64) @ dy,
                               rtol=1e-4, atol=1e-4)


def test_a_matrix_without_a_unit_stride_is_refused():
    with pytest.raises(ValueError, match="unit stride"):
        gemm_split.operand(np.zeros((8, 8), dtype=np.float32)[::2, ::2])
