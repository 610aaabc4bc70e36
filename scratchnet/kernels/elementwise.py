"""Element-wise passes split over the CPU's cores by samples (scratchnet.runtime.parallel): the
rectifier and its mask, which keep the memory layout of their input."""
from ..runtime.backend import get_array_module
from ..runtime.parallel import parallel_slices


def rectify(x, with_mask, out=None):
    """(max(x, 0), the mask [max(x, 0) > 0] or None), in x's layout; written into ``out`` when
    given, which may be x itself (each value is read before it is written).  The 0 is an array
    of one sample's zeros in x's layout, broadcast over the samples, not a scalar: NumPy runs
    maximum against a scalar several times slower (docs/speed.md, "Long rows"), and the result
    is the same."""
    xp = get_array_module(x)
    y = xp.empty_like(x) if out is None else out  # empty_like keeps the order of x's strides
    mask = xp.empty_like(x, dtype=bool) if with_mask else None
    zeros = xp.zeros_like(x[:1])  # (1, C, H, W), x's memory order

    def rectify_part(part):
        piece = y[part]
        xp.maximum(x[part], zeros, out=piece)
        if mask is not None:
            xp.greater(piece, 0, out=mask[part])

    parallel_slices(rectify_part, x.shape[0], x.size, xp)
    return y, mask


def masked(dy, mask):
    """dy * mask, in dy's layout."""
    xp = get_array_module(dy)
    out = xp.empty_like(dy)
    parallel_slices(lambda part: xp.multiply(dy[part], mask[part], out=out[part]),
                    dy.shape[0], dy.size, xp)
    return out
