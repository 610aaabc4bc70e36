"""Optimisers (SGD, AdamW), learning-rate schedules and gradient clipping.

Update rules are PyTorch's, so a run can be compared step for step.
"""
import math

import numpy as np

from .runtime.backend import get_array_module, memory_order


def flatten(params):
    """Rebind every parameter's data and grad to views of two flat buffers (their numbers
    copied in, each in its own memory order, so layouts are kept) and return the buffers
    (theta, grad).  For the GPU, where an element-wise update is a kernel launch per tensor
    and operation: over the flat buffers one step is a dozen launches whatever the number of
    tensors.  The parameters must not be rebound afterwards (``to``, ``astype``): make the
    optimiser after moving the model."""
    xp = get_array_module(params[0].data)
    dtype = params[0].data.dtype
    if any(p.data.dtype != dtype for p in params):
        raise ValueError("flat parameters need one dtype")
    total = sum(p.data.size for p in params)
    theta, grad = xp.empty(total, dtype=dtype), xp.empty(total, dtype=dtype)
    for flat, name in ((theta, "data"), (grad, "grad")):
        for p, view in zip(params, views_of(flat, params)):
            view[...] = getattr(p, name)
            setattr(p, name, view)
    return theta, grad


def views_of(flat, params):
    """Per-parameter views of a flat buffer, each laid out as its parameter."""
    views, offset = [], 0
    for p in params:
        views.append(as_laid_out(flat[offset:offset + p.data.size], p.data))
        offset += p.data.size
    return views


def parameters_of(params):
    """The Parameters an optimiser updates: a model's (anything with ``parameters()``), or an
    iterable of Parameters, checked so that a mistake is named here and not in a step."""
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    params = list(params)
    if not params:
        raise ValueError("optimiser got an empty parameter list")
    for i, p in enumerate(params):
        if not (hasattr(p, "data") and hasattr(p, "grad")):
            raise TypeError(f"optimiser parameter {i} is a {type(p).__name__}, not a "
                            "Parameter: pass a model or model.parameters()")
    return params


class Optimizer:
    """``params``: a model, or its ``parameters()``.  ``flat`` (default: on the GPU only) runs
    each step over flat buffers of all the parameters (:func:`flatten`); the CPU keeps its
    per-tensor passes (AdamW's in cache-sized blocks).  The updates are the same numbers either
    way; the clipped norm, one sum instead of a sum of per-tensor sums, agrees to rounding."""

    def __init__(self, params, lr, flat=None):
        self.params = parameters_of(params)
        if not lr >= 0:  # also false for NaN
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.lr = lr
        self.step_count = 0
        if flat is None:
            flat = get_array_module(self.params[0].data) is not np
        self._flat = flatten(self.params) if flat else None

    def flat_gradient(self):
        """One flat buffer whose views are every parameter's ``grad``: the optimiser's own when
        it runs over flat buffers, else the gradients are rebound to views of a new one (their
        numbers kept; the updates read them as before).  For a pass over all the gradients at
        once: summing them over the ranks of a data-parallel job (scratchnet.distributed)."""
        if self._flat is not None:
            return self._flat[1]
        if getattr(self, "_flat_grad", None) is None:
            xp = get_array_module(self.params[0].grad)
            grads = [p.grad for p in self.params]
            if any(g.dtype != grads[0].dtype for g in grads):
                raise ValueError("a flat gradient needs one dtype")
            self._flat_grad = xp.empty(sum(g.size for g in grads), dtype=grads[0].dtype)
            for p, view in zip(self.params, views_of(self._flat_grad, self.params)):
                view[...] = p.grad
                p.grad = view
        return self._flat_grad

    def clip_grad_norm(self, max_norm):
        """:func:`clip_grad_norm` over this optimiser's parameters (one pass over the flat
        gradient when there is one)."""
        if self._flat is None:
            return clip_grad_norm(self.params, max_norm)
        return _clip_flat(self._flat[1], max_norm)

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def state_dict(self):
        """The step count, learning rate and state buffers (live arrays: save, do not keep)."""
        return {"lr": self.lr, "step_count": self.step_count, "buffers": self.state_buffers()}

    def load_state_dict(self, state):
        self.lr, self.step_count = state["lr"], state["step_count"]
        mine = self.state_buffers()
        if len(mine) != len(state["buffers"]):
            raise ValueError("optimiser state does not match the parameters")
        for dst, src in zip(mine, state["buffers"]):
            if dst.shape != src.shape:
                raise ValueError("optimiser state does not match the parameter shapes")
            dst[...] = get_array_module(dst).asarray(src)

    def state_buffers(self):
        """The arrays the update keeps between steps (momentum, moments), in a fixed order."""
        return []


