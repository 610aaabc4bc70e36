"""The transformer encoder layer, and an Audio Spectrogram Transformer built from it
(Gong, Chung and Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021)."""
from collections import OrderedDict

import numpy as np

from ..runtime.backend import get_array_module
from .activation import GELU
from .attention import MultiHeadSelfAttention
from .base import Layer, Parameter, Sequential, check_input
from .conv import Conv2d
from .dropout import Dropout
from .linear import Linear
from .normalization import LayerNorm


def tokenwise(linear, x):
    """A Linear layer on every token of x (N, T, D): one (N T, D) product."""
    n, t, _ = x.shape
    return linear.forward(x.reshape(n * t, -1)).reshape(n, t, -1)


def tokenwise_backward(linear, dy):
    n, t, _ = dy.shape
    return linear.backward(dy.reshape(n * t, -1)).reshape(n, t, -1)


class TransformerEncoderLayer(Layer):
    """Pre-norm, batch first, x (N, T, D):
        x <- x + Drop1(MHSA(LN1(x)))
        x <- x + Drop2(W2 Drop(GELU(W1 LN2(x) + b1)) + b2)
    Backward: each line is y = x + F(x), so dx = dy + F'(x)^T dy (the identity path of a
    residual block: the gradient reaches early layers undiminished), taken from the last line
    to the first.

    Names and parameters as ``torch.nn.TransformerEncoderLayer(d_model, nhead,
    dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True)``:
    ``self_attn.in_proj_weight``, ``self_attn.out_proj.*``, ``linear1.*``, ``linear2.*``,
    ``norm1.*``, ``norm2.*``: its state_dict loads here and back in one line."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, rng=None, seed=None):
        super().__init__()
        self.d_model = d_model
        self.self_attn = MultiHeadSelfAttention(d_model, nhead, dropout, rng=rng, seed=seed)
        self.linear1 = Linear(d_model, dim_feedforward, rng=rng)
        self.dropout = Dropout(dropout, seed=None if seed is None else seed + 1)
        self.linear2 = Linear(dim_feedforward, d_model, rng=rng)
        self.norm1, self.norm2 = LayerNorm(d_model), LayerNorm(d_model)
        self.dropout1 = Dropout(dropout, seed=None if seed is None else seed + 2)
        self.dropout2 = Dropout(dropout, seed=None if seed is None else seed + 3)
        self.activation = GELU()

    def forward(self, x):
        check_input(x, 3, "TransformerEncoderLayer", self.d_model, channel_axis=2)
        x = x + self.dropout1.forward(self.self_attn.forward(self.norm1.forward(x)))
        hidden = self.dropout.forward(self.activation.forward(
            tokenwise(self.linear1, self.norm2.forward(x))))
        return x + self.dropout2.forward(tokenwise(self.linear2, hidden))

    def backward(self, dy):
        d_hidden = tokenwise_backward(self.linear2, self.dropout2.backward(dy))
        dx = dy + self.norm2.backward(tokenwise_backward(
            self.linear1, self.activation.backward(self.dropout.backward(d_hidden))))
        return dx + self.norm1.backward(self.self_attn.backward(self.dropout1.backward(dx)))


class PatchTokens(Layer):
    """(N, D, F', T') patch embeddings (a Conv2d's output) -> (N, F' T', D) tokens, ordered
    frequency-major as AST's; backward reshapes the gradient back."""

    def forward(self, x):
        check_input(x, 4, "PatchTokens")
        n, d, f, t = x.shape
        self._cache = x.shape
        return x.reshape(n, d, f * t).transpose(0, 2, 1)

    def backward(self, dy):
        n, d, f, t = self.saved()
        return dy.transpose(0, 2, 1).reshape(n, d, f, t)


class ClassTokenEmbedding(Layer):
    """Prepends a learned class token and adds a learned position embedding:
        z = [c; x_1; ...; x_P] + E,    c (1, 1, D), E (1, P + 1, D)   ->  (N, P + 1, D).
    Backward: dx = dz[:, 1:],  dc = sum_n dz[n, 0],  dE = sum_n dz[n].  Both start as
    N(0, 0.02^2), as in ViT and AST."""

    def __init__(self, num_patches, dim, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.num_patches, self.dim = num_patches, dim
        self.cls_token = Parameter((0.02 * rng.standard_normal((1, 1, dim))).astype(np.float32))
        self.pos_embed = Parameter((0.02 * rng.standard_normal(
            (1, num_patches + 1, dim))).astype(np.float32))

    def forward(self, x):
        check_input(x, 3, "ClassTokenEmbedding", self.dim, channel_axis=2)
        if x.shape[1] != self.num_patches:
            raise ValueError(f"ClassTokenEmbedding: {self.num_patches} patches expected, got "
                             f"input of shape {tuple(x.shape)}")
        xp = get_array_module(x)
        self._cache = True
        cls = xp.broadcast_to(self.cls_token.data, (x.shape[0], 1, self.dim))
        return xp.concatenate([cls, x], axis=1) + self.pos_embed.data

    def backward(self, dy):
        self.saved()
        self.cls_token.grad += dy[:, :1].sum(axis=0, keepdims=True)
        self.pos_embed.grad += dy.sum(axis=0, keepdims=True)
        return dy[:, 1:]


class ClassTokenPool(Layer):
    """(N, T, D) -> (N, D): the class token, the first.  Backward: dy into the first token,
    zeros elsewhere."""

    def forward(self, x):
        self._cache = x.shape
        return x[:, 0]

    def backward(self, dy):
        shape = self.saved()
        dx = get_array_module(dy).zeros(shape, dtype=dy.dtype)
        dx[:, 0] = dy
        return dx


class AudioSpectrogramTransformer(Sequential):
    """patch (Conv2d k x k, stride s: overlapping patches when s < k, as AST's 16 x 16 at
    stride 10) -> tokens -> class token and position embedding -> depth x
    TransformerEncoderLayer -> LayerNorm -> the class token -> dropout -> linear.

    ``input_size`` (n_mels, frames) fixes the number of patches, and so the position
    embedding.  ``seed`` fixes the initialisation and the dropout masks.  The interface is
    ResNet's: ``config`` rebuilds it, ``forward_features`` gives the token maps, and
    :meth:`attention_maps` where each layer's class token looks."""

    def __init__(self, in_channels=1, num_classes=50, input_size=(128, 251), dim=192,
                 depth=4, heads=3, mlp_ratio=4, patch=16, patch_stride=10, dropout=0.1,
                 head_dropout=0.0, seed=0, input_grad=True):
        rng = np.random.default_rng(seed)
        f, t = ((s - patch) // patch_stride + 1 for s in input_size)
        if f < 1 or t < 1:
            raise ValueError(f"AudioSpectrogramTransformer: input {input_size} is smaller "
                             f"than one {patch} x {patch} patch")
        parts = OrderedDict(
            patch=Conv2d(in_channels, dim, patch, patch_stride, 0, bias=True, rng=rng,
                         needs_input_grad=input_grad),
            tokens=PatchTokens(),
            embed=ClassTokenEmbedding(f * t, dim, rng=rng),
            blocks=Sequential(*[TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout,
                                                        rng=rng, seed=seed * 1000 + 10 * i)
                                for i in range(depth)]),
            norm=LayerNorm(dim), pool=ClassTokenPool(),
            dropout=Dropout(head_dropout, seed=seed),
            fc=Linear(dim, num_classes, rng=rng))
        super().__init__(parts)
        self.patch_grid = (f, t)
        self.config = dict(kind="ast", in_channels=in_channels, num_classes=num_classes,
                           input_size=list(input_size), dim=dim, depth=depth, heads=heads,
                           mlp_ratio=mlp_ratio, patch=patch, patch_stride=patch_stride,
                           dropout=dropout, head_dropout=head_dropout)

    def forward_features(self, x):
        """Forward through the whole network; returns (logits, {"patches": the patch
        embeddings (N, D, F', T')})."""
        outputs = OrderedDict()
        for name in self._order:
            x = getattr(self, name).forward(x)
            if name == "patch":
                outputs["patches"] = x
        return x, outputs

    def attention_maps(self):
        """After a forward pass: for each layer, the class token's attention over the patches
        (N, F', T'), averaged over the heads."""
        f, t = self.patch_grid
        maps = []
        for layer in self.blocks:
            a = layer.self_attn.attention()          # (N, H, T + 1, T + 1)
            maps.append(a[:, :, 0, 1:].mean(axis=1).reshape(a.shape[0], f, t))
        return maps
