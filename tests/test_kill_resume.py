"""A training killed at random moments (SIGKILL: no handler runs, files may be half written)
and resumed each time ends bit for bit where an uninterrupted run ends.

Checkpoints and JSON files are written to a temporary file and renamed, so a kill leaves the
last good copy; every random draw comes from (seed, fold, epoch), so a resumed epoch draws
what the uninterrupted one drew.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scratchnet import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLS = 5
EPOCHS = 40


def command(esc50_root, out, cache):
    return [sys.executable, "-m", "experiments.train_esc50", "--data", esc50_root,
            "--out", str(out), "--cache-dir", str(cache), "--folds", "3", "--epochs", str(EPOCHS),
            "--batch-size", "8", "--limit", "4", "--preset", "cpu", "--widths", "8", "8", "8",
            "8", "--no-progress", "--resume"]


def run_to_the_end(cmd):
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def saved_epoch(out):
    """The epoch of the fold's last good checkpoint (0 before the first)."""
    path = out / "fold3" / "checkpoint.npz"
    return load_checkpoint(path)[1]["epoch"] if path.is_file() else 0


def without_times(history):
    """An epoch's record without what the clock or the machine decides."""
    return [{k: v for k, v in h.items() if k not in ("seconds", "score_seconds", "machine")}
            for h in history]


def epochs_done(out):
    """Epochs recorded in the fold's metrics.json (written atomically after each checkpoint)."""
    try:
        return len(json.loads((out / "fold3" / "metrics.json").read_text()))
    except (OSError, ValueError):
        return 0


def kill_at(cmd, moment, rng):
    """Start ``cmd`` and SIGKILL it at ``moment``: while it starts (None), or a random
    fraction of an epoch after it recorded that many epochs.  Returns the epochs of its last
    good checkpoint then."""
    out = cmd[cmd.index("--out") + 1]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if moment is None:
        time.sleep(rng.uniform(0.1, 0.6))
    else:
        while epochs_done(Path(out)) < moment:
            assert proc.poll() is None, "the run ended before its kill"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the next epoch, or its writes
    assert proc.poll() is None, "the run ended before its kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return saved_epoch(Path(out))


def test_a_run_killed_at_random_moments_ends_bit_identical(esc50_root, tmp_path):
    cache = tmp_path / "cache"
    run_to_the_end(command(esc50_root, tmp_path / "whole", cache))
    rng = np.random.default_rng(7)
    cut = tmp_path / "cut"
    # One kill while the command starts, the others after random epochs, in order.
    moments = [None] + sorted(rng.choice(np.arange(1, EPOCHS - 1), KILLS - 1, replace=False))
    reached = [kill_at(command(esc50_root, cut, cache), m, rng) for m in moments]
    assert len(reached) == KILLS and reached == sorted(reached) and reached[-1] < EPOCHS, reached
    print("checkpoint epochs at the kills:", reached)
    run_to_the_end(command(esc50_root, cut, cache))
    a, meta_a = load_checkpoint(tmp_path / "whole" / "fold3" / "model.npz")
    b, meta_b = load_checkpoint(cut / "fold3" / "model.npz")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert meta_a == meta_b
    history = [json.loads((tmp_path / run / "fold3" / "metrics.json").read_text())
               for run in ("whole", "cut")]
    assert without_times(history[0]) == without_times(history[1])
    results = [json.loads((tmp_path / run / "results.json").read_text())["folds"]["3"]
               for run in ("whole", "cut")]
    assert results[0]["accuracy"] == results[1]["accuracy"]
