"""A classifier as one ONNX graph, from raw audio to class probabilities.

    audio [batch, samples] float32, mono, at the model's rate, samples = its 5 s window
      -> Conv (the windowed DFT: framing, periodic Hann window and the real and imaginary
         DFT rows as one strided 1-D convolution, zero-padded by n_fft / 2 as the front
         end's centred frames are)
      -> re^2 + im^2 (power) -> MatMul with the mel filterbank
      -> 10 log10(max(S, 1e-10)), floored at each item's maximum - top_db (dsp.power_to_db)
      -> (x - mean) / std (the stored normalisation)
      -> the network (BatchNorm folded; Dropout gone; a transformer's LayerNormalization,
         attention as MatMul and Softmax, GELU through Erf) -> Softmax
      -> probabilities [batch, classes]
The DFT as a convolution: frame t of the centred, zero-padded signal is
xpad[t hop : t hop + n_fft], and bin k of its windowed DFT is
    X[t, k] = sum_n xpad[t hop + n] w[n] exp(-2 pi i k n / n_fft),
a cross-correlation of xpad with the kernels w[n] cos(2 pi k n / n_fft) (the real part) and
-w[n] sin(2 pi k n / n_fft) (the imaginary part), at stride hop: one Conv, whose 2 (n_fft/2 + 1)
output channels are the real and imaginary parts.  A device then needs only onnxruntime and
an audio buffer; the caller windows longer audio.

An int8 model (scratchnet.quantize) becomes a QDQ graph of the same computation: every
quantised tensor (a layer's input, a requantised output, a tensor held between blocks) passes
QuantizeLinear -> DequantizeLinear with its calibrated scale (uint8 after a ReLU, int8
otherwise), the weights are int8 behind a per-channel DequantizeLinear and the biases int32
at scale s_x s_w[o].  onnxruntime fuses each DequantizeLinear -> op -> QuantizeLinear into an
integer kernel (QLinearConv, QLinearAdd, QLinearGlobalAveragePool, a uint8 MaxPool); the
classifier, whose output is not quantised, stays a float Gemm of the dequantised weights.
The class names go in the model's metadata_props under "classes", as a JSON list.
"""
import json

import numpy as np

from dsp.mel import mel_filterbank
from dsp.stft import get_window
from scratchnet.fusion import FoldedBatchNorm
from scratchnet.layers import (BasicBlock, Conv2d, Dropout, GlobalAvgPool2d, Linear,
                               MaxPool2d, ReLU, Sequential, TimeDeltas, TimeMaxMeanPool)
from scratchnet.layers.deltas import delta_matrix
from scratchnet.quantize import FakeQuantize, QuantizedConv2d, QuantizedLinear
from scratchnet.runtime.backend import to_numpy

OPSET = 17


class GraphBuilder:
    """Nodes and constants of one graph, with fresh names."""

    def __init__(self):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, stem):
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, array, stem="const"):
        name = self.name(stem)
        array = np.asarray(array)  # host: a graph's constants are host arrays
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def ints(self, *values):
        """An int64 vector constant (axes, slice bounds)."""
        return self.const(np.fromiter(values, dtype=np.int64), "ints")

    def op(self, kind, inputs, stem=None, **attributes):
        out = self.name(stem or kind.lower())
        self.nodes.append(self.helper.make_node(kind, inputs, [out], **attributes))
        return out


def dft_kernels(g, n_fft):
    """[2 (n_fft/2 + 1), 1, n_fft]: w[n] cos(2 pi k n / N) over -w[n] sin(2 pi k n / N),
    computed in the graph from k, n and w (4 MB of float32 kernels are then not stored; the
    runtime folds the constant once, when it loads the model).  k n mod N is taken in
    integers first, so the phase keeps float32's precision for every k and n."""
    bins = n_fft // 2 + 1
    k = g.const(np.arange(bins, dtype=np.int64)[:, None], "k")
    n = g.const(np.arange(n_fft, dtype=np.int64)[None, :], "n")
    turns = g.op("Cast", [g.op("Mod", [g.op("Mul", [k, n]),
                                       g.const(np.int64(n_fft))])], to=1)  # to float
    phase = g.op("Mul", [turns, g.const(np.float32(2 * np.pi / n_fft))])
    w = g.const(get_window("hann", n_fft).astype(np.float32), "window")
    real = g.op("Mul", [g.op("Cos", [phase]), w])
    imag = g.op("Neg", [g.op("Mul", [g.op("Sin", [phase]), w])])
    return g.op("Unsqueeze", [g.op("Concat", [real, imag], axis=0), g.ints(1)])


