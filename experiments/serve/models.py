"""The checkpoints the server offers: a model.npz, or every classifier checkpoint in a folder.

Each is loaded the first time a request names it and kept; a lock per model lets one request
at a time run its network (the layers keep what backward would need, so a model is not to be
run by two threads at once).
"""
import os
import threading

from scratchnet import CheckpointError, load_checkpoint

from ..inference import DEFAULT_CHECKPOINT, Classifier


class Shelf:
    """Model id -> checkpoint path, the loaded classifiers and their locks."""

    def __init__(self, paths, device="cpu"):
        self.device = device
        self.paths = {}
        for path in paths:
            self.paths[model_id(path, self.paths)] = path
        if not self.paths:
            raise CheckpointError("no classifier checkpoint to serve")
        self._loaded, self._locks, self._guard = {}, {}, threading.Lock()

    @property
    def default(self):
        return next(iter(self.paths))

    def get(self, name=None):
        """(classifier, its lock) for model ``name`` (default: the first); KeyError names an
        unknown one."""
        name = name or self.default
        if name not in self.paths:
            raise KeyError(f"unknown model {name!r}; the server has {', '.join(self.paths)}")
        with self._guard:
            if name not in self._loaded:
                self._loaded[name] = Classifier(self.paths[name], self.device)
                self._locks[name] = threading.Lock()
        return self._loaded[name], self._locks[name]

    def cards(self):
        """Every model's card, the default first."""
        return [dict(card(self.paths[name]), id=name, default=name == self.default)
                for name in self.paths]


def model_id(path, taken):
    """A short name for a checkpoint: its file name without .npz (its folder's too when the
    file is a train_esc50 model.npz), made unique."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "model":
        stem = os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}-{k}", k + 1
    return name


def find_checkpoints(spec):
    """The classifier checkpoints named by ``spec``: a file, or a folder searched (two levels
    down, as a train_esc50 --out holds fold*/model.npz) for .npz files whose metadata makes a
    classifier; the packaged model when ``spec`` is None."""
    if spec is None:
        return [DEFAULT_CHECKPOINT]
    if os.path.isfile(spec):
        return [spec]
    found = []
    for folder, dirs, files in os.walk(spec):
        dirs[:] = sorted(d for d in dirs if folder.count(os.sep) - spec.count(os.sep) < 2)
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.endswith(".npz") and is_classifier(path):
                found.append(path)
    if not found:
        raise CheckpointError(f"{spec} holds no classifier checkpoint (a model.npz of "
                              "train_esc50, or one made from it)")
    return found


def is_classifier(path):
    try:
        _, meta = load_checkpoint(path)
    except (OSError, ValueError):
        return False
    return all(key in meta for key in ("features", "model", "normalization", "classes"))


def card(path):
    """What the checkpoint says of itself: preset, folds, accuracy, storage, features."""
    _, meta = load_checkpoint(path)
    features = meta["features"]
    return dict(file=os.path.basename(path), preset=meta.get("preset"),
                fold=meta.get("fold"), trained_on=meta.get("trained_on"),
                accuracy=meta.get("accuracy"), float_accuracy=meta.get("float_accuracy"),
                protocol=meta.get("protocol"),
                date=meta.get("date"), stored=meta.get("stored_dtype", "float32"),
                classes=len(meta["classes"]), sample_rate=features["sr"],
                n_mels=features["n_mels"], widths=meta["model"].get("widths"))
