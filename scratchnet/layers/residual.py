"""The residual block y = ReLU(F(x) + shortcut(x)) and a ResNet built from it."""
from collections import OrderedDict

import numpy as np

from ..runtime.backend import get_array_module
from .activation import ReLU
from .base import Layer, Sequential, check_input
from ..kernels.batchnorm import (affine_map, batch_statistics, channels_matrix,
                                 from_channels_matrix, input_gradient, parameter_sums,
                                 scale_columns, summed_over, update_running)
from .batchnorm import BatchNorm2d
from .conv import Conv2d
from .deltas import TimeDeltas
from .dropout import Dropout
from .linear import Linear
from .pooling import GlobalAvgPool2d, MaxPool2d, TimeMaxMeanPool


class BasicBlock(Layer):
    """y = ReLU(F(x) + S(x)),  F = BN2 . conv3x3 . ReLU . BN1 . conv3x3(stride s),
    S = identity, or conv1x1(stride s) . BN when the stride or the width changes.

    Backward.  With z = F(x) + S(x) and dz = dy * [z > 0] (the final ReLU):
        dx = F'(x)^T dz + S'(x)^T dz,
    and for the identity shortcut S'(x)^T dz = dz.  That last term is why deep residual stacks
    train: however small the Jacobian of F becomes, dL/dx keeps a copy of dL/dz that passes
    through the block unattenuated, whereas in a plain stack dL/dx = F'(x)^T dz only.
    """

    # Each BatchNorm here reads one convolution's output and nothing else (scratchnet.fusion).
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_channels, out_channels, stride=1, rng=None):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(out_channels)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.downsample = Sequential(
                Conv2d(in_channels, out_channels, 1, stride, 0, bias=False, rng=rng),
                BatchNorm2d(out_channels))
        else:
            self.downsample = None
        self.relu2 = ReLU()
        self.in_channels = in_channels

    def forward(self, x):
        check_input(x, 4, "BasicBlock", self.in_channels)
        f = self.bn2.forward(self.conv2.forward(self.relu1.forward(
            self.bn1.forward(self.conv1.forward(x)))))
        f += x if self.downsample is None else self.downsample.forward(x)  # f is BN's own output
        return self.relu2.forward(f)

    def backward(self, dy):
        dz = self.relu2.backward(dy)
        dx = self.conv1.backward(self.bn1.backward(self.relu1.backward(
            self.conv2.backward(self.bn2.backward(dz)))))
        dx += dz if self.downsample is None else self.downsample.backward(dz)  # dx is conv1's
        return dx