def front_end(g, audio, features, normalization):
    """The log-Mel of ``audio`` [batch, samples], standardised: [batch, 1, n_mels, frames]."""
    n_fft, hop = features["n_fft"], features["hop_length"]
    if features.get("center", True) is False or features.get("pad_mode", "constant") != \
            "constant" or features.get("power", 2.0) != 2.0:
        raise ValueError("ONNX export supports the front end's centred, zero-padded power "
                         "spectrogram (the presets' features)")
    bins = n_fft // 2 + 1
    x = g.op("Unsqueeze", [audio, g.ints(1)])      # [B, 1, S]
    spec = g.op("Conv", [x, dft_kernels(g, n_fft)], "dft", strides=[hop],
                pads=[n_fft // 2, n_fft // 2], kernel_shape=[n_fft])
    square = g.op("Mul", [spec, spec])                                    # [B, 2K, T]
    re2 = g.op("Slice", [square, g.ints(0), g.ints(bins), g.ints(1)])
    im2 = g.op("Slice", [square, g.ints(bins), g.ints(2 * bins), g.ints(1)])
    power = g.op("Add", [re2, im2])                                       # [B, K, T]
    basis = mel_filterbank(features["sr"], n_fft, features["n_mels"], features["fmin"],
                           features["fmax"]).astype(np.float32)
    mel = g.op("MatMul", [g.const(basis, "mel_basis"), power])            # [B, M, T]
    floored = g.op("Max", [mel, g.const(np.float32(1e-10))])
    db = g.op("Mul", [g.op("Log", [floored]), g.const(np.float32(10 / np.log(10)))])
    top_db = features.get("top_db", 80.0)
    if top_db is not None:
        peak = g.op("ReduceMax", [db], axes=[1, 2], keepdims=1)
        db = g.op("Max", [db, g.op("Sub", [peak, g.const(np.float32(top_db))])])
    mean, std = (np.asarray(normalization[k], np.float32)  # host: numbers from JSON
                 for k in ("mean", "std"))
    if mean.ndim:  # per mel bin
        mean, std = mean[:, None], std[:, None]
    x = g.op("Div", [g.op("Sub", [db, g.const(mean, "mean")]), g.const(std, "std")])
    return g.op("Unsqueeze", [x, g.ints(1)])      # [B, 1, M, T]


def quantize_dequantize(g, x, scale, unsigned):
    zero = np.uint8(0) if unsigned else np.int8(0)
    s, z = g.const(np.float32(scale), "x_scale"), g.const(zero, "x_zero")
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z]), s, z])


def weights(g, layer):
    """(weight, bias) input names of a layer: float constants, or int8 behind
    DequantizeLinear for a quantised one."""
    if isinstance(layer, (QuantizedConv2d, QuantizedLinear)):
        w_scale = to_numpy(layer.weight_scale).astype(np.float32)
        s_x = float(to_numpy(layer.input_scale))
        w = g.op("DequantizeLinear", [g.const(to_numpy(layer.weight_q), "w_int8"),
                                      g.const(w_scale, "w_scale"),
                                      g.const(np.zeros(len(w_scale), np.int8), "w_zero")],
                 axis=0)
        b_scale = (s_x * w_scale).astype(np.float32)
        b_q = np.rint(to_numpy(layer.bias) / b_scale).astype(np.int32)
        b = g.op("DequantizeLinear", [g.const(b_q, "b_int32"), g.const(b_scale, "b_scale"),
                                      g.const(np.zeros(len(b_scale), np.int32), "b_zero")],
                 axis=0)
        return w, b
    w = g.const(to_numpy(layer.weight.data).astype(np.float32), "weight")
    bias = layer.bias.data if layer.bias is not None else np.zeros(layer.weight.shape[0])
    return w, g.const(to_numpy(bias).astype(np.float32), "bias")


