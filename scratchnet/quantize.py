"""INT8 post-training quantisation of a network whose BatchNorms are folded into its
convolutions (``scratchnet.fold_batchnorm``).

Weights: symmetric int8, one scale per output channel,
    s_w[o] = max_j |W[o, j]| / 127,    Wq[o, j] = round(W[o, j] / s_w[o])  in [-127, 127].
Why per channel: folding multiplies row o of W by its BatchNorm's gamma[o] / sigma[o], and these
factors differ between channels by one or two orders of magnitude.  With one scale for the
tensor the largest row would set it, and a row 100 times smaller would be rounded to a handful
of levels; with a scale per row every row keeps a relative rounding error of at most
1 / (2 * 127) of its own largest weight.

Activations: one scale per tensor, from calibration clips,
    x ~ s_x q,   q = clip(round(x / s_x), lo, hi),
with q unsigned, [0, 255] and zero point 0, where the input is a ReLU's output (x >= 0: the
sign bit would be wasted), and signed, [-127, 127], elsewhere (the standardised log-Mel).
s_x = t / hi for a clipping threshold t, chosen by one of three rules:
``max`` (t = max |x|: no clipping, the coarsest steps), ``percentile`` (t = the 99.99th
percentile of |x|: the rare largest values are clipped), ``mse`` (the t that minimises the
mean squared error of quantising the calibration values, clipping and rounding together).

The quantised dot product.  With y[o] = sum_j W[o, j] x_j + b[o] (K terms),
    y[o] ~ s_w[o] s_x sum_j Wq[o, j] q_j + b[o],
where the sum is over integers: int8 x int8 products accumulated exactly, |sum| <= K 127 255
< 2^31 for K < 66,000.  Its rounding error: writing W = s_w (Wq + e_w) and x = s_x (q + e_x)
with |e_w|, |e_x| <= 1/2 (inside the clipping range),
    y - y_q = s_w s_x sum_j (Wq_j e_x,j + q_j e_w,j + e_w,j e_x,j),
a sum of K terms of mean about zero; for independent errors, uniform with variance 1/12, its
standard deviation is about s_w s_x sqrt(K / 12 (mean Wq^2 + mean q^2)): it grows as sqrt(K)
while a sum of aligned terms grows as K, which is why wide layers quantise well.

The integer sums are computed here as a GEMM of float arrays holding the integers, which is
exact while every partial sum is an integer below 2^24 in float32 (K 127 qmax < 2^24: the
stem's 7 x 7 x 1 and the 3 x 3 x 32 convolutions) and below 2^53 in float64 (every layer
here); a BLAS GEMM is the fastest integer GEMM NumPy has.  One requantisation per layer:
the integer sum times s_x s_w[o], plus the bias.

In a residual network every tensor between the layers is held quantised too, so that a
runtime can keep the whole network in integers (experiments.deploy.onnx_graph):
- the stem's output and each block's output pass a :class:`FakeQuantize` (uint8, after the
  ReLU); the next block's first convolution and its shortcut (identity or 1x1 convolution)
  read that tensor, with that scale;
- a block's second convolution and its 1x1 shortcut requantise their outputs (int8: they
  are signed before the addition), so the residual addition adds two quantised tensors;
- the pool averages the last block's quantised output, and the classifier quantises the
  result.
Between these points the arithmetic (the addition, the ReLU, the max-pool, the mean) runs in
float32 on the dequantised values s q, where it is exact or rounds once.
"""
import copy

import numpy as np

from .kernels.im2col import conv2d_reference
from .layers.base import Layer, Sequential
from .layers.conv import Conv2d
from .layers.linear import Linear
from .runtime import blas
from .runtime.backend import get_array_module, to_numpy

METHODS = ("max", "percentile", "mse")
PERCENTILE = 99.99
SAMPLES_PER_LAYER = 1 << 18  # calibration values kept per layer for percentile and mse


def quantize_weight(w):
    """(Wq int8, s_w float32 per output channel) of a weight (C_out, ...)."""
    xp = get_array_module(w)
    peak = xp.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = xp.where(peak > 0, peak / 127.0, 1.0).astype(xp.float32)
    q = xp.rint(w / scale.reshape((-1,) + (1,) * (w.ndim - 1)))
    return xp.clip(q, -127, 127).astype(xp.int8), scale


