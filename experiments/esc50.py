"""ESC-50: finding, fetching and reading the data set, and the cached log-Mel features.

Layout (the official one): ``meta/esc50.csv`` and ``audio/<name>.wav`` (44.1 kHz); a copy with
``audio/<stem>.flac`` (any rate) works the same, every clip being resampled to the configured
rate.  2000 five-second clips, 50 classes, 5 predefined folds of 400 clips.
"""
import csv
import hashlib
import json
import os
import sys

import numpy as np

from dsp import LogMel, load_audio
from scratchnet.runtime.backend import get_array_module, to_numpy

NUM_CLASSES = 50
CLIP_SECONDS = 5.0
# A fold's last epochs, whose mean accuracy is reported beside its final one (a fold that
# ends on a lucky or unlucky epoch shows it): training scores each of them.
LAST_EPOCHS = 10
DEFAULT_DIR = os.path.join("data", "ESC-50")
ARCHIVE_URL = "https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class DatasetNotFound(FileNotFoundError):
    pass


def find_dataset(path=None, download_hint=True):
    """The ESC-50 root: ``path`` (from --data), else $ESC50_DIR, else ./data/ESC-50; the error
    suggests --download where the command has it (``download_hint``)."""
    candidates = [("--data", path), ("$ESC50_DIR", os.environ.get("ESC50_DIR")),
                  ("default", DEFAULT_DIR)]
    for source, candidate in candidates:
        if not candidate:
            continue
        if os.path.isfile(os.path.join(candidate, "meta", "esc50.csv")):
            return candidate
        if source != "default":
            raise DatasetNotFound(f"ESC-50 not found at {candidate} (given by {source}): "
                                  "expected meta/esc50.csv and audio/ inside it")
    raise DatasetNotFound(
        "ESC-50 not found: pass --data DIR, set $ESC50_DIR, or place it at ./data/ESC-50 "
        "(meta/esc50.csv and audio/)." + (" To fetch the official archive (about 600 MB), "
                                          "run train_esc50 with --download." if download_hint
                                          else " train_esc50 --download fetches it there."))


def read_metadata(root):
    """Rows of meta/esc50.csv as dicts with int ``fold`` and ``target``, in file order."""
    path = os.path.join(root, "meta", "esc50.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"filename", "fold", "target", "category"}
    if not rows or not required <= set(rows[0]):
        raise ValueError(f"{path}: expected columns {sorted(required)}")
    for row in rows:
        row["fold"], row["target"] = int(row["fold"]), int(row["target"])
    return rows


def audio_path(root, filename):
    """The clip's file under audio/: the listed name, or the same stem as .flac / .ogg."""
    stem = os.path.splitext(filename)[0]
    for name in [filename] + [stem + ext for ext in AUDIO_EXTENSIONS]:
        path = os.path.join(root, "audio", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"audio for {filename} not found in {os.path.join(root, 'audio')} "
                            f"(tried {', '.join(AUDIO_EXTENSIONS)})")


def first_of_each_fold(rows, count):
    """The first ``count`` clips of every fold (small, still 5-fold subsets for smoke tests)."""
    return [r for f in range(1, 6) for r in [r for r in rows if r["fold"] == f][:count]]


def class_names(rows):
    names = {}
    for row in rows:
        names[row["target"]] = row["category"]
    return [names[i] for i in range(len(names))]


def fix_length(y, length):
    """Zero-pad or trim to exactly ``length`` samples."""
    if y.shape[-1] >= length:
        return y[..., :length]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])


def load_waveforms(root, rows, sr, progress=True):
    """All clips as a (N, 5 s * sr) float32 array, resampled to ``sr``."""
    from tqdm import tqdm
    length = int(round(CLIP_SECONDS * sr))
    out = np.empty((len(rows), length), dtype=np.float32)
    for i, row in enumerate(tqdm(rows, desc="loading audio", disable=not progress,
                                 file=sys.stderr)):
        y, _ = load_audio(audio_path(root, row["filename"]), sr=sr)
        out[i] = fix_length(y, length)
    return out