class Stem(Sequential):
    """conv -> BN -> [max-pool ->] ReLU, children ``conv``, ``bn``, ``pool``, ``relu``; with a
    pool, BatchNorm's affine map runs after the pool, on a quarter of the values.

    Why that is the same function.  In training BN(z) = s (z - mu) + beta per channel, with
    s = gamma / sqrt(var + eps) from the batch statistics of the whole map.  For s > 0 the map
    c -> s c + beta is increasing, so on every window
        max_m (s c_m + beta) = s max_m c_m + beta,
    and the rounded values agree too (rounding is monotone): pool(BN(z)) = s pool(c) + beta,
    with c = z - mu.  The gradient routes to the same first maximum, except where two
    different c round to the same s c + beta: then this routes to the first largest c, the
    other order to the first of the ties, both subgradients of the same function.  When some
    channel has s <= 0 the layers run in their own order.
    In eval mode BatchNorm is the fixed map z s + (beta - running_mean s), s = gamma /
    sqrt(running_var + eps), increasing under the same condition, so the stem runs conv ->
    pool -> BN -> ReLU, each layer's own forward and backward in that order: the same output
    bit for bit and the gradients as above, with the affine map on a quarter of the values.

    Backward.  With p = pool(c), y = s p + beta and dy the gradient at y (after the ReLU),
    BatchNorm's backward needs dyb, the gradient at its own (full-size) output, which is dy
    added onto each window's maximum, P^T dy.  Its sums are over the pooled values:
        sum_m dyb_m = sum dy,    sum_m dyb_m c_m = sum_windows dy p    (each dy meets its c),
    and dx = s (dyb - dbeta / M - c inv_std dgamma / M) is the terms without dy, a pass over
    the map, plus s dy added onto the maxima: the pool's own backward pass, into dx.  Neither
    BatchNorm's output nor the pool's full-size gradient is formed.  In training the stem
    computes BatchNorm itself, from the kernels BatchNorm2d is made of
    (scratchnet.kernels.batchnorm), in either order; its parameters and running statistics
    stay the ``bn`` child's.  On CuPy arrays the layers always run in their own order.
    """

    _cache = None  # a training forward's BatchNorm statistics (and pooled c, pool first)
    _eval_pool_first = False  # an eval forward took the pool-first order

    def forward(self, x):
        self._cache, self._eval_pool_first = None, False
        conv, bn, pool, relu = self.conv, self.bn, getattr(self, "pool", None), self.relu
        xp = get_array_module(x)
        # On a GPU the layers run in their own order: choosing the other would read the
        # scale's sign back to the host, a wait for the GPU at every step.
        if pool is None or not isinstance(bn, BatchNorm2d) or xp is not np:
            return super().forward(x)
        if not bn.training:  # eval: s = gamma / sqrt(running_var + eps)
            if not bool(xp.all(bn.weight.data * (1.0 / xp.sqrt(bn.running_var + bn.eps)) > 0)):
                return super().forward(x)
            self._eval_pool_first = True
            return relu.forward(bn.forward(pool.forward(conv.forward(x))))
        z = conv.forward(x)
        check_input(z, 4, "BatchNorm2d", bn.num_features)
        z2 = channels_matrix(z)
        centred, mu, var, inv_std, m = batch_statistics(z2, bn.eps, bn.group)
        update_running(bn.running_mean, bn.running_var, mu, var, m, bn.momentum)
        scale, beta = bn.weight.data * inv_std, bn.bias.data
        c = from_channels_matrix(centred, z.shape)
        if not bool(xp.all(scale > 0)):  # the layers' own order: BN, pool, ReLU
            self._cache = (centred, inv_std, scale, z.shape, m, None)
            return relu.forward(pool.forward(affine_map(c, scale, beta)))
        pooled = pool.forward(c)
        self._cache = (centred, inv_std, scale, z.shape, m, pooled)
        return relu.forward(affine_map(pooled, scale, beta))

    def backward(self, dy):
        cache, self._cache = self._cache, None
        pool_first, self._eval_pool_first = self._eval_pool_first, False
        if pool_first:
            return self.conv.backward(self.pool.backward(self.bn.backward(
                self.relu.backward(dy))))
        if cache is None:
            return super().backward(dy)
        centred, inv_std, scale, shape, m, pooled = cache
        bn = self.bn
        if pooled is None:  # the layers' own order: BatchNorm's backward at its own output
            dyb = channels_matrix(self.pool.backward(self.relu.backward(dy)))
            dbeta, dgamma = parameter_sums(dyb, centred, inv_std)
            bn.bias.grad += dbeta
            bn.weight.grad += dgamma
            dbeta, dgamma = summed_over(bn.group, dbeta, dgamma)
            dx = input_gradient(centred, inv_std, scale, dbeta, dgamma, dyb, m)
            return self.conv.backward(from_channels_matrix(dx, shape))
        d = channels_matrix(self.relu.backward(dy))
        dbeta, dgamma = parameter_sums(d, channels_matrix(pooled), inv_std)
        bn.bias.grad += dbeta
        bn.weight.grad += dgamma
        dbeta, dgamma = summed_over(bn.group, dbeta, dgamma)  # every rank's, when synchronised
        dx = from_channels_matrix(input_gradient(centred, inv_std, scale, dbeta, dgamma,
                                                 m=m), shape)  # the terms without dy
        scaled = scale_columns(d, scale)                    # s dy, in long rows
        self.pool.backward_into(dx, from_channels_matrix(scaled, pooled.shape))
        return self.conv.backward(dx)