def activation_range(unsigned):
    return (0, 255) if unsigned else (-127, 127)


def quantize_activation(x, scale, unsigned):
    """q = clip(round(x / s), lo, hi), as uint8 (unsigned) or int8."""
    xp = get_array_module(x)
    lo, hi = activation_range(unsigned)
    q = xp.clip(xp.rint(x / scale), lo, hi)
    return q.astype(xp.uint8 if unsigned else xp.int8)


def exact_dtype(terms, unsigned):
    """The float dtype whose GEMM sums ``terms`` products of int8 weights and activations
    exactly (every partial sum an integer below 2^24, or 2^53)."""
    bound = terms * 127 * activation_range(unsigned)[1]
    return np.float32 if bound < 2 ** 24 else np.float64


def fake_quantize(x, scale, unsigned):
    """s q(x): x rounded to its quantisation grid, in float32."""
    xp = get_array_module(x)
    return quantize_activation(x, scale, unsigned).astype(xp.float32) * scale


class FakeQuantize(Layer):
    """y = s clip(round(x / s), lo, hi): a tensor held quantised between layers (unsigned
    after a ReLU).  Buffer: ``scale`` (a 0-d array)."""

    _buffers = ("scale",)

    def __init__(self, scale=None, unsigned=True):
        super().__init__()
        self.active = scale is not None  # inactive (the identity) while calibrating
        self.scale = np.asarray(scale or 1.0, dtype=np.float32)  # host: .to() moves it
        self.unsigned = unsigned
        self.training = False

    def forward(self, x):
        return fake_quantize(x, self.scale, self.unsigned) if self.active else x

    def backward(self, dy):
        raise RuntimeError("FakeQuantize is for inference; train the float model")


class QuantizedWeights(Layer):
    """What a quantised Conv2d and Linear share: int8 weights with one scale per output
    channel (``weight_q``, ``weight_scale``), the float bias, the input's scale and kind."""

    _buffers = ("weight_q", "weight_scale", "bias", "input_scale")

    def __init__(self, layer, input_scale, unsigned):
        super().__init__()
        xp = get_array_module(layer.weight.data)
        self.weight_q, self.weight_scale = quantize_weight(layer.weight.data)
        self.bias = (layer.bias.data if layer.bias is not None
                     else xp.zeros(layer.weight.shape[0], xp.float32)).astype(xp.float32)
        self.input_scale = xp.asarray(input_scale, dtype=xp.float32)
        self.unsigned = unsigned
        self.training = False

    def integer_inputs(self, x, terms):
        """q(x) as floats whose GEMM with weight_q's sums ``terms`` products exactly, the
        weights in the same dtype, and the requantisation scale s_x s_w[o]."""
        dtype = exact_dtype(terms, self.unsigned)
        q = quantize_activation(x, self.input_scale, self.unsigned).astype(dtype)
        scale = (self.input_scale * self.weight_scale).astype(get_array_module(x).float32)
        return q, self.weight_q.astype(dtype), scale

    def backward(self, dy):
        raise RuntimeError(f"{type(self).__name__} is for inference; train the float model")


class QuantizedConv2d(QuantizedWeights):
    """y = s_x s_w[o] (Wq * q)[o] + b[o],  q = quantize(x, s_x): a folded Conv2d in int8
    (inference only); with an ``output_scale`` its output is requantised (int8, signed).
    Buffers: QuantizedWeights' and ``output_scale`` (a 0-d array)."""

    _buffers = QuantizedWeights._buffers + ("output_scale",)

    def __init__(self, conv, input_scale=1.0, unsigned=True, output_scale=None):
        super().__init__(conv, input_scale, unsigned)
        xp = get_array_module(self.weight_q)
        self.requantize = output_scale is not None  # known on the host: no device read
        self.output_scale = xp.asarray(output_scale or 0.0, dtype=xp.float32)
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x):
        q, wq, scale = self.integer_inputs(x, self.weight_q[0].size)
        acc = conv2d_reference(q, wq, None, self.stride, self.padding)
        y = acc.astype(scale.dtype) * scale[:, None, None] + self.bias[:, None, None]
        if self.requantize:
            y = fake_quantize(y, self.output_scale, unsigned=False)
        return y


