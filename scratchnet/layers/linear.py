"""Fully connected layer and the reshape that feeds it."""
from ..runtime import blas
from .base import Layer, Parameter, check_input
from .init import uniform_fan_in


class Linear(Layer):
    """y = x W^T + b,  x (N, in), W (out, in), b (out,).  Initialisation: U(±1/sqrt(in)) for
    both, PyTorch's default (this layer is a classifier head, not followed by a ReLU).
    Backward: dW = dy^T x,  db = sum_n dy,  dx = dy W."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(uniform_fan_in((out_features, in_features), in_features, rng))
        self.bias = Parameter(uniform_fan_in((out_features,), in_features, rng)) if bias else None

    def forward(self, x):
        check_input(x, 2, "Linear", self.in_features)
        self._cache = x
        y = blas.matmul(x, self.weight.data.T)
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dy):
        x = self.saved()
        self.weight.grad += blas.matmul(dy.T, x)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=0)
        return blas.matmul(dy, self.weight.data)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...); backward reshapes the gradient back."""

    def forward(self, x):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.saved())
