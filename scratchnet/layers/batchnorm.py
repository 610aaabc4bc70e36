"""Batch normalisation over the (N, H, W) axes of an NCHW tensor."""
import numpy as np

from ..kernels.batchnorm import (affine, channels_matrix, column_dots, column_sums,
                                 from_channels_matrix, input_gradient, subtract_columns)
from ..runtime.backend import get_array_module
from .base import Layer, Parameter, check_input


class BatchNorm2d(Layer):
    """Per channel c, over the M = N*H*W values x_m of that channel:

        mu = (1/M) sum_m x_m,   var = (1/M) sum_m (x_m - mu)^2     (biased, as PyTorch)
        inv_std = 1 / sqrt(var + eps),   xhat_m = (x_m - mu) * inv_std,   y_m = gamma xhat_m + beta

    Training uses the batch statistics and updates the buffers
        running_mean <- (1 - momentum) running_mean + momentum mu
        running_var  <- (1 - momentum) running_var  + momentum var * M / (M - 1)
    (the unbiased variance, as PyTorch, because the running value estimates the population
    variance that eval mode divides by).  Eval uses the running statistics: y is then affine in x.

    Backward (training).  dbeta = sum_m dy_m,  dgamma = sum_m dy_m xhat_m,  dxhat = gamma dy.
    xhat_m depends on x_k directly and through mu and var:
        d mu / d x_k = 1/M,   d var / d x_k = 2 (x_k - mu) / M,
        d xhat_m / d x_k = inv_std (delta_mk - 1/M) - (x_m - mu) inv_std^3 (x_k - mu) / M
                         = (inv_std / M) (M delta_mk - 1 - xhat_m xhat_k).
    Contracting with dxhat:
        dx_k = (inv_std / M) (M dxhat_k - sum_m dxhat_m - xhat_k sum_m dxhat_m xhat_m)
             = gamma inv_std (dy_k - dbeta / M - xhat_k dgamma / M),
    the last line because sum dxhat = gamma dbeta and sum dxhat xhat = gamma dgamma.
    Training keeps c = x - mu rather than xhat = c inv_std: the forward pass then writes
    y = c (gamma inv_std) + beta without a pass to form xhat, and backward uses xhat through
    that product, dgamma = inv_std sum_m dy_m c_m and xhat_k dgamma = c_k inv_std dgamma.
    Backward (eval).  dx = gamma inv_std_running dy.
    The element-wise passes run over rows of many channels at once, the per-channel vectors
    repeated to match (scratchnet.kernels.long_rows), on pieces shared by the CPU's cores
    (scratchnet.runtime.parallel); the sums over M run whole, so their rounding never depends on it.
    """

    _buffers = ("running_mean", "running_var")

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        self.running_mean = np.zeros(num_features, dtype=np.float32)
        self.running_var = np.ones(num_features, dtype=np.float32)
        self._cache = None

    def forward(self, x):
        beta = self.bias.data
        if self.training:  # centre checks x
            y = affine(channels_matrix(self.centre(x)), self.batch_scale(), beta)
        else:
            check_input(x, 4, "BatchNorm2d", self.num_features)
            xp = get_array_module(x)
            x2 = channels_matrix(x)
            inv_std = 1.0 / xp.sqrt(self.running_var + self.eps)
            scale = self.running_scale(inv_std)
            y = affine(x2, scale, beta - self.running_mean * scale)
            # Keep x itself (no copy): xhat is only needed if backward is ever called in eval.
            self._cache = (False, x2, inv_std, x.shape)
        return from_channels_matrix(y, x.shape)

    def centre(self, x):
        """Training mode: the batch statistics of forward (and its update of the running ones),
        kept for backward, returning c = x - mu (an NCHW view of channels-last memory) instead
        of y = c * batch_scale() + beta, for a caller that applies the affine map itself
        (:meth:`scale_shift`; scratchnet.layers.residual.Stem)."""
        check_input(x, 4, "BatchNorm2d", self.num_features)
        xp = get_array_module(x)
        x2 = channels_matrix(x)
        m = x2.shape[0]
        if m < 2:
            raise ValueError("BatchNorm2d in training mode needs more than one value per "
                             f"channel, got input of shape {tuple(x.shape)}")
        mu = column_sums(x2) / m
        centred = subtract_columns(x2, mu)
        var = column_dots(centred, centred) / m
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        mom = self.momentum
        self.running_mean *= 1 - mom
        self.running_mean += mom * mu
        self.running_var *= 1 - mom
        self.running_var += (mom * m / (m - 1)) * var
        self._cache = (True, centred, inv_std, x.shape)
        return from_channels_matrix(centred, x.shape)

    def batch_scale(self):
        """gamma * inv_std of the batch :meth:`centre` (or a training forward) last saw."""
        return self.weight.data * self._cache[2]

    def running_scale(self, inv_std=None):
        """gamma / sqrt(running_var + eps): eval mode's scale (``inv_std`` if already known)."""
        if inv_std is None:
            inv_std = 1.0 / get_array_module(self.running_var).sqrt(self.running_var + self.eps)
        return self.weight.data * inv_std

    def scale_shift(self, c):
        """y = c * batch_scale() + beta for any c (N, C, h, w): the forward's affine map."""
        return from_channels_matrix(affine(channels_matrix(c), self.batch_scale(),
                                           self.bias.data), c.shape)

    def backward(self, dy):
        trained, saved, inv_std, shape = self._cache  # saved: x - mu (train) or x (eval)
        dy2 = channels_matrix(dy)
        if not trained:  # eval: y = gamma * (x - running_mean) * inv_std + beta
            self.bias.grad += column_sums(dy2)
            self.weight.grad += column_dots(dy2, (saved - self.running_mean) * inv_std)
            self._cache = None
            return from_channels_matrix(dy2 * (self.weight.data * inv_std), shape)
        dbeta, dgamma = self.parameter_gradients(dy2, saved)
        return self.input_gradient(dbeta, dgamma, dy2)

    def parameter_gradients(self, dy2, centred2):
        """Training: dbeta = sum_m dy_m and dgamma = inv_std sum_m dy_m c_m over the rows of
        the (M', C) matrices dy2 and centred2, added into the gradients and returned.  They are
        dy and c themselves in backward; any rows whose products have the same sums will do
        (the pooled ones, in scratchnet.layers.residual.Stem)."""
        dbeta = column_sums(dy2)
        dgamma = self._cache[2] * column_dots(dy2, centred2)
        self.bias.grad += dbeta
        self.weight.grad += dgamma
        return dbeta, dgamma

    def input_gradient(self, dbeta, dgamma, dy2=None):
        """Training: dx = gamma inv_std (dy - dbeta / M - c inv_std dgamma / M) from the sums
        dbeta = sum dy and dgamma = inv_std sum dy c (already added into the gradients) and
        dy2 = dy as an (M, C) matrix; with dy2 None, only the terms without dy,
        -(c inv_std dgamma + dbeta) gamma inv_std / M, for a caller that adds the dy term
        itself (scratchnet.layers.residual.Stem).  Consumes the cache."""
        _, centred, inv_std, shape = self._cache
        dx = input_gradient(centred, inv_std, self.weight.data * inv_std, dbeta, dgamma, dy2)
        self._cache = None
        return from_channels_matrix(dx, shape)