class ResNet(Sequential):
    """stem (conv k x k / s, BN, ReLU[, 3x3/2 max-pool]) -> stages of BasicBlocks -> global
    pool -> dropout -> linear.  The global pool is the average over frequency and time
    (``pool="avg"``, torchvision's) or ``"time_max_mean"``, :class:`TimeMaxMeanPool`.

    The stem applies the max-pool before the ReLU, which computes the same function with the
    ReLU on a quarter of the values.  ReLU is non-decreasing, so on any window
        max_m ReLU(v_m) = ReLU(max_m v_m).
    The gradients agree too: if max v > 0, the positives keep their values and order under
    ReLU, so both orders route dy to the same (first) argmax with factor 1; if max v <= 0,
    both give 0 (ReLU's factor [v > 0] at the winner, or a window of zeros whose winner is then
    multiplied by [v > 0] = 0).  No arithmetic changes, so the results are identical bit for bit.
    The stem (:class:`Stem`) moves its BatchNorm's affine map after the pool too, in training
    and in eval mode, by the same argument for an increasing map.

    ``widths[i]`` and ``depths[i]`` give the channels and block count of stage i+1; its first
    block has stride ``strides[i]`` (default 1 for the first stage, 2 after).  Names follow
    torchvision: ``stem.conv.weight``, ``layer1.0.bn1.running_mean``, ``fc.bias``.
    ``deltas`` (1 or 2) puts :class:`TimeDeltas` first, so that the stem sees the input's
    deltas (and delta-deltas) as further channels.
    ``seed`` fixes the initialisation (and the dropout masks).  ``input_grad=False`` skips
    dL/dx in the stem convolution when the input is data (training), saving its col2im.
    """

    POOLS = {"avg": GlobalAvgPool2d, "time_max_mean": TimeMaxMeanPool}

    def __init__(self, in_channels=1, num_classes=50, widths=(64, 128, 256, 512),
                 depths=(3, 4, 6, 3), strides=None, stem_kernel=7, stem_stride=2,
                 stem_pool=True, dropout=0.0, seed=0, input_grad=True, pool="avg",
                 deltas=0):
        if len(widths) != len(depths):
            raise ValueError("ResNet: widths and depths must have the same length")
        if pool not in self.POOLS:
            raise ValueError(f"ResNet: unknown pool {pool!r}; choose one of {sorted(self.POOLS)}")
        strides = strides or [1] + [2] * (len(widths) - 1)
        rng = np.random.default_rng(seed)
        parts = OrderedDict()
        if deltas:  # the input's deltas (and delta-deltas) as extra input channels
            parts["deltas"] = TimeDeltas(deltas)
        stem = OrderedDict(conv=Conv2d(in_channels * (1 + deltas), widths[0], stem_kernel,
                                       stem_stride, stem_kernel // 2, bias=False, rng=rng,
                                       needs_input_grad=input_grad),
                           bn=BatchNorm2d(widths[0]))
        if stem_pool:
            stem["pool"] = MaxPool2d(3, 2, 1)
        stem["relu"] = ReLU()
        parts["stem"] = Stem(stem)
        channels = widths[0]
        for i, (width, depth, stride) in enumerate(zip(widths, depths, strides)):
            blocks = [BasicBlock(channels, width, stride, rng)]
            blocks += [BasicBlock(width, width, 1, rng) for _ in range(depth - 1)]
            parts[f"layer{i + 1}"] = Sequential(*blocks)
            channels = width
        parts["pool"] = self.POOLS[pool]()
        parts["dropout"] = Dropout(dropout, seed=seed)
        parts["fc"] = Linear(channels, num_classes, rng=rng)
        super().__init__(parts)
        self.config = dict(in_channels=in_channels, num_classes=num_classes, widths=list(widths),
                           depths=list(depths), strides=list(strides), stem_kernel=stem_kernel,
                           stem_stride=stem_stride, stem_pool=stem_pool, dropout=dropout)
        if pool != "avg":  # configs without the key (every earlier checkpoint) mean "avg"
            self.config["pool"] = pool
        if deltas:  # likewise, no key means no delta channels
            self.config["deltas"] = deltas

    def forward_features(self, x):
        """Forward through the stem and the stages; returns every stage's output (for
        visualisation) after running the whole network."""
        outputs = OrderedDict()
        for name in self._order:
            x = getattr(self, name).forward(x)
            if name == "stem" or name.startswith("layer"):
                outputs[name] = x
        return x, outputs
