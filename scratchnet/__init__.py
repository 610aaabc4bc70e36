"""scratchnet: an autograd-free layer library on NumPy or CuPy, every backward derived by hand."""
# First, before anything imports NumPy: see scratchnet.blas_threads.
from . import blas_threads  # noqa: F401
from .averaging import ExponentialMovingAverage
from .backend import DeviceError, get_array_module, gpu_available, to_device, to_numpy
from .checkpoint import load_checkpoint, save_checkpoint
from .fusion import fold_batchnorm
from .layers import (BasicBlock, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Layer,
                     Linear, MaxPool2d, Parameter, ReLU, ResNet, Sequential, TimeMaxMeanPool)
from .losses import SoftmaxCrossEntropy
from .optim import SGD, AdamW, CosineWarmupLR, OneCycleLR, clip_grad_norm

__all__ = ["DeviceError", "get_array_module", "gpu_available", "to_device", "to_numpy",
           "load_checkpoint", "save_checkpoint", "BasicBlock", "BatchNorm2d", "Conv2d", "Dropout",
           "Flatten", "GlobalAvgPool2d", "Layer", "Linear", "MaxPool2d", "Parameter", "ReLU",
           "ResNet", "Sequential", "TimeMaxMeanPool", "SoftmaxCrossEntropy", "SGD", "AdamW",
           "CosineWarmupLR", "OneCycleLR", "clip_grad_norm", "ExponentialMovingAverage",
           "fold_batchnorm"]
__version__ = "0.1.0"
