"""Stride-1 "same" convolution without a patch matrix: a sum of k*k shifted GEMMs.

The grid.  Lay the channels-last images out row by row, image rows outermost: row i of every
image in turn, then row i + 1 of every image, each image row followed by p = (k-1)/2 zero
columns, and flatten: a matrix F with one row of C numbers per grid position,

    F[lead + (i*N + n)*Wq + j] = x[n, :, i, j]   (j < W),  zero for W <= j < Wq,
    Wq = W + p,  R = N*Wq positions per image row,  lead = p zero rows before and after.

Neighbours share their padding: the p zero columns at the end of an image row are its right
border and the left border of the row after it (another image's, or the lead zeros).  For a
grid position g = (i*N + n)*Wq + j and a kernel offset (a, b), 0 <= a, b < k, the row

    F[lead + g + (a-p)*R + (b-p)]   holds x[n, :, i+a-p, j+b-p]

when 0 <= i+a-p < H: a step of R moves to the next image row of the same image, and a
horizontal neighbour outside the image (-p <= j+b-p < 0, or W <= j+b-p < W+p) lands on zero
columns.  Vertical neighbours outside the image are not read at all: kernel row a meets an
image row only at the output rows i in [i0_a, i1_a) = [max(0, p-a), min(H, H+p-a)), and the
grid positions of those rows are one contiguous block, g in [i0_a R, i1_a R).  A stride-1
cross-correlation with padding p,

    y[n, i, j, o] = sum_{a, b, c} x[n, c, i+a-p, j+b-p] W[o, c, a, b]   (outside pixels 0),

is therefore, block by block,

    Y[i0_a R : i1_a R] += F[lead + (i0_a+a-p) R + (b-p) : ...  (the same length)] W_ab^T,
    W_ab = W[:, :, a, b]  (C_out, C_in),

k*k GEMMs whose left factors are contiguous slices of F itself: no im2col copy, and each adds
into a block of the same output (the k offsets of the middle kernel row, a = p, cover every
row; the first of them writes Y).  Y is computed at every grid position; those with j < W are
the convolution, and the zero columns (W <= j < Wq) are computed and thrown away: p/W more
positions than the convolution has (1.6% on a 63-wide map, 6% on 16, 12.5% on 8).  The taps
that would read vertical padding are never multiplied, unlike im2col's zero rows: on an
H-row map kernel row a skips |a - p| output rows, so the GEMMs do (kH - p(p+1))/(kH) of
im2col's products in that direction (for k = 3: 46/48 on 16 rows, 22/24 on 8).

The weight gradient reads the same rows.  With dY on the grid (dY[g] = dy at pixel (n, i, j),
zero at the zero columns: the rows of dy's own grid after its lead),

    dL/dW_ab = sum_{g in block a} F[lead + g + (a-p) R + (b-p)]^T dY[g]         (C_in, C_out)

For one kernel row a the k offsets b are neighbouring rows of F, so with the row patches
Q[r] = (F[r], F[r+1], ..., F[r+k-1]) (one row of k*C numbers, a gather k times the input, not
k*k times as im2col) and lead = p, the k gradients of kernel row a are one GEMM,
dL/dW_a^T = Q[(i0_a+a-p) R : (i1_a+a-p) R]^T dY[i0_a R : i1_a R]  (k*C_in, C_out): k GEMMs
(or their transposes, dY^T Q, for a large gradient: then it lies in the weight's own order).
dL/dx is the correlation of dy with the flipped, channel-transposed kernel at padding
k-1-p = p (Conv2d derives it): the same shifted sum over dy's grid.
"""
from typing import NamedTuple

from ..runtime.backend import as_strided, device_of, get_array_module
from ..runtime import blas
from ..runtime.parallel import even_blocks, parallel_slices
from .im2col import gradient_transposed, output_rows

# Where Conv2d sums shifted GEMMs is decided by scratchnet.kernels.conv_policy, from the costs
# of scratchnet.kernels.conv_cost: not on one-channel inputs, where each of the k*k products
# is an outer product that reads and writes the whole output (docs/speed.md, "A cost model
# picks the convolution").


