"""scratchnet: an autograd-free layer library on NumPy or CuPy, every backward derived by hand.

Three floors, each importing only those below it: ``scratchnet.runtime`` (array modules and
devices, threads, BLAS, memory: set up by the runtime itself at its first product, whatever
the script imported first), ``scratchnet.kernels`` (patches, the convolution algorithms and
the policy that picks one), and the layers with what is built on them (``layers``,
``losses``, ``optim``, ``fusion``, ...).
"""
from .averaging import ExponentialMovingAverage
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .fusion import fold_batchnorm
from .layers import (AudioSpectrogramTransformer, BasicBlock, BatchNorm2d, ClassTokenEmbedding,
                     ClassTokenPool, Conv2d, Dropout, Flatten, GELU, GlobalAvgPool2d, Layer,
                     LayerNorm, Linear, MaxPool2d, MultiHeadSelfAttention, Parameter,
                     PatchTokens, ReLU, ResNet, Sequential, TimeDeltas, TimeMaxMeanPool,
                     TransformerEncoderLayer)
from .losses import SoftmaxCrossEntropy
from .optim import SGD, AdamW, CosineWarmupLR, OneCycleLR, clip_grad_norm
from .runtime.backend import DeviceError, get_array_module, gpu_available, to_device, to_numpy

__all__ = ["AdamW", "AudioSpectrogramTransformer", "BasicBlock", "BatchNorm2d",
           "CheckpointError", "ClassTokenEmbedding", "ClassTokenPool", "Conv2d",
           "CosineWarmupLR", "DeviceError", "Dropout", "ExponentialMovingAverage", "Flatten",
           "GELU", "GlobalAvgPool2d", "Layer", "LayerNorm", "Linear", "MaxPool2d",
           "MultiHeadSelfAttention", "OneCycleLR", "Parameter", "PatchTokens", "ReLU",
           "ResNet", "SGD", "Sequential", "SoftmaxCrossEntropy", "TimeDeltas",
           "TimeMaxMeanPool", "TransformerEncoderLayer", "clip_grad_norm", "fold_batchnorm",
           "get_array_module", "gpu_available", "load_checkpoint", "save_checkpoint",
           "to_device", "to_numpy"]
__version__ = "0.1.0"
