"""An output folder (--out) as the record of one run: what defines the run, and its protection.

A run is defined by its preset, recipe, seed, features, model and data (the clips, the
held-out folds, the teachers); ``run.json`` records them when the run starts.  The folds to run,
--stop-after, --score-every, the paths, the progress bars and the device may change between
the pieces of one run.  A folder that holds a run is never written over by accident: starting
again needs ``--overwrite``, going on needs ``--resume`` and the same defining settings.
Every JSON file is written to a temporary file and renamed, so a run killed mid-write leaves
the last good copy.
"""
import json
import os
import shutil
import tempfile

from .cli import CommandError

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"

# Settings added after runs had been recorded, with the value that reproduces how those runs
# trained, so that --resume accepts their files.
KEYS_ADDED = {"train": {"spec_masks": 1, "freq_shift": 0, "bc_mix": 0, "distill": 0},
              "model": {"pool": "avg", "deltas": 0}, "data": {"teachers": []}}


def with_added_keys(config):
    """``config`` with every key of KEYS_ADDED it lacks, at that key's original value."""
    return {part: dict(KEYS_ADDED.get(part, {}), **entries) if isinstance(entries, dict)
            else entries for part, entries in config.items()}


def differences(saved, now, ignore=()):
    """["part.key: old -> new", ...] for every entry of the parts both configurations have
    (a part that is a plain value compares as a whole), keys added since counting at their
    original values."""
    saved, now = with_added_keys(saved), with_added_keys(now)
    out = []
    for part in now:
        if part not in saved:
            continue
        if not isinstance(now[part], dict) or not isinstance(saved[part], dict):
            if saved[part] != now[part]:
                out.append(f"{part}: {saved[part]} -> {now[part]}")
            continue
        for key in sorted((set(saved[part]) | set(now[part])) - set(ignore)):
            if saved[part].get(key) != now[part].get(key):
                out.append(f"{part}.{key}: {saved[part].get(key)} -> {now[part].get(key)}")
    return out


def defining_settings(preset, seed, cfg, limit, holdout, teachers):
    """What defines a run, as run.json stores it."""
    return dict(preset=preset, seed=seed, features=cfg["features"], model=cfg["model"],
                train=cfg["train"], data=dict(limit=limit, holdout=sorted(holdout),
                                              teachers=list(teachers)))


def recorded_settings(out):
    """The defining settings of the run in ``out``: run.json, or for runs recorded before it
    existed, what their results.json holds; None for a folder that holds no run."""
    run_path, results_path = os.path.join(out, RUN_FILE), os.path.join(out, RESULTS_FILE)
    if os.path.isfile(run_path):
        return read_json(run_path)
    if os.path.isfile(results_path):
        config = read_json(results_path).get("config")
        if config:
            return dict(preset=config["preset"], seed=config["seed"],
                        features=config["features"], model=config["model"],
                        train=config["train"],
                        data=dict(limit=config.get("limit"),
                                  holdout=sorted(config.get("holdout", [])),
                                  teachers=list(config.get("teachers", []))))
    return None


def fold_folders(out):
    """The fold folders in ``out`` that hold a fold's training (its checkpoint or model)."""
    if not os.path.isdir(out):
        return []
    return sorted(name for name in os.listdir(out)
                  if name.startswith("fold") and name[4:].isdigit()
                  and any(os.path.isfile(os.path.join(out, name, f))
                          for f in ("checkpoint.npz", "model.npz", "metrics.json")))


def holds_a_run(out):
    """Whether ``out`` holds work of a run: a finished fold or a fold's progress (a run.json
    alone records a start that trained nothing)."""
    return os.path.isfile(os.path.join(out, RESULTS_FILE)) or bool(fold_folders(out))


def claim(out, settings, resume, overwrite):
    """Make ``out`` this run's folder, or raise CommandError without touching anything:
    a folder holding a run needs ``resume`` (with the same defining settings) or
    ``overwrite`` (which removes that run's files, and only those)."""
    if holds_a_run(out):
        if overwrite:
            for name in fold_folders(out):
                shutil.rmtree(os.path.join(out, name))
            for name in (RUN_FILE, RESULTS_FILE):
                if os.path.isfile(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
        elif not resume:
            raise CommandError(f"--out {out} already holds a run ({describe(out)}); add "
                               "--resume to go on with it, --overwrite to start it again, or "
                               "choose another --out")
        else:
            saved = recorded_settings(out)
            if saved is None:  # fold folders alone: each fold's checkpoint is checked instead
                return
            changed = differences(saved, settings)
            if changed:
                raise CommandError(f"--resume: the run in {out} was started with other "
                                   f"settings ({'; '.join(changed)}); resume with the "
                                   "original ones or choose another --out")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, RUN_FILE), settings)  # the same settings when resuming


def describe(out):
    """What a run folder holds, in a few words."""
    parts = [name for name in (RUN_FILE, RESULTS_FILE) if os.path.isfile(os.path.join(out, name))]
    return ", ".join(parts + fold_folders(out))


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CommandError(f"{path} is not valid JSON ({e}); was it edited by hand?") from e


def write_json(path, value, indent=1):
    """Write ``value`` as JSON to a temporary file beside ``path``, then rename it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=indent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; results are not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