class QuantizedLinear(QuantizedWeights):
    """y = s_x s_w[o] (q Wq^T)[o] + b[o]: a Linear layer in int8 (inference only)."""

    def __init__(self, linear, input_scale=1.0, unsigned=True):
        super().__init__(linear, input_scale, unsigned)

    def forward(self, x):
        q, wq, scale = self.integer_inputs(x, self.weight_q.shape[1])
        return blas.matmul(q, wq.T).astype(scale.dtype) * scale + self.bias


def named_layers(model, prefix=""):
    """[(dotted name, owner, attribute, layer)] of every layer below ``model``, in order."""
    found = []
    for name, child in model.named_children():
        found.append((prefix + name, model, name, child))
        found += named_layers(child, prefix + name + ".")
    return found


def weighted_layers(model):
    """The Conv2d and Linear layers (or their quantised forms) of ``model``."""
    kinds = (Conv2d, Linear, QuantizedConv2d, QuantizedLinear)
    return [entry for entry in named_layers(model) if isinstance(entry[3], kinds)]


def insert_fake_quantizers(model):
    """Put a FakeQuantize after the stem and after every residual block of a ResNet (see the
    module docstring); returns [(its name, the block it feeds or None)] in order."""
    from .layers.residual import BasicBlock
    points = []
    stem = getattr(model, "stem", None)
    if isinstance(stem, Sequential) and "quant" not in stem._order:
        stem.quant = FakeQuantize()
        stem._order.append("quant")
        points.append("stem.quant")
    for name, stage in model.named_children():
        if not (isinstance(stage, Sequential) and len(stage) and
                all(isinstance(b, BasicBlock) for b in stage)):
            continue
        order = []
        for k in stage._order:
            order += [k, k + "q"]
            setattr(stage, k + "q", FakeQuantize())
            points.append(f"{name}.{k}q")
        stage._order = order
    feeds = []
    blocks = [n for n, _, _, layer in named_layers(model) if isinstance(layer, BasicBlock)]
    for i, point in enumerate(points):  # each point feeds the next block, the last none
        feeds.append((point, blocks[i] if i < len(blocks) else None))
    return feeds


