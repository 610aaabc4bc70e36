"""Per-channel maps over long rows (scratchnet.kernels.long_rows) against plain broadcasting."""
import numpy as np
import pytest

import scratchnet.kernels.long_rows as long_rows
import scratchnet.runtime.parallel as parallel
from scratchnet.kernels.long_rows import map_long_rows, rows_per_long_row


@pytest.mark.parametrize("m, c", [(32256, 32), (128000, 32), (8192, 64), (512, 256), (7, 3),
                                  (10007, 8), (2 * 10007, 64)])
def test_rows_per_long_row_divides_the_rows_and_reaches_a_long_row_where_it_can(m, c):
    k = rows_per_long_row(m, c)
    assert m % k == 0
    least = -(-long_rows.LONG_ROW // c)
    if m <= least:                   # the whole matrix is shorter than one long row
        assert k == m
    elif any(m % j == 0 for j in range(least, 4 * least + 1)):
        assert least <= k <= 4 * least and k * c >= long_rows.LONG_ROW
    else:                            # a prime-ish row count: no small repeat of the vectors
        assert k < least


def test_stage_shapes_get_long_rows():
    # The reference network's BatchNorm matrices (batch 32): every one gets rows of at least
    # LONG_ROW numbers, so the maps run in long loops where it matters.
    for m, c in [(32 * 32 * 125, 32), (32 * 16 * 63, 32), (32 * 8 * 32, 64), (32 * 4 * 16, 128)]:
        assert rows_per_long_row(m, c) * c >= long_rows.LONG_ROW


@pytest.mark.parametrize("m, c", [(32256, 32), (10007, 8), (6, 5)])
@pytest.mark.parametrize("threads", ["1", "3"])
def test_map_is_the_broadcast_map_bit_for_bit(rng, monkeypatch, m, c, threads):
    monkeypatch.setenv("SCRATCHNET_THREADS", threads)
    monkeypatch.setattr(parallel, "PIECE_ELEMENTS", 1000)   # several uneven pieces
    a = rng.standard_normal((m, c)).astype(np.float32)
    b = rng.standard_normal((m, c)).astype(np.float32)
    scale = rng.standard_normal(c).astype(np.float32)
    shift = rng.standard_normal(c).astype(np.float32)

    def fn(out, a, b, scale, shift):
        np.multiply(a, scale, out=out)
        out += shift
        out -= b

    out = np.full((m, c), np.nan, dtype=np.float32)
    assert map_long_rows(fn, out, [a, b], [scale, shift]) is out
    np.testing.assert_array_equal(out, a * scale + shift - b)


def test_map_may_work_in_place(rng):
    a = rng.standard_normal((4096, 16))
    v = rng.standard_normal(16)
    expected = a + v
    map_long_rows(lambda out, v: np.add(out, v, out=out), a, [], [v])
    np.testing.assert_array_equal(a, expected)


def test_map_names_a_matrix_it_cannot_view_as_long_rows(rng):
    a = rng.standard_normal((64, 8))
    with pytest.raises(ValueError, match="C-contiguous of shape"):
        map_long_rows(lambda out, a: np.copyto(out, a), np.empty((64, 8)), [a.T.copy().T])
    with pytest.raises(ValueError, match=r"shape \(64, 8\)"):
        map_long_rows(lambda out, a: np.copyto(out, a), np.empty((64, 8)), [a[:32]])
