"""Save and load model state as ``.npz`` (arrays on the host, plus a JSON metadata string)."""
import json
import os
import tempfile

import numpy as np

from .runtime.backend import to_numpy

_META_KEY = "__meta__"
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive of .npy files


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint: truncated, corrupt or of another kind; the
    message names the file and which of these it is."""


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
    """Return (state, meta) from a file written by :func:`save_checkpoint`.

    A missing file raises FileNotFoundError; one that is not an .npz archive, a truncated or
    corrupt one, or an .npz without this module's metadata raises :class:`CheckpointError`
    naming the file and the problem."""
    import zipfile
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:
        raise CheckpointError(f"{path} is not a checkpoint: not an .npz archive "
                              f"({'empty' if not head else 'it starts with ' + repr(head)})")
    try:
        with np.load(path, allow_pickle=False) as f:
            if _META_KEY not in f.files:
                raise CheckpointError(f"{path} is an .npz archive but not a scratchnet "
                                      "checkpoint (it has no metadata entry)")
            state = {k: f[k] for k in f.files if k != _META_KEY}
            meta = json.loads(str(f[_META_KEY]))
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") \
            from e
    return state, meta
