"""Save and load model state as ``.npz`` (arrays on the host, plus a JSON metadata string)."""
import json
import os
import tempfile

import numpy as np

from .runtime.backend import to_numpy

_META_KEY = "__meta__"


def save_checkpoint(path, state, meta=None):
    """Write ``state`` (name -> array, NumPy or CuPy) and a JSON-able ``meta`` dict to ``path``.

    The file is written beside its destination and renamed into place, so a run killed
    mid-write leaves the previous checkpoint intact."""
    arrays = {k: to_numpy(v) for k, v in state.items()}
    if _META_KEY in arrays:
        raise ValueError(f"{_META_KEY!r} is reserved for the metadata")
    arrays[_META_KEY] = np.array(json.dumps(meta or {}))  # host: a JSON string
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint is not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path):
    """Return (state, meta) from a file written by :func:`save_checkpoint`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files if k != _META_KEY}
            meta = json.loads(str(f[_META_KEY])) if _META_KEY in f.files else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {path} is not a readable .npz file: {e}") from e
    return state, meta