def network(g, layer, x):
    """Emit ``layer`` applied to ``x``; returns the output's name."""
    if isinstance(layer, BasicBlock):
        y = network(g, layer.conv2, network(g, layer.relu1,
                                            network(g, layer.conv1, x)))
        shortcut = x if layer.downsample is None else network(g, layer.downsample, x)
        return g.op("Relu", [g.op("Add", [y, shortcut])])
    if isinstance(layer, Sequential):  # the network, the stem, a stage
        children = list(layer)
        i = 0
        while i < len(children):
            window = children[i:i + 3]
            if [type(c) for c in window[:2]] == [MaxPool2d, ReLU]:
                # max and ReLU commute, and so do max and a (monotone) quantiser: the ReLU,
                # and the quantiser that follows, go before the pool, so that the
                # convolution before them can end in integers.
                x = network(g, window[1], x)
                held = len(window) == 3 and isinstance(window[2], FakeQuantize)
                if held:
                    x = network(g, window[2], x)
                x = network(g, window[0], x)
                if held:
                    x = network(g, window[2], x)
                i += 3 if held else 2
                continue
            x = network(g, children[i], x)
            i += 1
        return x
    if isinstance(layer, FakeQuantize):
        return quantize_dequantize(g, x, float(to_numpy(layer.scale)), layer.unsigned)
    if isinstance(layer, (FoldedBatchNorm, Dropout)):  # folded away; eval mode
        return x
    if isinstance(layer, ReLU):
        return g.op("Relu", [x])
    if isinstance(layer, (Conv2d, QuantizedConv2d)):
        if isinstance(layer, QuantizedConv2d):
            x = quantize_dequantize(g, x, float(to_numpy(layer.input_scale)), layer.unsigned)
            kernel = layer.weight_q.shape[2:]
        else:
            kernel = layer.kernel_size
        w, b = weights(g, layer)
        p = layer.padding
        y = g.op("Conv", [x, w, b], "conv", strides=[layer.stride] * 2, pads=[p, p, p, p],
                 kernel_shape=list(kernel))
        if getattr(layer, "requantize", False):  # its output held in int8
            y = quantize_dequantize(g, y, float(to_numpy(layer.output_scale)), False)
        return y
    if isinstance(layer, MaxPool2d):
        p = layer.padding
        return g.op("MaxPool", [x], kernel_shape=[layer.kernel_size] * 2,
                    strides=[layer.stride] * 2, pads=[p, p, p, p])
    if isinstance(layer, GlobalAvgPool2d):
        return g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    if isinstance(layer, TimeMaxMeanPool):
        m = g.op("ReduceMean", [x], axes=[2], keepdims=0)                 # [B, C, T]
        return g.op("Add", [g.op("ReduceMax", [m], axes=[2], keepdims=0),
                            g.op("ReduceMean", [m], axes=[2], keepdims=0)])
    if isinstance(layer, (Linear, QuantizedLinear)):
        if isinstance(layer, QuantizedLinear):
            x = quantize_dequantize(g, x, float(to_numpy(layer.input_scale)), layer.unsigned)
        w, b = weights(g, layer)
        return g.op("Gemm", [x, w, b], "fc", transB=1)
    if isinstance(layer, TimeDeltas):
        raise NotImplementedError("TimeDeltas needs the input's frame count: see time_deltas")
    emit = TRANSFORMER_LAYERS.get(type(layer))
    if emit is not None:
        return emit(g, layer, x)
    raise ValueError(f"ONNX export does not know the layer {type(layer).__name__}")


def time_deltas(g, layer, x, frames):
    """[x, x D^T (, x D^T D^T)] along the channels (scratchnet.TimeDeltas)."""
    d_t = g.const(delta_matrix(frames, layer.width).T.astype(np.float32), "delta")
    blocks = [x]
    for _ in range(layer.order):
        blocks.append(g.op("MatMul", [blocks[-1], d_t]))
    return g.op("Concat", blocks, axis=1)


