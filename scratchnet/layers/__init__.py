"""Layers with explicit, hand-derived backward passes."""
from .activation import GELU, ReLU
from .attention import MultiHeadSelfAttention
from .base import Layer, Parameter, Sequential
from .batchnorm import BatchNorm2d
from .conv import Conv2d
from .deltas import TimeDeltas
from .dropout import Dropout
from .linear import Flatten, Linear
from .normalization import LayerNorm
from .pooling import GlobalAvgPool2d, MaxPool2d, TimeMaxMeanPool
from .residual import BasicBlock, ResNet
from .transformer import (AudioSpectrogramTransformer, ClassTokenEmbedding, ClassTokenPool,
                          PatchTokens, TransformerEncoderLayer)

__all__ = ["Layer", "Parameter", "Sequential", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
           "GlobalAvgPool2d", "TimeMaxMeanPool", "TimeDeltas", "Flatten", "Linear", "Dropout",
           "BasicBlock", "ResNet", "GELU", "LayerNorm", "MultiHeadSelfAttention",
           "TransformerEncoderLayer", "PatchTokens", "ClassTokenEmbedding", "ClassTokenPool",
           "AudioSpectrogramTransformer"]