class SGD(Optimizer):
    """g = grad + wd * θ;  with momentum μ: b <- μ b + g (b = g on the first step),
    g <- g + μ b (Nesterov) or g <- b;  θ <- θ - lr g."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, flat=None):
        super().__init__(params, lr, flat)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        if self._flat is None:
            self.velocity = [get_array_module(p.data).zeros_like(p.data) for p in self.params]
        else:
            self._flat_velocity = get_array_module(self._flat[0]).zeros_like(self._flat[0])
            self.velocity = views_of(self._flat_velocity, self.params)

    def state_buffers(self):
        return self.velocity

    def step(self):
        first = self.step_count == 0
        self.step_count += 1
        if self._flat is not None:
            self._update(*self._flat, self._flat_velocity, first)
            return
        for p, b in zip(self.params, self.velocity):
            self._update(p.data, p.grad, b, first)

    def _update(self, theta, grad, b, first):
        g = grad + self.weight_decay * theta if self.weight_decay else grad
        if self.momentum:
            if first:
                b[...] = g
            else:
                b *= self.momentum
                b += g
            g = g + self.momentum * b if self.nesterov else b
        theta -= self.lr * g


def memory_order_views(arrays):
    """1-D views of arrays that share one dense layout, each in the order of its memory
    (a C-contiguous array's C order; a convolution weight's (C_out, kh, kw, C_in) order:
    scratchnet.layers.conv.channels_last_weight), or None when they do not: element k of
    every view is then the same element of every array."""
    first = arrays[0]
    if any(a.shape != first.shape or a.strides != first.strides for a in arrays):
        return None
    # Axes by decreasing stride: the transpose that reads the memory in order.
    order = sorted(range(first.ndim), key=lambda axis: -first.strides[axis])
    views = [a.transpose(order) for a in arrays]
    if not views[0].flags.c_contiguous:
        return None
    return [a.reshape(-1) for a in views]


class AdamW(Optimizer):
    """Decoupled weight decay (Loshchilov & Hutter):  θ <- θ (1 - lr wd), then
    m <- β1 m + (1 - β1) g,  v <- β2 v + (1 - β2) g²,
    θ <- θ - (lr / (1 - β1^t)) m / (sqrt(v / (1 - β2^t)) + eps).

    Every step is element-wise, a dozen NumPy passes with their temporaries; on NumPy they run
    on blocks of BLOCK consecutive elements of each tensor's memory (memory_order_views), one
    block through all of them before the next, so that the block and its temporaries stay in
    the core's cache and each tensor crosses memory once per step instead of once per pass:
    the same numbers, element for element, in less time; BLOCK is among the sizes that
    measured fastest (docs/speed.md, "AdamW in cache-sized blocks";
    benchmarks.profile_layers)."""

    BLOCK = 1 << 16

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 flat=None):
        super().__init__(params, lr, flat)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        if self._flat is None:
            self.m = [get_array_module(p.data).zeros_like(p.data) for p in self.params]
            self.v = [get_array_module(p.data).zeros_like(p.data) for p in self.params]
        else:
            xp = get_array_module(self._flat[0])
            self._flat_m, self._flat_v = xp.zeros_like(self._flat[0]), xp.zeros_like(self._flat[0])
            self.m, self.v = views_of(self._flat_m, self.params), views_of(self._flat_v, self.params)

    def state_buffers(self):
        return self.m + self.v

    def step(self):
        self.step_count += 1
        b1, b2 = self.betas
        t = self.step_count
        step_size = self.lr / (1 - b1 ** t)
        sqrt_bc2 = math.sqrt(1 - b2 ** t)
        decay = 1 - self.lr * self.weight_decay
        if self._flat is not None:
            self._update(*self._flat, self._flat_m, self._flat_v, decay, step_size, sqrt_bc2)
            return
        for p, m, v in zip(self.params, self.m, self.v):
            xp = get_array_module(p.data)
            tensors = (p.data, p.grad, m, v)
            flat = memory_order_views(tensors) if xp is np else None
            if flat is not None:  # views: the writes land in the tensors
                blocks = [[a[k:k + self.BLOCK] for a in flat]
                          for k in range(0, flat[0].size, self.BLOCK)]
            else:
                blocks = [tensors]
            for theta, g, m_block, v_block in blocks:
                self._update(theta, g, m_block, v_block, decay, step_size, sqrt_bc2)

    def _update(self, theta, g, m, v, decay, step_size, sqrt_bc2):
        """The update above on arrays of matching shape, in place."""
        b1, b2 = self.betas
        if self.weight_decay:
            theta *= decay
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        denom = get_array_module(v).sqrt(v)
        denom /= sqrt_bc2
        denom += self.eps
        theta -= step_size * (m / denom)


def clip_grad_norm(params, max_norm):
    """Scale all gradients by min(1, max_norm / ||g||), ||g|| the norm of all of them
    concatenated; returns ||g|| (a 0-d array: no host synchronisation)."""
    params = list(params)
    xp = get_array_module(params[0].grad)
    total = xp.sqrt(sum((p.grad.astype(xp.float64) ** 2).sum() for p in params))
    scale = xp.minimum(1.0, max_norm / (total + 1e-6)).astype(params[0].grad.dtype)
    for p in params:
        p.grad *= scale
    return total


def _clip_flat(grad, max_norm):
    """:func:`clip_grad_norm` on one flat gradient buffer: two reductions and one scale."""
    xp = get_array_module(grad)
    total = xp.sqrt((grad.astype(xp.float64) ** 2).sum())
    grad *= xp.minimum(1.0, max_norm / (total + 1e-6)).astype(grad.dtype)
    return total


def as_laid_out(flat, like):
    """A flat run of numbers viewed with the shape and memory order of the array ``like``."""
    order = memory_order(like)
    inverse = [order.index(axis) for axis in range(like.ndim)]
    return flat.reshape(tuple(like.shape[axis] for axis in order)).transpose(inverse)


class OneCycleLR:
    """Smith's one-cycle schedule, as PyTorch's OneCycleLR (cosine annealing):
    lr rises from max_lr/div_factor to max_lr over the first pct_start of the steps, then falls
    to max_lr/(div_factor*final_div_factor), each phase along a half cosine."""

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4):
        self.optimizer, self.total_steps = optimizer, total_steps
        self.initial_lr = max_lr / div_factor
        self.max_lr = max_lr
        self.min_lr = self.initial_lr / final_div_factor
        self.peak_step = float(pct_start * total_steps) - 1
        self.step_count = 0
        optimizer.lr = self.lr_at(0)

    @staticmethod
    def _cos(start, end, frac):
        return end + (start - end) / 2.0 * (1 + math.cos(math.pi * frac))

    def lr_at(self, step):
        if step <= self.peak_step:
            return self._cos(self.initial_lr, self.max_lr, step / max(self.peak_step, 1e-12))
        down = self.total_steps - 1 - self.peak_step
        return self._cos(self.max_lr, self.min_lr, min(1.0, (step - self.peak_step) / down))

    def step(self):
        self.step_count += 1
        self.optimizer.lr = self.lr_at(self.step_count)

    def state_dict(self):
        return {"step_count": self.step_count}

    def load_state_dict(self, state):
        self.step_count = state["step_count"]
        self.optimizer.lr = self.lr_at(self.step_count)


class CosineWarmupLR(OneCycleLR):
    """Linear warm-up from 0 to base_lr over warmup_steps, then a half cosine down to min_lr."""

    def __init__(self, optimizer, base_lr, total_steps, warmup_steps=0, min_lr=0.0):
        self.optimizer, self.total_steps = optimizer, total_steps
        self.base_lr, self.warmup_steps, self.min_lr = base_lr, warmup_steps, min_lr
        self.step_count = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, step):
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        frac = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self._cos(self.base_lr, self.min_lr, min(1.0, frac))
