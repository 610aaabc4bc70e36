"""Exponential moving average of a model's weights (Polyak averaging), evaluated in its place.

After step t of training, with the model's parameters and buffers θ_t,

    θ̄_t = d_t θ̄_{t-1} + (1 - d_t) θ_t,      d_t = min(decay, (1 + t) / (10 + t)),   θ̄_0 = θ_0.

Why: late in training the weights wander around a minimum with the noise of each mini-batch
(and of its augmentation); their running mean sits nearer its centre than any single iterate,
so it is a steadier model to evaluate and to ship.  The weights seen over the last 1 / (1 - decay)
steps dominate: decay 0.999 with 50 steps per epoch averages about the last 20 epochs, when a
one-cycle schedule's learning rate is already small.  d_t starts small so that the random
initial weights are forgotten quickly; it reaches ``decay`` after 10 / (1 - decay) steps.

The buffers are averaged too: BatchNorm's running mean and variance are themselves an average
over the last ~10 batches (momentum 0.1), which the mixup and masking of each batch make
noisy; averaging them with the weights keeps the normalisation consistent with the averaged
weights.  Nothing here is differentiated, so there is no backward pass.
"""
import copy

from .runtime.backend import get_array_module


class ExponentialMovingAverage:
    """Keeps ``self.model``, a copy of ``model`` whose parameters and buffers are the running
    average θ̄ above; call ``update()`` after every optimiser step, evaluate ``self.model``."""

    def __init__(self, model, decay=0.999):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        self._pairs = list(zip(self.model.state_dict().values(),
                               model.state_dict().values()))

    def current_decay(self):
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self):
        """θ̄ <- θ̄ + (1 - d)(θ - θ̄), the same as d θ̄ + (1 - d) θ, in place."""
        self.updates += 1
        d = self.current_decay()
        for avg, current in self._pairs:
            xp = get_array_module(avg)
            step = xp.subtract(current, avg)
            step *= 1.0 - d
            avg += step

    def state_dict(self):
        return {"updates": self.updates, "decay": self.decay,
                "model": self.model.state_dict()}

    def load_state_dict(self, state):
        if state["decay"] != self.decay:
            raise ValueError(f"EMA state has decay {state['decay']}, this average uses "
                             f"{self.decay}")
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["model"])
