"""Softmax cross-entropy with hard labels, soft targets (Mixup) and label smoothing."""
import numpy as np

from .runtime.backend import get_array_module


def log_softmax(z):
    """log p_k = z_k - logsumexp(z); the max is subtracted first so exp never overflows."""
    xp = get_array_module(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class SoftmaxCrossEntropy:
    """L = -(1/N) sum_n sum_k q_nk log p_nk,   p_n = softmax(z_n),
    q_n = (1 - eps) t_n + eps / K,   t_n = one-hot(label_n) or a probability row (Mixup).

    Backward.  log p_nk = z_nk - logsumexp(z_n), so d log p_nk / d z_nj = delta_kj - p_nj and,
    since sum_k q_nk = 1,
        dL/dz_nj = -(1/N) sum_k q_nk (delta_kj - p_nj) = (p_nj - q_nj) / N.
    """

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._cache = None

    def __call__(self, logits, targets):
        """``loss_fn(logits, targets)``: the forward pass, as a layer is called."""
        return self.forward(logits, targets)

    def targets_distribution(self, targets, n, k, dtype, xp):
        """The smoothed target rows q (N, K) for integer labels or probability rows."""
        if not hasattr(targets, "ndim"):
            targets = np.asarray(targets)  # host: a list of labels or rows
        if targets.ndim == 1:
            if targets.shape[0] != n or targets.dtype.kind not in "iu":
                raise ValueError(f"integer labels must have shape ({n},), got "
                                 f"{targets.shape} of dtype {targets.dtype}")
            # Checked where the labels are: host labels cost the GPU no synchronisation (an
            # out-of-range index would wrap there silently instead of raising).
            low, high = (int(targets.min()), int(targets.max())) if n else (0, 0)
            if low < 0 or high >= k:
                raise ValueError(f"labels must lie in [0, {k}), got range [{low}, {high}]")
        targets = xp.asarray(targets)
        if targets.ndim == 1:
            q = xp.zeros((n, k), dtype=dtype)
            q[xp.arange(n), targets] = 1
        elif targets.ndim == 2:
            if targets.shape != (n, k):
                raise ValueError(f"target rows must have shape ({n}, {k}), got {targets.shape}")
            q = targets.astype(dtype)
        else:
            raise ValueError(f"targets must be labels (N,) or probabilities (N, K), got shape "
                             f"{targets.shape}")
        eps = self.label_smoothing
        if eps:
            q = q * (1 - eps) + eps / k
        return q

    def forward(self, logits, targets):
        xp = get_array_module(logits)
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (N, K), got {logits.shape}")
        n, k = logits.shape
        q = self.targets_distribution(targets, n, k, logits.dtype, xp)
        logp = log_softmax(logits)
        loss = -(q * logp).sum() / n
        # Checked here on the host; on a GPU this would stop every step to read the loss, so
        # there the caller checks the sum it reads once per epoch (experiments.train_esc50).
        if xp is np and not np.isfinite(loss):
            raise FloatingPointError(f"non-finite loss ({float(loss)}): the logits contain "
                                     f"{int((~xp.isfinite(logits)).sum())} non-finite values; "
                                     "lower the learning rate or check the input features")
        self._cache = (logp, q)
        return loss

    def backward(self):
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward: no forward pass to go back "
                               "through; call loss_fn(logits, targets) before each backward()")
        (logp, q), self._cache = self._cache, None
        xp = get_array_module(logp)
        return (xp.exp(logp) - q) / logp.shape[0]
