"""The tail of a network's stem, BatchNorm -> max-pool -> ReLU, computed as one kernel with
BatchNorm's affine map after the pool, on a quarter of the values, whenever that is the same
function.  Tested against the three layers in their own order (tests/test_gradients.py).

Why that is the same function.  In training BN(z) = s (z - mu) + beta per channel, with
s = gamma / sqrt(var + eps) from the batch statistics of the whole map.  For s > 0 the map
c -> s c + beta is increasing, so on every window

    max_m (s c_m + beta) = s max_m c_m + beta,

and the rounded values agree too (rounding is monotone): pool(BN(z)) = s pool(c) + beta, with
c = z - mu.  The gradient routes to the same first maximum, except where two different c round
to the same s c + beta: then this routes to the first largest c, the other order to the first
of the ties, both subgradients of the same function.  In eval mode BatchNorm is the fixed map
z s + (beta - running_mean s), s = gamma / sqrt(running_var + eps), increasing under the same
condition, so the pool runs first there too.  When some channel has s <= 0, or on CuPy arrays
(where reading the sign of s back to the host would make every step wait for the GPU), the
three run in their own order: BN, pool, ReLU.

Backward, pool first, in training.  With p = pool(c), y = ReLU(s p + beta) and d the gradient
at s p + beta (ReLU's mask applied), BatchNorm needs dyb, the gradient at its own full-size
output, which is d added onto each window's maximum, P^T d.  Its sums are over the pooled
values:

    sum_m dyb_m = sum d,    sum_m dyb_m c_m = sum_windows d p    (each d meets its c),

and dz = s (dyb - dbeta / M - c inv_std dgamma / M) is the terms without dyb, a pass over the
map, plus s d added onto the maxima: the pool's own backward pass, into dz.  Neither
BatchNorm's output nor the pool's full-size gradient is formed.  BatchNorm's derivation and
its synchronised form (``group``) are scratchnet.layers.batchnorm's.
"""
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..runtime.backend import get_array_module
from .batchnorm import (affine_map, batch_statistics, channels_matrix, eval_backward,
                        from_channels_matrix, input_gradient, parameter_sums, scale_columns,
                        summed_over, update_running)
from .elementwise import masked, rectify
from .pooling import max_pool_backward, max_pool_forward


@dataclass
class BatchNormParts:
    """A BatchNorm2d's arrays and settings, as the kernel reads them (the running statistics
    are updated in place in training)."""
    gamma: Any
    beta: Any
    running_mean: Any
    running_var: Any
    eps: float
    momentum: float
    group: Optional[Any] = None   # the ranks whose statistics are pooled (synchronised BN)


@dataclass
class Saved:
    """What backward needs: the order taken, BatchNorm's values, the pool's and ReLU's."""
    training: bool
    pool_first: bool
    bn_input: Any        # training: c = z - mu, as an (M, C) matrix; eval: the BN's input
    inv_std: Any
    scale: Any           # gamma inv_std
    shape: tuple         # z's shape
    m: Optional[int]     # the count of the statistics (every rank's when synchronised)
    pooled: Any          # the pool's output (training, pool first: its c)
    pool: Any            # the pool's context
    relu: Any            # ReLU's mask (training) or output (eval)


def takes_pool_first(scale):
    """Whether the affine map may run after the pool: every channel's scale positive, on the
    host (on a GPU the sign would be read back at every step)."""
    xp = get_array_module(scale)
    return xp is np and bool(xp.all(scale > 0))


def forward(z, bn, k, s, p, training):
    """y = ReLU(maxpool_{k, s, p}(BN(z))) for z (N, C, H, W), and what :func:`backward` needs;
    ``bn``: :class:`BatchNormParts`."""
    if training:
        z2 = channels_matrix(z)
        centred, mu, var, inv_std, m = batch_statistics(z2, bn.eps, bn.group)
        update_running(bn.running_mean, bn.running_var, mu, var, m, bn.momentum)
        scale, shift = bn.gamma * inv_std, bn.beta
        c = from_channels_matrix(centred, z.shape)
        bn_input = centred
    else:
        xp = get_array_module(z)
        inv_std = 1.0 / xp.sqrt(bn.running_var + bn.eps)
        scale, m, c, bn_input = bn.gamma * inv_std, None, z, z
        shift = bn.beta - bn.running_mean * scale
    first = takes_pool_first(scale)
    if first:  # pool, then the affine map on the pooled values
        pooled, pool = max_pool_forward(c, k, s, p, training)
        y, relu = _relu(affine_map(pooled, scale, shift), training)
    else:      # the layers' own order
        pooled, pool = max_pool_forward(affine_map(c, scale, shift), k, s, p, training)
        y, relu = _relu(pooled, training)
        pooled = None
    if not training and first:
        bn_input = pooled  # eval's BatchNorm read the pooled values
    return y, Saved(training, first, bn_input, inv_std, scale, z.shape, m, pooled, pool, relu)


def _relu(x, training):
    y, mask = rectify(x, with_mask=training)
    return y, (mask if training else y)


def backward(dy, saved, bn):
    """(dL/dz, dL/dgamma, dL/dbeta) from dL/dy and :func:`forward`'s ``saved``."""
    d = masked(dy, saved.relu if saved.training else saved.relu > 0)  # through the ReLU
    if not saved.training:
        return _eval_backward(d, saved, bn)
    centred, inv_std, scale, shape, m = (saved.bn_input, saved.inv_std, saved.scale,
                                         saved.shape, saved.m)
    if not saved.pool_first:  # BatchNorm's backward at its own output
        dyb = channels_matrix(max_pool_backward(d, saved.pool))
        dbeta, dgamma = parameter_sums(dyb, centred, inv_std)
        total_dbeta, total_dgamma = summed_over(bn.group, dbeta, dgamma)
        dz = input_gradient(centred, inv_std, scale, total_dbeta, total_dgamma, dyb, m)
        return from_channels_matrix(dz, shape), dgamma, dbeta
    d2 = channels_matrix(d)
    dbeta, dgamma = parameter_sums(d2, channels_matrix(saved.pooled), inv_std)
    total_dbeta, total_dgamma = summed_over(bn.group, dbeta, dgamma)  # every rank's, if synced
    dz = from_channels_matrix(input_gradient(centred, inv_std, scale, total_dbeta,
                                             total_dgamma, m=m), shape)  # terms without dy
    scaled = scale_columns(d2, scale)                                    # s d, in long rows
    max_pool_backward(from_channels_matrix(scaled, saved.pooled.shape), saved.pool, into=dz)
    return dz, dgamma, dbeta


def _eval_backward(d, saved, bn):
    """Eval mode, where BatchNorm is the fixed map x s + (beta - running_mean s)."""
    if saved.pool_first:  # BN's input was the pooled values; the pool's gradient after it
        dbeta, dgamma, dx = _eval_batchnorm_backward(d, saved.bn_input, saved, bn)
        return max_pool_backward(dx, saved.pool), dgamma, dbeta
    dyb = max_pool_backward(d, saved.pool)
    dbeta, dgamma, dz = _eval_batchnorm_backward(dyb, saved.bn_input, saved, bn)
    return dz, dgamma, dbeta


def _eval_batchnorm_backward(dy, x, saved, bn):
    dbeta, dgamma, dx = eval_backward(channels_matrix(dy), channels_matrix(x), bn.running_mean,
                                      saved.inv_std, saved.scale)
    return dbeta, dgamma, from_channels_matrix(dx, dy.shape)
