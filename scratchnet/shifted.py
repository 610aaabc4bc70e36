"""Stride-1 "same" convolution without a patch matrix: a sum of k*k shifted GEMMs.

The grid.  Lay the channels-last images out one after another, each followed by p = (k-1)/2
zero columns on every row and p zero rows, and flatten: a matrix F with one row of C numbers
per grid position,

    F[lead + (n*Hq + i)*Wq + j] = x[n, :, i, j]   (i < H, j < W),  zero elsewhere,
    Hq = H + p,  Wq = W + p,  lead = p*Wq + p zero rows before the first image and after the last.

Neighbours share their padding: the p zero columns at the end of a row are the right border of
that row and the left border of the next, and the p zero rows after an image are its bottom
border and the top border of the next image.  So for a grid position g = (n*Hq + i)*Wq + j
and a kernel offset (a, b), 0 <= a, b < k, the row F[g + a*Wq + b] = F[lead + g + (a-p)*Wq +
(b-p)] holds x[n, :, i+a-p, j+b-p] when that pixel is inside image n and zero otherwise
(-p <= j+b-p < 0 lands on the previous row's zero columns, W <= j+b-p < W+p on this row's;
rows above or below the image land on zero rows, or on the lead zeros before the first image
and after the last).  A stride-1 cross-correlation with padding p,

    y[n, i, j, o] = sum_{a, b, c} x[n, c, i+a-p, j+b-p] W[o, c, a, b]   (outside pixels 0),

is therefore, for every grid position g,

    Y[g] = sum_{a, b} F[g + a*Wq + b] W_ab^T,        W_ab = W[:, :, a, b]   (C_out, C_in),

k*k GEMMs whose left factors F[a*Wq + b : a*Wq + b + G] (G = N*Hq*Wq) are contiguous slices
of F itself: no im2col copy, and every GEMM adds into the same output.  Y is computed at every
grid position; those with i < H and j < W are the convolution, the zero positions (i >= H or
j >= W) are computed and thrown away.  That waste, Hq*Wq / (H*W) - 1 of the FLOPs, is half
what a separate border around each image costs ((H+2p)(W+2p) / (H*W) - 1): 8% on a 16 x 63
map with 3 x 3 kernels, 16% on 8 x 32, 41% on 4 x 8.  Conv2d takes this path where it is small
(MAX_WASTE).

The weight gradient reads the same rows.  With dY on the grid (dY[g] = dy at pixel (n, i, j),
zero at the zero positions: the rows of dy's own grid after its lead),

    dL/dW_ab = sum_g F[g + a*Wq + b]^T dY[g]                           (C_in, C_out)

For one kernel row a the k offsets b are neighbouring rows of F, so with the row patches
Q[r] = (F[r], F[r+1], ..., F[r+k-1]) (one row of k*C numbers, a gather k times the input, not
k*k times as im2col) the k gradients of kernel row a are one GEMM,
dL/dW_a^T = Q[a*Wq : a*Wq + G]^T dY  (k*C_in, C_out): k GEMMs in all.
dL/dx is the correlation of dy with the flipped, channel-transposed kernel at padding
k-1-p = p (Conv2d derives it): the same shifted sum over dy's grid.
"""
from .backend import get_array_module
from .parallel import parallel_slices

try:
    from scipy.linalg.blas import get_blas_funcs
except ImportError:  # SciPy is a dependency; without it the sums use a temporary instead
    get_blas_funcs = None

# Conv2d sums shifted GEMMs when this share of the grid, or less, is thrown away.  Timed
# against im2col (3x3, batch 32, training step of one layer): 0.78x on a 16 x 63 map of 32
# channels (8% waste), 0.84x on 16 x 32 x 64 (10%), but 1.04x on 8 x 32 x 64 (16%) and 1.19x
# on 8 x 16 x 128 (20%), where im2col's one GEMM with K = 9C beats nine with K = C.
MAX_WASTE = 0.125


def grid_geometry(h, w, p):
    """(Hq, Wq, lead) of the grid of an h x w map with p shared zero rows and columns."""
    return h + p, w + p, p * (w + p) + p


def grid_waste(h, w, p):
    """Share of the grid's positions that the shifted sum computes and throws away."""
    hq, wq, _ = grid_geometry(h, w, p)
    return hq * wq / (h * w) - 1.0