def record(model, batches, inputs, outputs):
    """{(name, "in" or "out"): (max |x|, min x, a sample of at most SAMPLES_PER_LAYER
    values)} of the named layers' inputs and outputs over ``batches`` run through
    ``model``."""
    layers = {name: layer for name, _, _, layer in named_layers(model)
              if name in inputs or name in outputs}
    seen = {}
    rng = np.random.default_rng(0)

    def note(key, x):
        values = to_numpy(x).ravel()
        entry = seen.setdefault(key, dict(peak=0.0, low=np.inf, values=[]))
        entry["peak"] = max(entry["peak"], float(np.abs(values).max()))
        entry["low"] = min(entry["low"], float(values.min()))
        keep = min(len(values), SAMPLES_PER_LAYER // max(1, len(batches)))
        entry["values"].append(rng.choice(values, keep, replace=False))

    def recording(name, layer):
        forward = layer.forward

        def forward_and_record(x):
            if name in inputs:
                note((name, "in"), x)
            y = forward(x)
            if name in outputs:
                note((name, "out"), y)
            return y
        return forward_and_record

    for name, layer in layers.items():
        layer.forward = recording(name, layer)
    try:
        for x in batches:
            model.forward(x)
    finally:
        for layer in layers.values():
            del layer.forward  # the class's method again
    return {key: (e["peak"], e["low"], np.concatenate(e["values"])) for key, e in seen.items()}


def choose_scale(peak, values, method, unsigned):
    """s_x = t / hi for the clipping threshold t of ``method`` (see the module docstring)."""
    hi = activation_range(unsigned)[1]
    if peak == 0:
        return 1.0
    if method == "max":
        return peak / hi
    if method == "percentile":
        magnitudes = np.abs(values.astype(np.float64))
        return max(float(np.percentile(magnitudes, PERCENTILE)), peak / (4 * hi)) / hi
    if method == "mse":
        lo = activation_range(unsigned)[0]
        best, best_error = peak / hi, np.inf
        for t in np.linspace(0.05, 1.0, 96) * peak:
            s = t / hi
            error = np.mean((values - s * np.clip(np.rint(values / s), lo, hi)) ** 2)
            if error < best_error:
                best, best_error = s, error
        return best
    raise ValueError(f"unknown calibration method {method!r}; choose one of {METHODS}")


def block_parts(block, block_name):
    """The names of a block's first convolution, second convolution and 1x1 shortcut
    convolution (None without one)."""
    shortcut = f"{block_name}.downsample.0" if block.downsample is not None else None
    return f"{block_name}.conv1", f"{block_name}.conv2", shortcut


def quantize_model(folded, calibration_batches, method="mse", keep_float=()):
    """An int8 copy of the BatchNorm-folded ``folded``: every Conv2d and Linear not named in
    ``keep_float`` becomes a QuantizedConv2d / QuantizedLinear, and in a ResNet the tensors
    between the blocks are held quantised (module docstring); every scale comes from the
    calibration batches by ``method``.  Returns (model, spec); ``spec`` (JSON) with the
    model's architecture rebuilds the structure for loading (:func:`quantized_structure`)."""
    model = copy.deepcopy(folded)
    feeds = insert_fake_quantizers(model)
    layers = {n: (owner, attr, layer) for n, owner, attr, layer in named_layers(model)}
    quantised = [name for name, _, _, _ in weighted_layers(model) if name not in keep_float]
    shared, outputs = {}, set()  # layers whose input scale is a point's; requantised outputs
    for point, block in feeds:
        if block is not None:
            first, second, shortcut = block_parts(layers[block][2], block)
            shared.update({first: point, shortcut: point})
            outputs.update({second, shortcut} - {None})
    outputs &= set(quantised)
    stats = record(model, calibration_batches, set(quantised) | {p for p, _ in feeds},
                   outputs)
    spec = dict(method=method, layers={}, points={}, float_layers=sorted(keep_float))
    scales = {}
    for point, _ in feeds:
        peak, low, values = stats[(point, "in")]
        scales[point] = choose_scale(peak, values, method, unsigned=True)  # after a ReLU
        spec["points"][point] = dict(unsigned=True)
    for point, _ in feeds:
        owner, attr, _ = layers[point]
        setattr(owner, attr, FakeQuantize(scales[point], unsigned=True))
    for name in quantised:
        owner, attr, layer = layers[name]
        if name in shared:  # reads a held tensor: its scale, so its quantiser is exact
            scale, unsigned = scales[shared[name]], True
        else:
            peak, low, values = stats[(name, "in")]
            unsigned = low >= 0
            scale = choose_scale(peak, values, method, unsigned)
        if isinstance(layer, Conv2d):
            out = None
            if name in outputs:
                peak, _, values = stats[(name, "out")]
                out = choose_scale(peak, values, method, unsigned=False)
            setattr(owner, attr, QuantizedConv2d(layer, scale, unsigned, out))
        else:
            setattr(owner, attr, QuantizedLinear(layer, scale, unsigned))
        spec["layers"][name] = dict(unsigned=bool(unsigned), requantize=name in outputs)
    return model.eval(), spec


def quantized_structure(folded, spec):
    """``folded`` with the layers named in ``spec`` replaced by quantised shells, ready for
    ``load_state_dict`` of a saved int8 model."""
    if spec.get("points"):
        insert_fake_quantizers(folded)
    for name, owner, attr, layer in named_layers(folded):
        if name in spec.get("points", {}):
            setattr(owner, attr, FakeQuantize(1.0, spec["points"][name]["unsigned"]))
        elif name in spec["layers"]:
            entry = spec["layers"][name]
            if isinstance(layer, Conv2d):
                setattr(owner, attr, QuantizedConv2d(
                    layer, 1.0, entry["unsigned"], 1.0 if entry.get("requantize") else None))
            else:
                setattr(owner, attr, QuantizedLinear(layer, 1.0, entry["unsigned"]))
    return folded.eval()
