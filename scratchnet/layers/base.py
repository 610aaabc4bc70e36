"""Parameter, Layer and Sequential: the containers every layer is built from.

The contract (PyTorch's, so weights and numbers can be compared):
- ``forward(x)`` returns y and keeps what ``backward`` needs;
- ``backward(dy)`` returns dL/dx and ADDS dL/dθ into ``θ.grad`` for each parameter θ;
- ``train()`` / ``eval()`` switch the mode, ``training`` reads it;
- ``state_dict()`` gives parameters and buffers keyed by their dotted path
  (``layer1.0.bn1.running_mean``), ``load_state_dict`` takes them back.
"""
from collections import OrderedDict

import numpy as np

from ..runtime.backend import get_array_module, to_device


class Parameter:
    """A trainable array and the gradient accumulated into it (same shape and dtype)."""

    def __init__(self, data):
        self.data = data
        self.grad = get_array_module(data).zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Layer:
    """Base class.  Children and parameters are found among the instance attributes, in the
    order they were assigned; buffers (non-trained state such as running statistics) are the
    attributes named in ``_buffers``."""

    _buffers = ()
    _cache = None  # what forward keeps for backward (handed over once: :meth:`saved`)

    def __init__(self):
        self.training = True

    def saved(self):
        """What the last forward kept for backward, released as it is handed over: a backward
        with no forward before it, or a second one after it, is an error that says so rather
        than a gradient of stale or missing inputs."""
        cache, self._cache = self._cache, None
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward pass to go back "
                               "through; call forward(x) before each backward(dy)")
        return cache

    def release_saved(self):
        """Let go of what the last forward pass kept for backward, in this layer and every layer
        inside it (a backward then raises :meth:`saved`'s error)."""
        for layer in self.modules():
            layer._cache = None

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    # -- traversal ---------------------------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Layer):
                yield name, value

    def named_parameters(self, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix=""):
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(prefix + name + ".")

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # -- state -------------------------------------------------------------------------------
    def state_dict(self):
        """Ordered dict of every parameter and buffer array, keyed by dotted path."""
        state = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = p.data
        for name, b in self.named_buffers():
            state[name] = b
        return state

    def _slots(self):
        """name -> (owner, attribute, is_parameter), to write loaded values in place."""
        slots = {}

        def walk(layer, prefix):
            for name, value in vars(layer).items():
                if isinstance(value, Parameter):
                    slots[prefix + name] = (layer, name, True)
            for name in layer._buffers:
                slots[prefix + name] = (layer, name, False)
            for name, child in layer.named_children():
                walk(child, prefix + name + ".")

        walk(self, "")
        return slots

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into this model (onto its device and dtype).

        Raises KeyError naming every missing (and, when strict, unexpected) key and ValueError
        naming a key whose shape differs, before anything is modified.
        """
        slots = self._slots()
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        if missing or (strict and unexpected):
            raise KeyError(f"state_dict does not match the model: missing keys {missing}, "
                           f"unexpected keys {unexpected if strict else []}")
        for key, (owner, attr, is_param) in slots.items():
            current = getattr(owner, attr).data if is_param else getattr(owner, attr)
            if tuple(state[key].shape) != tuple(current.shape):
                raise ValueError(f"state_dict key {key!r} has shape {tuple(state[key].shape)}, "
                                 f"the model expects {tuple(current.shape)}")
        for key, (owner, attr, is_param) in slots.items():
            current = getattr(owner, attr).data if is_param else getattr(owner, attr)
            xp = get_array_module(current)
            value = state[key]
            if get_array_module(value) is not xp:
                value = xp.asarray(to_device(value, "cpu") if xp is np else value)
            current[...] = value.astype(current.dtype, copy=False)
        return self

    def _map_arrays(self, fn):
        for layer in self.modules():
            for name, value in vars(layer).items():
                if isinstance(value, Parameter):
                    value.data = fn(value.data)
                    value.grad = fn(value.grad)
            for name in layer._buffers:
                setattr(layer, name, fn(getattr(layer, name)))
            layer._cache = None

    def to(self, device):
        """Move every parameter, gradient and buffer to "cpu" (NumPy) or "gpu" (CuPy)."""
        self._map_arrays(lambda a: to_device(a, device))
        return self

    def astype(self, dtype):
        """Cast parameters and buffers (float64 for gradient checks, float32 for training)."""
        self._map_arrays(lambda a: a.astype(dtype))
        return self

    def __repr__(self):
        children = ", ".join(name for name, _ in self.named_children())
        return f"{type(self).__name__}({children})"


class Sequential(Layer):
    """y = f_n(... f_2(f_1(x))); backward applies the chain rule in reverse order.

    ``Sequential(a, b, c)`` names its children "0", "1", "2"; ``Sequential({"conv": a, ...})``
    uses the given names (as PyTorch's OrderedDict form).
    """

    def __init__(self, *layers):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], dict):
            named = list(layers[0].items())
        else:
            named = [(str(i), layer) for i, layer in enumerate(layers)]
        for name, layer in named:
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential child {name!r} is a {type(layer).__name__}, "
                                "not a Layer")
            setattr(self, name, layer)
        self._order = [name for name, _ in named]

    def __iter__(self):
        return (getattr(self, name) for name in self._order)

    def __len__(self):
        return len(self._order)

    def __getitem__(self, i):
        return getattr(self, self._order[i])

    def forward(self, x):
        # A pass replaces what the last one kept for backward, which eval mode keeps until then
        # (each layer's input or output): let go of it first, so that two passes' activations
        # never coexist (docs/speed.md, "Memory kept, not page-faulted").
        self.release_saved()
        for layer in self:
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for name in reversed(self._order):
            if dy is None:  # an earlier layer declined its input gradient: nothing flows on
                break
            dy = getattr(self, name).backward(dy)
        return dy


def check_input(x, ndim, layer, channels=None, channel_axis=1):
    """Raise a clear error for an input of the wrong rank or channel count."""
    if getattr(x, "ndim", None) != ndim:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{layer} expects a {ndim}-D input, got shape {shape}")
    if channels is not None and x.shape[channel_axis] != channels:
        raise ValueError(f"{layer} expects {channels} channels on axis {channel_axis}, "
                         f"got input of shape {tuple(x.shape)}")
