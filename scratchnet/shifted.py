"""Stride-1 convolution without a patch matrix: a sum of kh*kw shifted GEMMs.

Flatten a zero-padded channels-last input xpad (N, Hp, Wp, C) to the matrix F (N*Hp*Wp, C),
row r = (n*Hp + u)*Wp + v.  Moving a kernel offset (a, b) away from pixel (u, v) moves the row
index by a constant, off(a, b) = a*Wp + b, whatever the pixel.  So a cross-correlation

    y[n, i, j, o] = sum_{a, b, c} xpad[n, i + a, j + b, c] * W[o, c, a, b]

reads, for every output row r = (n*Hp + i)*Wp + j of the padded grid,

    Y[r] = sum_{a, b} F[r + off(a, b)] W_ab^T,        W_ab = W[:, :, a, b]   (C_out, C_in)

i.e. kh*kw GEMMs whose left factors F[off : off + R] are contiguous slices of F itself: no
im2col copy, and every GEMM adds into the same output.  The output is computed on the whole
padded grid; the rows with i < Ho and j < Wo are the convolution, the others (the last kh-1
rows and kw-1 columns of each image, where a window runs off the image or wraps into the next
row) are computed and thrown away.  The last valid row is r = R - 1 with
R = N*Hp*Wp - off(kh-1, kw-1), so R rows of output read only rows of F that exist.

The weight gradient reads the same rows.  With dY placed on the padded grid (dY[r] = dy at
output pixel (n, i, j), zero on the thrown-away rows),

    dL/dW_ab = sum_r dY[r]^T F[r + a*Wp + b]                           (C_out, C_in)

For one kernel row a the kw offsets b are neighbouring rows of F, so with the row patches
Q[r] = (F[r], F[r+1], ..., F[r+kw-1]) (one row of kw*C numbers, a gather kw times the input,
not kh*kw times as im2col) the kw gradients of kernel row a are one GEMM,
dL/dW_a = dY[:R]^T Q[a*Wp : a*Wp + R]  (C_out, kw*C_in): kh GEMMs in all.  The dy that Conv2d
pads by p = (k-1)/2 for dL/dx already holds that grid: dy's pixel (i, j) sits at padded (i+p, j+p),
row r + p*Wp + p, and every thrown-away row lands on its zero border.

The price is that waste, Hp*Wp / (Ho*Wo) - 1 of the FLOPs (10% on a 32 x 63 map with
3 x 3 kernels, 88% on 4 x 8); the gain is the im2col copy, kh*kw times the input, and a GEMM
whose operand is kh*kw times thinner.  Conv2d takes this path only where the waste is small.
"""
from .backend import get_array_module
from .parallel import parallel_slices

try:
    from scipy.linalg.blas import get_blas_funcs
except ImportError:  # SciPy is a dependency; without it the sums use a temporary instead
    get_blas_funcs = None

# Conv2d sums shifted GEMMs when this share of the padded grid, or less, is thrown away.
MAX_WASTE = 0.25


def padded_grid_waste(h, w, kh, kw, padding):
    """Share of a padded grid's rows that a stride-1 convolution computes and discards."""
    hp, wp = h + 2 * padding, w + 2 * padding
    return hp * wp / ((hp - kh + 1) * (wp - kw + 1)) - 1.0


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


def correlate_shifted(xpad, weight):
    """Cross-correlation of a padded channels-last xpad (N, Hp, Wp, C) with weight
    (C_out, C, kh, kw), stride 1, on the padded grid: returns Y (N, Hp, Wp, C_out) whose
    [:, :Hp-kh+1, :Wp-kw+1] is the convolution (see the module docstring); the rest is
    unspecified."""
    xp = get_array_module(xpad)
    n, hp, wp, c = xpad.shape
    c_out, _, kh, kw = weight.shape
    flat = xpad.reshape(-1, c)
    rows = flat.shape[0] - ((kh - 1) * wp + kw - 1)
    y = xp.empty((flat.shape[0], c_out), dtype=xpad.dtype)
    valid = y[:rows]
    # The first offset writes the rows, the others add into them.
    xp.matmul(flat[:rows], weight[:, :, 0, 0].T, out=valid)
    for a in range(kh):
        for b in range(kw):
            if a or b:
                off = a * wp + b
                matmul_add(valid, flat[off:off + rows], weight[:, :, a, b].T)
    return y.reshape(n, hp, wp, c_out)


def row_patches(xpad, kw):
    """Q (N*Hp*Wp - kw + 1, kw*C): row r is rows r, r+1, ..., r+kw-1 of the flattened padded
    input F (N*Hp*Wp, C) side by side, the kw horizontal offsets of a kernel row."""
    xp = get_array_module(xpad)
    c = xpad.shape[3]
    flat = xpad.reshape(-1, c)
    rows = flat.shape[0] - (kw - 1)
    out = xp.empty((rows, kw * c), dtype=xpad.dtype)

    def gather(part):
        for b in range(kw):
            out[part, b * c:(b + 1) * c] = flat[part.start + b:part.stop + b]

    parallel_slices(gather, rows, out.size, xp)
    return out


def weight_gradient_shifted(xpad, dypad, kh, kw):
    """dL/dW (C_out, kh, kw, C_in) of the shifted correlation of xpad (N, Hp, Wp, C_in) from
    dypad (N, Hp, Wp, C_out), the upstream gradient zero-padded by p = (k-1)/2 like x: kh
    GEMMs over row patches (see the module docstring).  A view of (kh, kw, C_in, C_out) memory."""
    xp = get_array_module(xpad, dypad)
    n, hp, wp, c = xpad.shape
    c_out = dypad.shape[3]
    p = (kh - 1) // 2
    rows = n * hp * wp - ((kh - 1) * wp + kw - 1)
    start = p * wp + p
    d_grid = dypad.reshape(-1, c_out)[start:start + rows]      # dY on the padded grid
    patches = row_patches(xpad, kw)
    # Computed transposed, Q^T dY (kw*C_in, C_out): measured faster than dY^T Q on stage 1's
    # shapes (7 against 10 ms), the same products.
    dw_t = xp.empty((kh, kw * c, c_out), dtype=xpad.dtype)
    for a in range(kh):
        xp.matmul(patches[a * wp:a * wp + rows].T, d_grid, out=dw_t[a])
    return dw_t.reshape(kh, kw, c, c_out).transpose(3, 0, 1, 2)


def crop(y, h, w, bias=None):
    """The C-contiguous top-left (N, h, w, C) block of y (N, Hp, Wp, C), plus ``bias`` (C,)."""
    xp = get_array_module(y)
    out = xp.empty((y.shape[0], h, w, y.shape[3]), dtype=y.dtype)

    def copy(part):
        if bias is None:
            out[part] = y[part, :h, :w]
        else:
            xp.add(y[part, :h, :w], bias, out=out[part])

    parallel_slices(copy, y.shape[0], out.size, xp)
    return out
