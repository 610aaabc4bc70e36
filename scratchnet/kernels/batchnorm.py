"""BatchNorm's kernels: a channel's values as a column of an (N*H*W, C) matrix (free for
channels-last memory), its sums as matrix products, and the per-channel affine map over long
rows (scratchnet.kernels.long_rows).  The derivation is BatchNorm2d's
(scratchnet.layers.batchnorm)."""
from ..runtime.backend import get_array_module
from ..runtime.blas import vector_matmul
from .long_rows import map_long_rows


def channels_matrix(x):
    """x (N, C, H, W) as an (N*H*W, C) matrix: a free view for channels-last memory."""
    xp = get_array_module(x)
    return xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(-1, x.shape[1])


def column_sums(a):
    """sum_m a[m, c] as the product 1^T a: one matrix-vector product, which on thin (M, C)
    matrices runs several times faster than a reduction along axis 0."""
    xp = get_array_module(a)
    return vector_matmul(xp.ones(a.shape[0], dtype=a.dtype), a)


def column_dots(a, b):
    """sum_m a[m, c] b[m, c] in one pass, without forming the product a * b."""
    xp = get_array_module(a)
    return xp.einsum("mc,mc->c", a, b)


def affine(a, scale, shift):
    """a * scale + shift with per-column scale and shift, over long rows shared by the CPU's
    cores (scratchnet.kernels.long_rows)."""
    xp = get_array_module(a)

    def rows_affine(out, a, scale, shift):
        xp.multiply(a, scale, out=out)
        out += shift

    return map_long_rows(rows_affine, xp.empty_like(a), [a], [scale, shift])


def from_channels_matrix(m, shape):
    """Inverse of :func:`channels_matrix`: an NCHW view of channels-last memory."""
    n, c, h, w = shape
    return m.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def subtract_columns(a, v):
    """a - v with a per-column v, over long rows."""
    xp = get_array_module(a)
    return map_long_rows(lambda out, a, v: xp.subtract(a, v, out=out), xp.empty_like(a), [a],
                         [v])


def input_gradient(centred, inv_std, scale, dbeta, dgamma, dy2=None, m=None):
    """Training's dx = scale (dy - dbeta / M - c inv_std dgamma / M), scale = gamma inv_std, as
    an (M, C) matrix from the centred values c = x - mu; with dy2 None only the terms without
    dy (for a caller that adds scale dy itself), -(c inv_std dgamma + dbeta) scale / M.  The
    two terms without dy are formed in c's own memory, which the caller no longer needs.
    ``m``: the count the statistics were taken over (default: c's rows; all the ranks' when
    they were synchronised, with dbeta and dgamma summed over the ranks too)."""
    xp = get_array_module(centred)
    m = centred.shape[0] if m is None else m
    per_c, constant = scale * inv_std * dgamma / m, scale * dbeta / m

    def correction(c, per_c, constant):  # (c inv_std dgamma + dbeta) gamma inv_std / M
        c *= per_c
        c += constant
        return c

    def without_dy(out, c, per_c, constant):
        xp.negative(correction(c, per_c, constant), out=out)

    def with_dy(out, c, dy, per_c, constant, scale):
        xp.multiply(dy, scale, out=out)
        out -= correction(c, per_c, constant)

    if dy2 is None:
        return map_long_rows(without_dy, xp.empty_like(centred), [centred], [per_c, constant])
    return map_long_rows(with_dy, xp.empty_like(centred), [centred, dy2],
                         [per_c, constant, scale])


def batch_statistics(x2, eps, group=None):
    """(c = x - mu, mu, var, inv_std, M) of the columns of an (M, C) matrix: the batch mean,
    the biased variance, 1 / sqrt(var + eps) and the count they were taken over.  With a
    ``group`` (scratchnet.distributed) the sums and the count are every rank's: the batch is
    the union of the ranks' shards, in two passes as alone (the mean, then the squares of the
    deviations from it)."""
    xp = get_array_module(x2)
    m, sums = x2.shape[0], column_sums(x2)
    if group is not None:
        m, sums = group.count(m), group.sum(sums)
    mu = sums / m
    centred = subtract_columns(x2, mu)
    squares = column_dots(centred, centred)
    var = (squares if group is None else group.sum(squares)) / m
    return centred, mu, var, 1.0 / xp.sqrt(var + eps), m


def update_running(running_mean, running_var, mu, var, m, momentum):
    """In place: r <- (1 - momentum) r + momentum * statistic, with the unbiased variance
    var * M / (M - 1) for the running variance."""
    running_mean *= 1 - momentum
    running_mean += momentum * mu
    running_var *= 1 - momentum
    running_var += (momentum * m / (m - 1)) * var


def parameter_sums(dy2, centred2, inv_std):
    """(dbeta, dgamma) = (sum_m dy_m, inv_std sum_m dy_m c_m) over the rows of (M', C)
    matrices: dy and c themselves, or any rows whose products have the same sums (the pooled
    ones of scratchnet.kernels.stem)."""
    return column_sums(dy2), inv_std * column_dots(dy2, centred2)


def eval_backward(dy2, x2, running_mean, inv_std, scale):
    """Eval mode's backward, where BatchNorm is the fixed map x scale + (beta - running_mean
    scale): (dbeta, dgamma, dx) = (sum dy, sum dy (x - running_mean) inv_std, dy scale) over
    the rows of (M, C) matrices."""
    return (column_sums(dy2), column_dots(dy2, (x2 - running_mean) * inv_std),
            dy2 * scale)


def summed_over(group, dbeta, dgamma):
    """(dbeta, dgamma) summed over the ranks of ``group`` in one exchange (synchronised
    BatchNorm's backward; scratchnet.layers.batchnorm), or as they are without one."""
    if group is None:
        return dbeta, dgamma
    xp = get_array_module(dbeta)
    both = group.sum(xp.concatenate([dbeta, dgamma]))
    return both[:dbeta.size], both[dbeta.size:]


def affine_map(c, scale, shift):
    """c * scale + shift per channel for c (N, C, h, w) in channels-last memory."""
    return from_channels_matrix(affine(channels_matrix(c), scale, shift), c.shape)


def scale_columns(a, scale):
    """a * scale with a per-column scale, over long rows."""
    xp = get_array_module(a)
    return map_long_rows(lambda out, a, s: xp.multiply(a, s, out=out), xp.empty_like(a), [a],
                         [scale])
