"""Layer normalisation: each token's features standardised by their own mean and variance."""
import numpy as np

from .base import Layer, Parameter


class LayerNorm(Layer):
    """Over the last axis (D features) of each token x (..., D):
        mu = (1/D) sum_j x_j,   var = (1/D) sum_j (x_j - mu)^2,   r = 1 / sqrt(var + eps),
        xhat = (x - mu) r,      y = gamma * xhat + beta          (gamma, beta: (D,)).
    Unlike BatchNorm it uses no other sample's statistics, so training and inference compute
    the same function and nothing runs.

    Backward (per token; g = dy * gamma, sums over the D features):
        dbeta = sum_tokens dy,   dgamma = sum_tokens dy * xhat,
        dxhat_j = g_j;  xhat depends on x through x_j, mu and r:
        dx = r (g - mean(g) - xhat mean(g * xhat)),
    since d mu / dx_j = 1/D and d r / dx_j = -r^3 (x_j - mu) / D, which is where the two means
    come from (the derivation of llm.c's doc/layernorm).  Forward keeps xhat and r.
    Parameters as PyTorch's: ``weight`` (gamma, ones) and ``bias`` (beta, zeros)."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(np.ones(normalized_shape, dtype=np.float32))
        self.bias = Parameter(np.zeros(normalized_shape, dtype=np.float32))

    def forward(self, x):
        if x.shape[-1] != self.normalized_shape:
            raise ValueError(f"LayerNorm({self.normalized_shape}) got input of shape "
                             f"{tuple(x.shape)}")
        mu = x.mean(axis=-1, keepdims=True)
        centred = x - mu
        r = 1.0 / (((centred * centred).mean(axis=-1, keepdims=True) + self.eps) ** 0.5)
        xhat = centred * r
        self._cache = (xhat, r)
        return xhat * self.weight.data + self.bias.data

    def backward(self, dy):
        xhat, r = self.saved()
        tokens = tuple(range(dy.ndim - 1))
        self.bias.grad += dy.sum(axis=tokens)
        self.weight.grad += (dy * xhat).sum(axis=tokens)
        g = dy * self.weight.data
        return r * (g - g.mean(axis=-1, keepdims=True)
                    - xhat * (g * xhat).mean(axis=-1, keepdims=True))