def grid_geometry(n, h, w, p):
    """(Wq, R, lead) of the grid of N images of h x w: row width, positions per image row,
    zero rows before (and after) the positions."""
    wq = w + p
    return wq, n * wq, p


def to_grid(x, p):
    """F (lead + H*N*Wq + lead, C): x (N, C, H, W) laid out on the grid (module docstring)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    wq, r, lead = grid_geometry(n, h, w, p)
    positions = h * r
    flat = xp.empty((2 * lead + positions, c), dtype=x.dtype)
    flat[:lead] = 0
    flat[lead + positions:] = 0
    grid = flat[lead:lead + positions].reshape(h, n, wq, c)
    x_rows = x.transpose(2, 0, 3, 1)                      # (H, N, W, C), a view

    def fill(part):
        rows = grid[part]
        rows[:, :, w:] = 0
        rows[:, :, :w] = x_rows[part]

    parallel_slices(fill, h, positions * c, xp)
    return flat


def centre_first(k):
    """The offsets 0..k-1 of a kernel axis with the middle one, p = (k-1)/2, first."""
    p = (k - 1) // 2
    return [p] + [a for a in range(k) if a != p]


def row_blocks(h, k):
    """For each kernel row a: (i0, i1), the output rows whose input row i + a - p is inside an
    h-row image (module docstring), p = (k-1)/2; the middle row a = p first (all h rows)."""
    p = (k - 1) // 2
    return [(a, max(0, p - a), min(h, h + p - a)) for a in centre_first(k)]


def tap_matrices(weight):
    """W_ab^T (C_in, C_out) of every tap (a, b) of weight (C_out, C_in, k, k), indexed [a, b],
    each a C- or F-contiguous matrix (BLAS reads either): one copy that runs along the
    weight's memory.  Conv2d keeps C_in innermost, (C_out, k, k, C_in) memory: the copy is in
    (k, k, C_out, C_in) order and each tap is read transposed.  The flipped kernel of dL/dx
    has its C_out (the layer's C_in) innermost: the copy is in (k, k, C_in, C_out) order.  A
    copy across the memory took 2.9 ms against 0.2 along it for 512 channels (docs/speed.md,
    "The convolution algorithms, one table")."""
    xp = get_array_module(weight)
    if abs(weight.strides[1]) < abs(weight.strides[0]):   # C_in the faster axis
        return xp.ascontiguousarray(weight.transpose(2, 3, 0, 1)).transpose(0, 1, 3, 2)
    return xp.ascontiguousarray(weight.transpose(2, 3, 1, 0))


# The sums and the weight gradients run over blocks of grid positions, a block's products on
# one core with its rows in cache: blocks of at least BLOCK_ROWS positions (a call's fixed
# cost) and about BLOCK_BYTES of input and output rows (docs/speed.md, "The convolution
# algorithms, one table").
BLOCK_BYTES = 1 << 21
BLOCK_ROWS = 8192


def position_blocks(positions, c_in, c_out, grid):
    """The bounds of the blocks of grid positions the shifted sums run over, for rows of C_in
    and C_out numbers of ``grid``'s dtype: even blocks of at least max(BLOCK_ROWS, BLOCK_BYTES
    / ((C_in + C_out) itemsize)) positions, from the shapes alone (scratchnet.runtime.parallel.
    even_blocks); one block of them all (BLAS's own threads) where two would not fit, and off
    the CPU (a GPU's products: whole, one launch each)."""
    if device_of(grid) != "cpu":
        return [0, positions]
    return even_blocks(positions,
                       max(BLOCK_ROWS, BLOCK_BYTES // ((c_in + c_out) * grid.itemsize)))


def correlate_shifted(flat, h, weight, cropped=None):
    """Cross-correlation of a grid F (from :func:`to_grid`, of h-row images) with weight
    (C_out, C, k, k), stride 1, padding p = (k-1)/2: returns Y (H*N*Wq, C_out), one row per grid
    position (see the module docstring); the rows of the zero columns are unspecified.  With
    ``cropped`` = (out, bias), out (N, h, w, C_out), it also writes :func:`crop` (Y, N, h, w,
    bias) into out and returns out.

    The sum over the k*k taps runs a block of positions at a time (:func:`position_blocks`):
    each block's k*k products add into the same rows of Y, which stay in cache from one tap
    to the next instead of being read from memory and written back k*k times, and the blocks
    share the cores, each block's products on one core (blas.one_thread_products).  Each
    output row gets the same products in the same order however the positions are blocked
    (the blocks change the rounding only: :func:`position_blocks`).  The crop, too, takes a
    block's whole image rows as soon as its products are done, while they are in cache
    (:func:`crop_rows`); the few image rows that two blocks share follow at the end."""
    xp = get_array_module(flat)
    c_out, c_in, k, _ = weight.shape
    p = (k - 1) // 2
    positions = flat.shape[0] - 2 * p
    r = positions // h
    # W_ab^T (C_in, C_out) of every tap: one copy of the kernel per call.  Every product, the
    # first included, is one gemm of the same BLAS: NumPy and SciPy each load their own
    # OpenBLAS with its own threads, and a first product through NumPy's left those spinning
    # beside SciPy's for the other k*k - 1 (docs/speed.md, "The convolution algorithms, one
    # table").
    taps = tap_matrices(weight)
    y = xp.empty((positions, c_out), dtype=flat.dtype)
    bounds = position_blocks(positions, c_in, c_out, y)
    kernel_rows = row_blocks(h, k)
    out, bias = cropped if cropped is not None else (None, None)
    in_blocks = out is not None and len(bounds) > 2      # each block crops its own rows
    if in_blocks:
        wq = grid_geometry(*out.shape[:3], p)[0]                 # grid positions an image row
        row_bias = None if bias is None else xp.tile(bias, (out.shape[2], 1))

    def sums(blocks, product):
        for j in range(blocks.start, blocks.stop):
            g0, g1 = bounds[j], bounds[j + 1]
            for a, i0, i1 in kernel_rows:
                lo, hi = max(g0, i0 * r), min(g1, i1 * r)  # kernel row a's rows in the block
                if hi <= lo:
                    continue
                start = lo + (a - p) * r     # lead + lo + (a - p) R + (b - p) - b, lead = p
                # The middle row's middle tap first: it covers every position, so it writes Y.
                for b in centre_first(k) if a == p else range(k):
                    product(flat[start + b:start + b + hi - lo], taps[a, b], y[lo:hi],
                            0.0 if a == p and b == p else 1.0)
            if in_blocks:                                  # the block's whole image rows
                crop_rows(y, out, -(-g0 // wq), g1 // wq, row_bias)

    blas.one_thread_products(sums, len(bounds) - 1, y.size)
    if out is None:
        return y
    if not in_blocks:
        return crop(y, *out.shape[:3], bias, out=out)
    for q in sorted({g // wq for g in bounds[1:-1] if g % wq}):   # rows two blocks share
        crop_rows(y, out, q, q + 1, row_bias)
    return out


def overlapping_rows(flat, kw):
    """Q (R - kw + 1, kw*C) of a C-contiguous matrix F (R, C) as a read-only view: row r is
    rows r, r+1, ..., r+kw-1 of F side by side, the kw horizontal offsets of a kernel row.
    Those kw rows are consecutive in memory, so row r of Q is the run of kw*C numbers that
    starts at element r*C of F: a view whose rows overlap (row stride C, row length kw*C)."""
    xp = get_array_module(flat)
    c = flat.shape[1]
    item = flat.dtype.itemsize
    if not flat.flags.c_contiguous:
        flat = xp.ascontiguousarray(flat)
    return as_strided(flat, (flat.shape[0] - (kw - 1), kw * c), (c * item, item))


def row_patches(flat, kw):
    """Q (R - kw + 1, kw*C) of a C-contiguous matrix F (R, C), :func:`overlapping_rows`
    copied: one copy of the view, in runs of kw*C numbers (BLAS cannot take the view itself: a
    leading dimension shorter than a row).  Copying the kw blocks of C columns one at a time
    would copy in runs of C, 2.4x slower on stage 1's grids (docs/speed.md, "The convolution
    algorithms, one table")."""
    xp = get_array_module(flat)
    overlapping = overlapping_rows(flat, kw)
    out = xp.empty(overlapping.shape, dtype=flat.dtype)

    def gather(part):
        out[part] = overlapping[part]

    parallel_slices(gather, out.shape[0], out.size, xp)
    return out


def weight_gradient_shifted(x_flat, dy_flat, h, k):
    """dL/dW (C_out, k, k, C_in) of the shifted correlation of the grid x_flat (C_in columns,
    h-row images) from dy_flat, the upstream gradient on the same grid (C_out columns): k GEMMs
    over row patches (see the module docstring).  A view of (k, k, C_in, C_out) memory, or
    for a large gradient of (k, C_out, k, C_in) memory: runs of k*C_in as in the weight's.

    On a grid of several blocks (:func:`position_blocks`, with rows of k*C_in patch and C_out
    gradient numbers) the sums run a block of positions at a time (:func:`gradient_in_blocks`),
    else over the whole grid's row patches (:func:`gradient_in_long_sums`)."""
    c, c_out = x_flat.shape[1], dy_flat.shape[1]
    p = (k - 1) // 2
    positions = x_flat.shape[0] - 2 * p
    d_grid = dy_flat[p:p + positions]                           # dY at the grid positions
    # Computed transposed, Q^T dY (k*C_in, C_out): the same products, faster on stage 1's
    # shapes; a large gradient as dY^T Q (C_out, k*C_in), rows of the weight's memory order
    # (im2col.gradient_transposed; docs/speed.md, "The convolution algorithms, one table").
    transposed = gradient_transposed(k * k * c, c_out)
    bounds = position_blocks(positions, k * c, c_out, x_flat)
    if len(bounds) > 2:
        dw = gradient_in_blocks(x_flat, d_grid, h, k, bounds, transposed)
    else:
        dw = gradient_in_long_sums(x_flat, d_grid, h, k, transposed)
    if transposed:
        return dw.reshape(k, k, c, c_out).transpose(3, 0, 1, 2)
    return dw.reshape(k, c_out, k, c).transpose(1, 0, 2, 3)


def gradient_in_long_sums(x_flat, d_grid, h, k, transposed):
    """The k kernel rows' gradients (k, k*C_in, C_out), or transposed (k, C_out, k*C_in), from
    the whole grid's row patches Q (:func:`row_patches`), each a long sum into a small output
    cut into fixed parts on the runtime's threads (scratchnet.runtime.blas.summed_matmul)."""
    xp = get_array_module(x_flat, d_grid)
    c, c_out = x_flat.shape[1], d_grid.shape[1]
    p = (k - 1) // 2
    r = d_grid.shape[0] // h
    patches = row_patches(x_flat, k)                            # Q[g] = F[g .. g + k - 1]
    dw = xp.empty((k, k * c, c_out) if transposed else (k, c_out, k * c), dtype=x_flat.dtype)
    for a, i0, i1 in row_blocks(h, k):
        if i1 <= i0:
            dw[a] = 0
            continue
        start = (i0 + a - p) * r
        q, d = patches[start:start + (i1 - i0) * r], d_grid[i0 * r:i1 * r]
        if transposed:
            blas.summed_matmul(q.T, d, out=dw[a])
        else:
            blas.summed_matmul(d.T, q, out=dw[a])
    return dw


def gradient_in_blocks(x_flat, d_grid, h, k, bounds, transposed):
    """The k kernel rows' gradients, as :func:`gradient_in_long_sums`, a block of grid
    positions (``bounds``) at a time: each block's row patches for kernel row a, the rows
    (a - p) R further on, are gathered into a buffer of the block's size and multiplied there
    at once, on one core (blas.one_thread_products), into the block's part of the sum; the
    parts are added in block order.  The whole grid's patches, k*C_in numbers a position,
    are then never written to memory and read back k times."""
    xp = get_array_module(x_flat, d_grid)
    c, c_out = x_flat.shape[1], d_grid.shape[1]
    p = (k - 1) // 2
    r = d_grid.shape[0] // h
    overlapping = overlapping_rows(x_flat, k)
    blocks = len(bounds) - 1
    parts = xp.zeros((blocks, k) + ((k * c, c_out) if transposed else (c_out, k * c)),
                     dtype=x_flat.dtype)
    kernel_rows = row_blocks(h, k)

    def block_sums(part, product):
        patches = xp.empty((max(b - a for a, b in zip(bounds, bounds[1:])), k * c),
                           dtype=x_flat.dtype)
        for j in range(part.start, part.stop):
            for a, i0, i1 in kernel_rows:
                lo, hi = max(bounds[j], i0 * r), min(bounds[j + 1], i1 * r)
                if hi <= lo:
                    continue
                q = patches[:hi - lo]
                start = lo + (a - p) * r                    # Q's row for position lo
                q[...] = overlapping[start:start + hi - lo]
                if transposed:
                    product(q.T, d_grid[lo:hi], parts[j, a])
                else:
                    product(d_grid[lo:hi].T, q, parts[j, a])

    blas.one_thread_products(block_sums, blocks, d_grid.shape[0] * k * c)
    return blas.sum_in_order(parts)


def crop(y, n, h, w, bias=None, out=None):
    """The C-contiguous (N, h, w, C) convolution in Y (H*N*Wq, C), grid positions with j < w,
    plus ``bias`` (C,); written into ``out`` when given."""
    xp = get_array_module(y)
    c = y.shape[1]
    rows = y.reshape(h, n, -1, c)
    if out is None:
        out = xp.empty((n, h, w, c), dtype=y.dtype)
    # The bias repeated along an image row, (w, C): the additions then run in loops of w*C
    # numbers, not C (scratchnet.kernels.long_rows).
    row_bias = None if bias is None else xp.tile(bias, (w, 1))

    def copy(part):
        images = rows[:, part, :w].transpose(1, 0, 2, 3)
        if bias is None:
            out[part] = images
        else:
            xp.add(images, row_bias, out=out[part])

    parallel_slices(copy, n, out.size, xp)
    return out


def crop_rows(y, out, q0, q1, row_bias=None):
    """:func:`crop` of image rows q0..q1-1 of the grid alone: out[n, i] = the first w grid
    positions of image row q = i N + n of Y (H*N*Wq, C), plus ``row_bias`` (the bias repeated
    w times, (w, C)), for out (N, h, w, C); one copy for each image row i they meet."""
    xp = get_array_module(y)
    n, h, w, c = out.shape
    rows = y.reshape(h, n, -1, c)
    for i in range(q0 // n, (q1 - 1) // n + 1) if q1 > q0 else ():
        a, b = max(q0 - i * n, 0), min(q1 - i * n, n)
        if row_bias is None:
            out[a:b, i] = rows[i, a:b, :w]
        else:
            xp.add(rows[i, a:b, :w], row_bias, out=out[a:b, i])


class Saved(NamedTuple):
    """The input's grid, its shape, the weight (a reference), the bias presence, padding."""
    grid: object
    x_shape: tuple
    weight: object
    has_bias: bool
    padding: int


def forward(x, w, b, stride, padding):
    """(y (N, C_out, H, W), channels-last behind the NCHW view; saved), for stride 1 and
    "same" padding (conv_policy.can_run says where)."""
    xp = get_array_module(x)
    n, _, h, wd = x.shape
    grid = to_grid(x, padding)
    y = xp.empty((n, h, wd, w.shape[0]), dtype=x.dtype)
    correlate_shifted(grid, h, w, cropped=(y, b))
    return y.transpose(0, 3, 1, 2), Saved(grid, x.shape, w, b is not None, padding)


def backward(dy, saved, needs_input_grad=True):
    """(dL/dx or None, dL/dW, dL/db or None): dy on its own grid serves both dL/dW (dY at
    the grid positions) and dL/dx (the shifted sum over it with the flipped kernel)."""
    xp = get_array_module(dy)
    w, p = saved.weight, saved.padding
    n, c, h, wd = saved.x_shape
    kh = w.shape[2]
    db = output_rows(dy).sum(axis=0) if saved.has_bias else None
    dy_grid = to_grid(dy, kh - 1 - p)
    dw = weight_gradient_shifted(saved.grid, dy_grid, h, kh)
    dx = None
    if needs_input_grad:
        flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # W~ (C_in, C_out, kh, kw)
        dx = xp.empty((n, h, wd, c), dtype=dy.dtype)
        correlate_shifted(dy_grid, h, flipped, cropped=(dx, None))
        dx = dx.transpose(0, 3, 1, 2)
    return dx, dw.transpose(0, 3, 1, 2), db
