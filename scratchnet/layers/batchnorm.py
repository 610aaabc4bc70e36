"""Batch normalisation over the (N, H, W) axes of an NCHW tensor."""
import numpy as np

from ..kernels.batchnorm import (affine, batch_statistics, channels_matrix, eval_backward,
                                 from_channels_matrix, input_gradient, parameter_sums,
                                 summed_over, update_running)
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

    Synchronised over the ranks of a data-parallel job (``group``, set by
    scratchnet.distributed.DataParallel).  The batch is the union of the ranks' shards, so mu,
    var and M above are sums over every rank's values: the forward pass sums the count, the
    columns and the squared deviations over the ranks.  Each rank's dy is the gradient of the
    one global loss at its own values (scratchnet.distributed), so in dx_k the sums dbeta and
    dgamma run over every rank too.  The parameters' gradients stay this rank's own sums: the
    data-parallel step adds them over the ranks with every other gradient.  Without a group
    (the default) each rank normalises by its own shard's statistics, as PyTorch's DDP does.
    The element-wise passes run over rows of many channels at once, the per-channel vectors
    repeated to match (scratchnet.kernels.long_rows), on pieces shared by the CPU's cores
    (scratchnet.runtime.parallel); the sums over M run whole, so their rounding never depends on it.
    """

    _buffers = ("running_mean", "running_var")
    group = None  # the ranks whose statistics are pooled (scratchnet.distributed), or None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        self.running_mean = np.zeros(num_features, dtype=np.float32)
        self.running_var = np.ones(num_features, dtype=np.float32)
        self._cache = None

    def forward(self, x):
        check_input(x, 4, "BatchNorm2d", self.num_features)
        x2 = channels_matrix(x)
        gamma, beta = self.weight.data, self.bias.data
        if self.training:
            if x2.shape[0] < 2 and self.group is None:
                raise ValueError("BatchNorm2d in training mode needs more than one value per "
                                 f"channel, got input of shape {tuple(x.shape)}")
            centred, mu, var, inv_std, m = batch_statistics(x2, self.eps, self.group)
            update_running(self.running_mean, self.running_var, mu, var, m, self.momentum)
            y = affine(centred, gamma * inv_std, beta)
            self._cache = (True, centred, inv_std, x.shape, m)
        else:
            inv_std = 1.0 / get_array_module(x).sqrt(self.running_var + self.eps)
            scale = gamma * inv_std
            y = affine(x2, scale, beta - self.running_mean * scale)
            # Keep x itself (no copy): xhat is only needed if backward is ever called in eval.
            self._cache = (False, x2, inv_std, x.shape, None)
        return from_channels_matrix(y, x.shape)

    def backward(self, dy):
        trained, saved, inv_std, shape, m = self.saved()
        dy2 = channels_matrix(dy)  # saved: c = x - mu (training) or x (eval)
        if not trained:  # eval: y = gamma * (x - running_mean) * inv_std + beta
            dbeta, dgamma, dx = eval_backward(dy2, saved, self.running_mean, inv_std,
                                              self.weight.data * inv_std)
            self.bias.grad += dbeta
            self.weight.grad += dgamma
            return from_channels_matrix(dx, shape)
        dbeta, dgamma = parameter_sums(dy2, saved, inv_std)
        self.bias.grad += dbeta
        self.weight.grad += dgamma
        dbeta, dgamma = summed_over(self.group, dbeta, dgamma)  # every rank's, when synchronised
        dx = input_gradient(saved, inv_std, self.weight.data * inv_std, dbeta, dgamma, dy2, m)
        return from_channels_matrix(dx, shape)
