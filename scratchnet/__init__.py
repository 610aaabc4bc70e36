"""scratchnet: an autograd-free layer library on NumPy or CuPy, every backward derived by hand.

Three floors, each importing only those below it: ``scratchnet.runtime`` (array modules and
devices, threads, BLAS, memory), ``scratchnet.kernels`` (patches, the convolution algorithms
and the policy that picks one), and the layers with what is built on them (``layers``,
``losses``, ``optim``, ``fusion``, ...).  The names below are loaded when first used, so that
``scratchnet.runtime.configure()`` can run before anything imports NumPy.
"""
import importlib

_EXPORTS = {
    "scratchnet.runtime.backend": ["DeviceError", "get_array_module", "gpu_available",
                                   "to_device", "to_numpy"],
    "scratchnet.checkpoint": ["CheckpointError", "load_checkpoint", "save_checkpoint"],
    "scratchnet.layers": ["BasicBlock", "BatchNorm2d", "Conv2d", "Dropout", "Flatten",
                          "GlobalAvgPool2d", "Layer", "Linear", "MaxPool2d", "Parameter", "ReLU",
                          "ResNet", "Sequential", "TimeDeltas", "TimeMaxMeanPool", "GELU",
                          "LayerNorm", "MultiHeadSelfAttention", "TransformerEncoderLayer",
                          "PatchTokens", "ClassTokenEmbedding", "ClassTokenPool",
                          "AudioSpectrogramTransformer"],
    "scratchnet.losses": ["SoftmaxCrossEntropy"],
    "scratchnet.optim": ["SGD", "AdamW", "CosineWarmupLR", "OneCycleLR", "clip_grad_norm"],
    "scratchnet.averaging": ["ExponentialMovingAverage"],
    "scratchnet.fusion": ["fold_batchnorm"],
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'scratchnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_HOME))
