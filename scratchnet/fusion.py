"""Folding each BatchNorm into the convolution that feeds it, for inference.

In eval mode a BatchNorm is a fixed affine map per channel o,
    BN(z)[o] = s[o] (z[o] - mu[o]) + beta[o],     s = gamma / sqrt(running_var + eps),
and a convolution is affine in its input, z[o] = (W[o] * x) + b[o].  Their composition is
therefore one convolution:
    BN(conv(x))[o] = s[o] (W[o] * x) + s[o] (b[o] - mu[o]) + beta[o]
                   = (W'[o] * x) + b'[o],
    W'[o] = s[o] W[o],   b'[o] = s[o] (b[o] - mu[o]) + beta[o],
with b = 0 for a convolution without bias.  The folded network computes the same function with
one pass fewer over every convolution's output (the scale-and-shift), which is what inference
pays for BatchNorm.  It is an inference network: training needs the batch statistics that
the fold has baked in, so a folded BatchNorm refuses to run in training mode.
"""
import copy

from .runtime.backend import get_array_module
from .layers.base import Layer, Parameter, Sequential
from .layers.batchnorm import BatchNorm2d
from .layers.conv import Conv2d


class FoldedBatchNorm(Layer):
    """What is left of a BatchNorm whose affine map moved into the convolution before it:
    y = x, dx = dy (eval mode only)."""

    def forward(self, x):
        if self.training:
            raise RuntimeError("FoldedBatchNorm: this BatchNorm was folded into its convolution "
                               "for inference; train the original (unfolded) model instead")
        return x

    def backward(self, dy):
        return dy


def fold_conv_batchnorm(conv, bn):
    """A new Conv2d computing bn(conv(x)) with ``bn`` in eval mode (W' = s W, b' = s (b - mu)
    + beta, see the module docstring)."""
    if not isinstance(conv, Conv2d) or not isinstance(bn, BatchNorm2d):
        raise TypeError(f"fold_conv_batchnorm expects a Conv2d and a BatchNorm2d, got "
                        f"{type(conv).__name__} and {type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fold_conv_batchnorm: BatchNorm2d({bn.num_features}) cannot follow a "
                         f"convolution with {conv.out_channels} output channels")
    xp = get_array_module(conv.weight.data)
    s = bn.weight.data / xp.sqrt(bn.running_var + bn.eps)
    b = conv.bias.data if conv.bias is not None else xp.zeros_like(s)
    folded = copy.copy(conv)  # same geometry; fresh parameters below, nothing shared
    folded.weight = Parameter(conv.weight.data * s[:, None, None, None])
    folded.bias = Parameter(s * (b - bn.running_mean) + bn.bias.data)
    folded._cache = None
    return folded


def conv_batchnorm_pairs(layer):
    """Names (conv, bn) of the children of ``layer`` where the BatchNorm reads the
    convolution's output and nothing else does: adjacent children of a Sequential, and the
    pairs a layer declares in ``conv_bn_pairs`` (BasicBlock's conv1/bn1, conv2/bn2)."""
    if isinstance(layer, Sequential):
        names = layer._order
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(getattr(layer, a), Conv2d)
                and isinstance(getattr(layer, b), BatchNorm2d)]
    return list(getattr(layer, "conv_bn_pairs", ()))


def fold_batchnorm(model):
    """An eval-mode copy of ``model`` in which every BatchNorm that directly follows a
    convolution is folded into it; ``model`` itself is left unchanged."""
    # Copy parameters and buffers but not what the last forward pass left in the layers'
    # caches (activations, possibly hundreds of MB): deepcopy takes a memo entry for an
    # object as its copy, so each cache is "copied" as None.
    skip_caches = {id(layer._cache): None for layer in model.modules()
                   if getattr(layer, "_cache", None) is not None}
    folded = copy.deepcopy(model, skip_caches)
    for layer in list(folded.modules()):
        for conv_name, bn_name in conv_batchnorm_pairs(layer):
            conv, bn = getattr(layer, conv_name), getattr(layer, bn_name)
            setattr(layer, conv_name, fold_conv_batchnorm(conv, bn))
            setattr(layer, bn_name, FoldedBatchNorm())
    return folded.eval()  # the new layers included