def classifier_graph(clf):
    """The ONNX ModelProto of a ``experiments.inference.Classifier``, raw audio in,
    probabilities out, with the class names and the model's card in metadata_props."""
    from onnx import TensorProto, helper
    g = GraphBuilder()
    features = dict(clf.features.config(), **clf.meta["features"])
    x = front_end(g, "audio", features, clf.normalization)
    frames = clf.features.num_frames(clf.window)
    shifts = clf.shifts or [0]
    outputs = []
    for k in shifts:  # test-time shifts: the probabilities averaged over circular rolls
        view = x
        if k:
            cut = (-k) % frames
            view = g.op("Concat", [g.op("Slice", [x, g.ints(cut), g.ints(frames), g.ints(3)]),
                                   g.op("Slice", [x, g.ints(0), g.ints(cut), g.ints(3)])],
                        axis=3)
        for child in clf.model:
            view = (time_deltas(g, child, view, frames) if isinstance(child, TimeDeltas)
                    else network(g, child, view))
        outputs.append(g.op("Softmax", [view], axis=1))
    probs = outputs[0]
    for other in outputs[1:]:
        probs = g.op("Add", [probs, other])
    if len(outputs) > 1:
        probs = g.op("Div", [probs, g.const(np.float32(len(outputs)))])
    g.nodes.append(helper.make_node("Identity", [probs], ["probabilities"]))
    graph = helper.make_graph(
        g.nodes, "scratchnet_esc50",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", clf.window])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                       ["batch", len(clf.classes)])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="scratchnet-esc50")
    model.ir_version = 8  # onnxruntime releases back to 1.14 read it
    card = {k: clf.meta.get(k) for k in ("preset", "fold", "trained_on", "accuracy")}
    for key, value in dict(classes=clf.classes, sample_rate=clf.sr, samples=clf.window,
                           stored_dtype=clf.meta.get("stored_dtype", "float32"),
                           **card).items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    return model


# -- the transformer's layers --------------------------------------------------------------------

def host(array):
    return to_numpy(array).astype(np.float32)


def layer_norm(g, layer, x):
    """LayerNormalization over the last axis (opset 17)."""
    return g.op("LayerNormalization", [x, g.const(host(layer.weight.data), "gamma"),
                                       g.const(host(layer.bias.data), "beta")],
                axis=-1, epsilon=float(layer.eps))


def tokenwise_linear(g, linear, x):
    """x W^T + b on the last axis of tokens (N, T, D)."""
    return g.op("Add", [g.op("MatMul", [x, g.const(host(linear.weight.data).T.copy(), "w_t")]),
                        g.const(host(linear.bias.data), "b")])


def gelu(g, x):
    """x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, the exact form."""
    erf = g.op("Erf", [g.op("Mul", [x, g.const(np.float32(1 / np.sqrt(2)))])])
    return g.op("Mul", [g.op("Mul", [x, g.const(np.float32(0.5))]),
                        g.op("Add", [erf, g.const(np.float32(1.0))])])


def self_attention(g, layer, x):
    """softmax(Q K^T / sqrt d) V in H heads, then the output projection."""
    d_model, h = layer.embed_dim, layer.num_heads
    d = d_model // h
    qkv = g.op("Add", [g.op("MatMul", [x, g.const(host(layer.in_proj_weight.data).T.copy(),
                                                  "in_proj_t")]),
                       g.const(host(layer.in_proj_bias.data), "in_proj_bias")])
    heads = g.op("Transpose", [g.op("Reshape", [qkv, g.ints(0, 0, 3, h, d)])],
                 perm=[2, 0, 3, 1, 4])                                # (3, N, H, T, d)
    q, k, v = (g.op("Gather", [heads, g.const(np.int64(i))], axis=0) for i in range(3))
    scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          g.const(np.float32(1 / np.sqrt(d)))])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # (N, H, T, d)
    merged = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]),
                              g.ints(0, 0, d_model)])
    return tokenwise_linear(g, layer.out_proj, merged)


def encoder_layer(g, layer, x):
    """x + MHSA(LN1(x)), then x + W2 GELU(W1 LN2(x)) (dropouts are the identity here)."""
    x = g.op("Add", [x, self_attention(g, layer.self_attn, layer_norm(g, layer.norm1, x))])
    hidden = gelu(g, tokenwise_linear(g, layer.linear1, layer_norm(g, layer.norm2, x)))
    return g.op("Add", [x, tokenwise_linear(g, layer.linear2, hidden)])


def patch_tokens(g, layer, x):
    """(N, D, F', T') -> (N, F' T', D)."""
    return g.op("Transpose", [g.op("Reshape", [x, g.ints(0, 0, -1)])], perm=[0, 2, 1])


def class_token_embedding(g, layer, x):
    """[c; x] + E, the class token broadcast over the batch."""
    first = g.op("Slice", [x, g.ints(0), g.ints(1), g.ints(1)])            # (N, 1, D)
    cls = g.op("Add", [g.op("Mul", [first, g.const(np.float32(0.0))]),
                       g.const(host(layer.cls_token.data), "cls_token")])
    return g.op("Add", [g.op("Concat", [cls, x], axis=1),
                        g.const(host(layer.pos_embed.data), "pos_embed")])


def class_token_pool(g, layer, x):
    return g.op("Gather", [x, g.const(np.int64(0))], axis=1)


def _transformer_layers():
    from scratchnet.layers import (ClassTokenEmbedding, ClassTokenPool, LayerNorm,
                                   PatchTokens, TransformerEncoderLayer)
    return {LayerNorm: layer_norm, TransformerEncoderLayer: encoder_layer,
            PatchTokens: patch_tokens, ClassTokenEmbedding: class_token_embedding,
            ClassTokenPool: class_token_pool}


TRANSFORMER_LAYERS = _transformer_layers()
