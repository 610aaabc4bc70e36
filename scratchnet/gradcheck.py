"""Finite-difference gradient checks (float64).

Element-wise (CS231n): for a scalar L(x) = <f(x), dy>, the central difference
    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / 2h,   error O(h^2 f''').
Directional (Chainer): along one random unit direction r,
    (L(x + h r) - L(x - h r)) / 2h ~ <dL/dx, r>,
which needs two forward passes whatever the size of x, so whole networks stay affordable.
"""
import numpy as np

from .runtime.backend import get_array_module, to_numpy


def relative_error(a, b):
    """max |a - b| / max(1e-8, max(|a| + |b|)): scale-free, robust to exact zeros."""
    a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(1e-8, float(np.max(np.abs(a) + np.abs(b)))))


def numerical_gradient(f, x, dy, h=1e-6):
    """dL/dx for L = sum(f(x) * dy), by central differences on every element of x (in place,
    restored afterwards).  ``f`` takes no argument and reads x."""
    xp = get_array_module(x)
    grad = xp.zeros_like(x)
    # By index, not through a flat view: x may be any strided array (a convolution's weight
    # lives in channels-last memory), and reshape(-1) of that would perturb a copy.
    for i in np.ndindex(*x.shape):
        old = x[i].copy()
        x[i] = old + h
        plus = float((f() * dy).sum())
        x[i] = old - h
        minus = float((f() * dy).sum())
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def check_layer(layer, x, seed=0, h=1e-6, reset=None):
    """Compare analytic and numerical gradients of ``layer`` at x (float64) for the input and
    every parameter.  Returns {"input": err, "<param name>": err, ...}.  ``reset`` is called
    before every forward (to fix a dropout mask, say)."""
    if x.dtype != np.float64:
        raise TypeError("gradient checks must run in float64")
    xp = get_array_module(x)
    rng = np.random.default_rng(seed)

    def forward():
        if reset is not None:
            reset()
        return layer.forward(x)

    y = forward()
    dy = xp.asarray(rng.standard_normal(y.shape))
    layer.zero_grad()
    dx = layer.backward(dy)
    errors = {"input": relative_error(dx, numerical_gradient(forward, x, dy, h))}
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}
    for name, p in layer.named_parameters():
        errors[name] = relative_error(analytic[name], numerical_gradient(forward, p.data, dy, h))
    return errors


def directional_check(loss_fn, params, backward_fn, seed=0, h=1e-5):
    """Directional derivative check over a list of arrays ``params`` (each perturbed in place).

    ``loss_fn()`` returns the scalar loss; ``backward_fn()`` returns the analytic gradients of
    the loss for each array in ``params``.  Returns (numerical, analytic) directional slopes.
    """
    rng = np.random.default_rng(seed)
    grads = backward_fn()
    directions = [get_array_module(p).asarray(rng.standard_normal(p.shape)) for p in params]
    norm = np.sqrt(sum(float((d * d).sum()) for d in directions))
    directions = [d / norm for d in directions]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions))
    for p, d in zip(params, directions):
        p += h * d
    plus = float(loss_fn())
    for p, d in zip(params, directions):
        p -= 2 * h * d
    minus = float(loss_fn())
    for p, d in zip(params, directions):
        p += h * d
    return (plus - minus) / (2 * h), analytic


def network_directional_error(model, loss, x, targets, seed=0, h=1e-5):
    """The relative gap between the numerical and analytic slopes of loss(model(x), targets)
    along one random direction of the input and every parameter (:func:`directional_check`
    on a whole network)."""
    params = list(model.parameters())

    def backward():
        model.zero_grad()
        loss.forward(model.forward(x), targets)
        dx = model.backward(loss.backward())
        return [dx] + [p.grad for p in params]

    numeric, analytic = directional_check(lambda: loss.forward(model.forward(x), targets),
                                          [x] + [p.data for p in params], backward, seed, h)
    return abs(numeric - analytic) / max(1e-8, abs(numeric) + abs(analytic))