def source_digest(folder=None):
    """A hash of the Python sources that compute the features (the dsp package by default):
    any change to them, a bug fix included, gives the cached features another name."""
    import dsp
    folder = folder or os.path.dirname(os.path.abspath(dsp.__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(f.read() + b"\0")
    return digest.hexdigest()


def feature_key(root, rows, features):
    """A hash of the feature configuration, the code that computes it (:func:`source_digest`)
    and the clip list: the cache's name."""
    blob = json.dumps({"features": features, "files": [r["filename"] for r in rows],
                       "root": os.path.abspath(root), "code": source_digest()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "scratchnet")


def compute_features(waves, features, xp=np, batch=64):
    """(N, samples) -> (N, n_mels, frames) float32 log-Mels, computed in batches with ``xp``."""
    logmel = LogMel(**features)
    out = np.empty((waves.shape[0], logmel.n_mels, logmel.num_frames(waves.shape[1])),
                   dtype=np.float32)
    for start in range(0, waves.shape[0], batch):
        block = logmel(xp.asarray(waves[start:start + batch]))
        out[start:start + batch] = to_numpy(block)
    return out


def feature_statistics(feats, per_mel=False):
    """The mean and standard deviation that standardise log-Mels (N, n_mels, frames), as stored
    in a model's ``normalization``: one scalar each over everything, or with ``per_mel`` one per
    mel bin (lists; what an input BatchNorm over the mel axis learns, as in PANNs, here fixed
    from the training folds), which takes the average spectrum and its spread out of the input
    so that every band starts at the same scale."""
    if not per_mel:
        return dict(mean=float(feats.mean()), std=float(feats.std()))
    mean = feats.mean(axis=(0, 2), dtype=np.float64)
    std = np.sqrt(((feats - mean[:, None].astype(np.float32)) ** 2)
                  .mean(axis=(0, 2), dtype=np.float64))
    return dict(mean=mean.tolist(), std=std.tolist())


def standardise(feats, normalization):
    """(x - mean) / std for log-Mels (..., n_mels, frames) with a stored ``normalization``
    (scalars, or per-mel lists broadcast over frames); keeps float32 and the array module."""
    mean, std = (np.asarray(normalization[k], dtype=np.float32)  # host: numbers from JSON
                 for k in ("mean", "std"))
    if mean.ndim:  # one per mel bin: (n_mels, 1)
        if mean.shape[0] != feats.shape[-2]:
            raise ValueError(f"normalization has {mean.shape[0]} mel bins, the features "
                             f"{feats.shape[-2]}")
        mean, std = mean[:, None], std[:, None]
    xp = get_array_module(feats)
    return (feats - xp.asarray(mean)) / xp.asarray(std)  # on the features' device


def load_features(root, features, cache_dir=None, xp=np, rows=None, progress=True):
    """Log-Mel features of every clip listed in ``rows`` (default: all), cached on disk.

    The cache file is keyed by the feature configuration, the DSP code and the clip list, so
    changing any of them rebuilds it.  Returns (features (N, n_mels, frames) float32,
    labels (N,), folds (N,))."""
    rows = rows if rows is not None else read_metadata(root)
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"esc50-logmel-{feature_key(root, rows, features)}.npy")
    labels = np.array([r["target"] for r in rows], dtype=np.int64)  # host: from the CSV
    folds = np.array([r["fold"] for r in rows], dtype=np.int64)  # host: from the CSV
    if os.path.isfile(path):
        feats = np.load(path)
        if feats.shape[0] == len(rows):
            return feats, labels, folds
    waves = load_waveforms(root, rows, features["sr"], progress)
    feats = compute_features(waves, features, xp)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, feats)
    os.replace(tmp, path)
    return feats, labels, folds


def download(dest=DEFAULT_DIR, url=None, sha256=None):
    """Fetch the official ESC-50 archive into ``dest`` (resumable, with a progress bar) and
    unpack it.  ``sha256``, when given, is checked before unpacking."""
    parent = os.path.dirname(os.path.abspath(dest))
    made_parent = not os.path.isdir(parent)
    try:
        return _download(dest, url or ARCHIVE_URL, sha256)
    except BaseException:
        if made_parent and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)  # leave no empty ./data behind a failed first download
        raise


def _download(dest, url, sha256):
    import shutil
    import urllib.request
    import zipfile

    from tqdm import tqdm
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    archive = os.path.abspath(dest) + ".zip"
    partial = archive + ".part"
    done = os.path.getsize(partial) if os.path.exists(partial) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except OSError as e:
        reason = getattr(e, "reason", None) or e
        raise ConnectionError(f"cannot download ESC-50 from {url} ({reason}); check the "
                              "network, or fetch the archive by hand and pass --data") from e
    if done and getattr(response, "status", None) != 206:  # range ignored: start again
        done = 0
    total = response.headers.get("Content-Length")
    total = int(total) + done if total else None
    with open(partial, "ab" if done else "wb") as f, tqdm(total=total, initial=done, unit="B",
                                                         unit_scale=True, desc="ESC-50") as bar:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            f.write(chunk)
            bar.update(len(chunk))
    if sha256:
        digest = hashlib.sha256()
        with open(partial, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            os.remove(partial)
            raise ValueError("downloaded archive failed its SHA-256 check; it was removed")
    try:
        with zipfile.ZipFile(partial) as z:
            bad = z.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"corrupt member {bad}")
            top = z.namelist()[0].split("/")[0]
            z.extractall(os.path.dirname(os.path.abspath(dest)))
    except zipfile.BadZipFile as e:
        raise ValueError(f"downloaded archive {partial} is corrupt ({e}); delete it and retry")
    os.replace(partial, archive)
    extracted = os.path.join(os.path.dirname(os.path.abspath(dest)), top)
    if os.path.abspath(extracted) != os.path.abspath(dest):
        shutil.move(extracted, dest)
    # Verified: every clip listed in the metadata is present.
    rows = read_metadata(dest)
    missing = [r["filename"] for r in rows
               if not os.path.isfile(os.path.join(dest, "audio", r["filename"]))]
    if missing:
        raise ValueError(f"downloaded ESC-50 at {dest} lacks {len(missing)} listed clips, e.g. "
                         f"{missing[0]}")
    return dest