def to_grid(x, p):
    """F (lead + N*Hq*Wq + lead, C): x (N, C, H, W) laid out on the grid (module docstring)."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    hq, wq, lead = grid_geometry(h, w, p)
    positions = n * hq * wq
    flat = xp.empty((2 * lead + positions, c), dtype=x.dtype)
    flat[:lead] = 0
    flat[lead + positions:] = 0
    grid = flat[lead:lead + positions].reshape(n, hq, wq, c)
    x_nhwc = x.transpose(0, 2, 3, 1)

    def fill(part):
        images = grid[part]
        images[:, h:] = 0
        images[:, :h, w:] = 0
        images[:, :h, :w] = x_nhwc[part]

    parallel_slices(fill, n, positions * c, xp)
    return flat


def matmul_add(out, a, b):
    """out += a @ b, without a temporary on NumPy: BLAS gemm with beta = 1.

    BLAS is column-major: the C-contiguous out (R, O) is the column-major out^T (O, R), and
    out^T += b^T a^T is one gemm call on transposed views, which copies nothing when a is
    C-contiguous and out is a C-contiguous block of rows."""
    xp = get_array_module(out, a, b)
    if xp.__name__ != "numpy" or get_blas_funcs is None or not out.flags.c_contiguous:
        out += a @ b
        return out
    gemm = get_blas_funcs("gemm", (out, a, b))
    result = gemm(1.0, xp.asfortranarray(b.T), a.T, beta=1.0, c=out.T, overwrite_c=True)
    if not xp.shares_memory(result, out):  # the wrapper had to copy: keep the sum anyway
        out[...] = result.T
    return out


def correlate_shifted(flat, wq, weight):
    """Cross-correlation of a grid F (from :func:`to_grid`, row width Wq) with weight
    (C_out, C, k, k), stride 1, padding (k-1)/2: returns Y (N*Hq*Wq, C_out), one row per grid
    position (see the module docstring); the rows of zero positions are unspecified."""
    xp = get_array_module(flat)
    c_out, _, kh, kw = weight.shape
    positions = flat.shape[0] - ((kh - 1) * wq + kw - 1)
    y = xp.empty((positions, c_out), dtype=flat.dtype)
    # The first offset writes the rows, the others add into them.
    xp.matmul(flat[:positions], weight[:, :, 0, 0].T, out=y)
    for a in range(kh):
        for b in range(kw):
            if a or b:
                off = a * wq + b
                matmul_add(y, flat[off:off + positions], weight[:, :, a, b].T)
    return y


def row_patches(flat, kw):
    """Q (R - kw + 1, kw*C) of a matrix F (R, C): row r is rows r, r+1, ..., r+kw-1 of F side
    by side, the kw horizontal offsets of a kernel row."""
    xp = get_array_module(flat)
    c = flat.shape[1]
    rows = flat.shape[0] - (kw - 1)
    out = xp.empty((rows, kw * c), dtype=flat.dtype)

    def gather(part):
        for b in range(kw):
            out[part, b * c:(b + 1) * c] = flat[part.start + b:part.stop + b]

    parallel_slices(gather, rows, out.size, xp)
    return out


def weight_gradient_shifted(x_flat, dy_flat, wq, kh, kw):
    """dL/dW (C_out, kh, kw, C_in) of the shifted correlation of the grid x_flat (C_in
    columns) from dy_flat, the upstream gradient on the same grid (C_out columns): kh GEMMs
    over row patches (see the module docstring).  A view of (kh, kw, C_in, C_out) memory."""
    xp = get_array_module(x_flat, dy_flat)
    c, c_out = x_flat.shape[1], dy_flat.shape[1]
    positions = x_flat.shape[0] - ((kh - 1) * wq + kw - 1)
    lead = (x_flat.shape[0] - positions) // 2
    d_grid = dy_flat[lead:lead + positions]                     # dY at the grid positions
    patches = row_patches(x_flat, kw)
    # Computed transposed, Q^T dY (kw*C_in, C_out): measured faster than dY^T Q on stage 1's
    # shapes (7 against 10 ms), the same products.
    dw_t = xp.empty((kh, kw * c, c_out), dtype=x_flat.dtype)
    for a in range(kh):
        xp.matmul(patches[a * wq:a * wq + positions].T, d_grid, out=dw_t[a])
    return dw_t.reshape(kh, kw, c, c_out).transpose(3, 0, 1, 2)


def crop(y, h, w, bias=None):
    """The C-contiguous top-left (N, h, w, C) block of y (N, Hq, Wq, C), plus ``bias`` (C,)."""
    xp = get_array_module(y)
    out = xp.empty((y.shape[0], h, w, y.shape[3]), dtype=y.dtype)

    def copy(part):
        if bias is None:
            out[part] = y[part, :h, :w]
        else:
            xp.add(y[part, :h, :w], bias, out=out[part])

    parallel_slices(copy, y.shape[0], out.size, xp)
    return out
