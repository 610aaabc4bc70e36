"""The residual block y = ReLU(F(x) + shortcut(x)) and a ResNet built from it."""
from collections import OrderedDict

import numpy as np

from ..kernels import stem
from .activation import ReLU
from .base import Layer, Sequential, check_input
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
        # The ReLUs rectify in place: their inputs are BatchNorm's output (which no layer keeps;
        # a folded BatchNorm's is the convolution's, which no layer keeps either) and f, both
        # made inside the block.
        self.relu1 = ReLU(inplace=True)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.downsample = Sequential(
                Conv2d(in_channels, out_channels, 1, stride, 0, bias=False, rng=rng),
                BatchNorm2d(out_channels))
        else:
            self.downsample = None
        self.relu2 = ReLU(inplace=True)
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
    """y = ReLU(maxpool(BN(conv(x)))), children ``conv``, ``bn``, ``pool`` (optional) and
    ``relu``: each layer's maths is its own, and the backward pass is theirs in reverse,
        dx = conv'^T BN'^T pool'^T ReLU'^T dy.
    BatchNorm, the pool and the ReLU run as one kernel (scratchnet.kernels.stem), which applies
    BatchNorm's affine map after the pool, on a quarter of the values, where that is the same
    function (the derivation is the kernel's); BatchNorm's parameters and running statistics
    stay the ``bn`` child's.  Without a pool, or with the BatchNorm folded into the
    convolution (scratchnet.fusion), the children run in turn."""

    def _fused(self):
        return hasattr(self, "pool") and isinstance(self.bn, BatchNorm2d)

    def forward(self, x):
        if not self._fused():
            return super().forward(x)
        z = self.conv.forward(x)
        check_input(z, 4, "BatchNorm2d", self.bn.num_features)
        pool = self.pool
        y, self._cache = stem.forward(z, self._bn_parts(), pool.kernel_size, pool.stride,
                                      pool.padding, self.bn.training)
        return y

    def backward(self, dy):
        if not self._fused():
            return super().backward(dy)
        dz, dgamma, dbeta = stem.backward(dy, self.saved(), self._bn_parts())
        self.bn.weight.grad += dgamma
        self.bn.bias.grad += dbeta
        return self.conv.backward(dz)

    def _bn_parts(self):
        bn = self.bn
        return stem.BatchNormParts(bn.weight.data, bn.bias.data, bn.running_mean,
                                   bn.running_var, bn.eps, bn.momentum, bn.group)


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
