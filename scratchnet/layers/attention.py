"""Multi-head scaled dot-product self-attention, with PyTorch's parameter layout."""
import numpy as np

from ..runtime import blas
from ..runtime.backend import get_array_module
from .base import Layer, Parameter, check_input
from .dropout import Dropout
from .init import default_rng
from .linear import Linear


class MultiHeadSelfAttention(Layer):
    """Tokens x (N, T, D) attend to each other in H heads of d = D / H features:

        [Q K V] = x W_in^T + b_in               W_in (3D, D): the query, key, value maps
        S_h = Q_h K_h^T / sqrt(d)               (N, T, T) per head h: token t's score of u
        A_h = softmax(S_h) along u              each row a distribution over the tokens
        C_h = A_h V_h                           each token a weighted mean of the values
        y = [C_1 ... C_H] W_out^T + b_out       out_proj, a Linear(D, D)

    The 1/sqrt(d) keeps the scores' variance near 1 for unit-variance q and k (a dot product
    of d independent terms has variance d), so the softmax does not saturate at the start.

    Backward, from dy through out_proj to dC, then per head:
        dV = A^T dC,   dA = dC V^T,
        softmax's Jacobian  dA_tu/dS_tv = A_tu ([u = v] - A_tv)  gives, row by row,
        dS = A * (dA - sum_u(A * dA)),        (llm.c's dpreatt = att * (datt - sum(att*datt)))
        dQ = dS K / sqrt(d),   dK = dS^T Q / sqrt(d),
    and from d[Q K V] (N T, 3D):  dW_in = d[QKV]^T x,  db_in = sum d[QKV],  dx = d[QKV] W_in.
    With ``dropout`` > 0 the attention weights are dropped in training (PyTorch's dropout_p),
    and the backward goes through the same mask.

    Parameters as ``torch.nn.MultiheadAttention``: ``in_proj_weight`` (Xavier-uniform),
    ``in_proj_bias`` (zeros), ``out_proj.weight`` and ``out_proj.bias`` (zeros), so that a
    state_dict moves across.  Forward keeps x, Q, K, V and A (A is what visualize shows).
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, rng=None, seed=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadSelfAttention: embed_dim {embed_dim} is not a multiple "
                             f"of num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        bound = np.sqrt(6.0 / (embed_dim + 3 * embed_dim))  # Xavier-uniform, as PyTorch's
        self.in_proj_weight = Parameter(default_rng(rng).uniform(
            -bound, bound, (3 * embed_dim, embed_dim)).astype(np.float32))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype=np.float32))
        self.out_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.out_proj.bias.data[...] = 0
        self.attn_drop = Dropout(dropout, seed=seed)

    def forward(self, x):
        check_input(x, 3, "MultiHeadSelfAttention", self.embed_dim, channel_axis=2)
        xp = get_array_module(x)
        n, t, dim = x.shape
        h, d = self.num_heads, dim // self.num_heads
        x2 = x.reshape(n * t, dim)
        qkv = blas.matmul(x2, self.in_proj_weight.data.T) + self.in_proj_bias.data
        q, k, v = qkv.reshape(n, t, 3, h, d).transpose(2, 0, 3, 1, 4)  # each (N, H, T, d)
        scores = blas.matmul(q, k.transpose(0, 1, 3, 2)) * x.dtype.type(1.0 / np.sqrt(d))
        scores -= scores.max(axis=-1, keepdims=True)  # exp never overflows
        a = xp.exp(scores)
        a /= a.sum(axis=-1, keepdims=True)
        dropped = self.attn_drop.forward(a)
        context = blas.matmul(dropped, v).transpose(0, 2, 1, 3).reshape(n * t, dim)
        self._cache = (x2, q, k, v, a, dropped, x.shape)
        return self.out_proj.forward(context).reshape(n, t, dim)

    def backward(self, dy):
        x2, q, k, v, a, dropped, shape = self.saved()
        n, t, dim = shape
        h, d = self.num_heads, dim // self.num_heads
        xp = get_array_module(dy)
        d_context = self.out_proj.backward(dy.reshape(n * t, dim))
        d_context = d_context.reshape(n, t, h, d).transpose(0, 2, 1, 3)   # (N, H, T, d)
        dv = blas.matmul(dropped.transpose(0, 1, 3, 2), d_context)
        da = self.attn_drop.backward(blas.matmul(d_context, v.transpose(0, 1, 3, 2)))
        ds = a * (da - (a * da).sum(axis=-1, keepdims=True))
        ds *= dy.dtype.type(1.0 / np.sqrt(d))
        dq, dk = blas.matmul(ds, k), blas.matmul(ds.transpose(0, 1, 3, 2), q)
        dqkv = xp.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(n * t, 3 * dim)
        self.in_proj_weight.grad += blas.matmul(dqkv.T, x2)
        self.in_proj_bias.grad += dqkv.sum(axis=0)
        return blas.matmul(dqkv, self.in_proj_weight.data).reshape(n, t, dim)

    def attention(self):
        """The attention weights A (N, H, T, T) of the last forward pass (not consumed), or
        None before one."""
        return None if self._cache is None else self._cache[4]
