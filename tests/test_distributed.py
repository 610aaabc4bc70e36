"""Data-parallel training over MPI (scratchnet.distributed), launched with ``mpiexec -n 2`` on
this machine: N ranks train what one process would, never diverge, resume, and end with a
named error when a rank fails.  Synchronised BatchNorm's derivation is checked in-process,
its ranks played by threads.  Under $CI a missing MPI fails these tests instead of skipping
them (the test extra installs mpi4py and the mpich wheel)."""
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from scratchnet import BatchNorm2d, ResNet
from scratchnet.kernels.batchnorm import channels_matrix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "mpi")


def mpiexec():
    """The launcher beside this Python (the mpich wheel's), else on the PATH; skipped without
    one, failed under $CI."""
    from scratchnet.distributed import find_mpiexec
    launcher = find_mpiexec()
    if launcher is None:
        message = "mpiexec or mpi4py is missing (pip install -e .[mpi])"
        if os.environ.get("CI"):
            pytest.fail(message + "; in CI the MPI tests must run", pytrace=False)
        pytest.skip(message)
    return launcher


def launch(args, ranks=2, timeout=300, check=True):
    """``mpiexec -n ranks python args...`` from the project root; returns the finished process
    and its seconds."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SCRATCHNET_THREADS", None)
    t0 = time.monotonic()
    done = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable] + args, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - t0
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done, seconds


def relative_difference(a, b, skip=()):
    return max(float(np.abs(a[k] - b[k]).max() / (np.abs(a[k]).max() + 1e-12))
               for k in a.files if not any(s in k for s in skip))


# -- synchronised BatchNorm, its ranks as threads ----------------------------------------------
class ThreadGroup:
    """BatchNorm2d.group for ranks played by threads of one process: sum() returns the sum of
    every thread's array, in rank order."""

    def __init__(self, size):
        self.size, self.barrier, self.slots = size, threading.Barrier(size), [None] * size
        self.rank = threading.local()

    def _total(self, value):
        self.slots[self.rank.value] = value
        self.barrier.wait()
        total = sum(self.slots[1:], self.slots[0])
        self.barrier.wait()
        return total

    def sum(self, array):
        return self._total(array.copy())

    def count(self, m):
        return int(self._total(m))


@pytest.mark.parametrize("stem", [False, True])
def test_synchronised_batchnorm_over_shards_is_batchnorm_over_the_batch(stem):
    """Two shards normalised by their pooled statistics give the whole batch's BatchNorm: the
    outputs, the input gradients (the sums in dx over both shards) and, summed, the parameter
    gradients, in float64 to 1e-12; also through the ResNet stem that computes BatchNorm itself
    (scratchnet.layers.residual.Stem)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 12, 10))

    def build():  # the same layer, fresh, in float64
        if stem:  # conv 3x3 -> BN -> max-pool -> ReLU, BatchNorm computed by the stem
            return ResNet(1, 5, widths=(4,), depths=(1,), seed=3, stem_kernel=3).stem.astype(
                np.float64)
        return BatchNorm2d(1).astype(np.float64)

    whole = build()
    y = whole.forward(x)
    dy_all = np.random.default_rng(1).standard_normal(y.shape)
    dx = whole.backward(dy_all)

    group, results = ThreadGroup(2), [None, None]
    shards = [build(), build()]

    def rank(r):
        group.rank.value = r
        layer = shards[r]
        bns = [m for m in layer.modules() if isinstance(m, BatchNorm2d)]
        for bn in bns:
            bn.group = group
        rows = slice(4 * r, 4 * r + 4)
        y_r = layer.forward(x[rows])
        results[r] = (y_r, layer.backward(dy_all[rows]), [p.grad for p in layer.parameters()])

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert np.allclose(np.concatenate([results[0][0], results[1][0]]), y, rtol=0, atol=1e-12)
    assert np.allclose(np.concatenate([results[0][1], results[1][1]]), dx, rtol=0, atol=1e-12)
    for p, g0, g1 in zip(whole.parameters(), results[0][2], results[1][2]):
        assert np.allclose(g0 + g1, p.grad, rtol=0, atol=1e-12)
    bn_whole = [m for m in whole.modules() if isinstance(m, BatchNorm2d)][0]
    bn_shard = [m for m in shards[0].modules() if isinstance(m, BatchNorm2d)][0]
    assert np.allclose(bn_shard.running_var, bn_whole.running_var, rtol=1e-12)


def test_without_the_group_a_shard_is_normalised_by_its_own_statistics():
    """The check above can fail: per-shard BatchNorm (the default) differs from the batch's."""
    x = np.random.default_rng(0).standard_normal((8, 3, 5, 5)) + np.arange(8)[:, None, None, None]
    whole, alone = BatchNorm2d(3), BatchNorm2d(3)
    y = whole.forward(x)
    assert not np.allclose(alone.forward(x[:4]), y[:4], atol=1e-3)
    assert channels_matrix(y).shape == (200, 3)


# -- launched with mpiexec ---------------------------------------------------------------------
def test_two_ranks_of_16_step_as_one_process_of_32(tmp_path):
    """Three SGD steps of a ResNet with dropout and synchronised BatchNorm: 2 ranks x 16 clips
    end with one process's 32-clip parameters to float32 rounding; with BatchNorm per rank
    they do not (so the comparison can fail); and the script's own check_replicas found the
    two ranks' parameters equal bit for bit."""
    script = os.path.join(SCRIPTS, "steps.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one.npz"), "--single"], cwd=ROOT,
                   check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    launch([script, str(tmp_path / "two.npz"), "--sync-batchnorm"])
    launch([script, str(tmp_path / "per_rank.npz")])
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    per_rank = np.load(tmp_path / "per_rank.npz")
    assert relative_difference(one, two) < 1e-4
    assert relative_difference(one, per_rank, skip=("running",)) > 1e-2


def test_on_the_cupy_standin_the_sums_run_on_device_buffers_through_nccl(tmp_path):
    """The same three steps on the strict CuPy stand-in: the gradients and synchronised
    BatchNorm's sums go through (the stand-in's) NCCL on device pointers, never a host copy
    (the script asserts no device array was read during the allreduces), and end where one
    NumPy process does, to float32 rounding."""
    script = os.path.join(SCRIPTS, "steps.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one.npz"), "--single"], cwd=ROOT,
                   check=True, env=dict(os.environ, PYTHONPATH=ROOT))
    launch([script, str(tmp_path / "device.npz"), "--sync-batchnorm", "--standin"])
    one, device = np.load(tmp_path / "one.npz"), np.load(tmp_path / "device.npz")
    assert relative_difference(one, device) < 1e-4


def test_a_rank_whose_parameters_differ_is_named(tmp_path):
    """check_replicas compares every rank's parameters and buffers with rank 0's: per-rank
    BatchNorm statistics left unaveraged make rank 1's differ, and the job says so."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from scratchnet import ResNet, SGD\n"
            "from scratchnet.distributed import Communicator, DataParallel, RanksDisagree\n"
            "model = ResNet(1, 3, widths=(4,), depths=(1,), seed=0)\n"
            "job = Communicator(timeout=60)\n"
            "parallel = DataParallel(model, SGD(model, lr=0.1), job)\n"
            "parallel.check_replicas()\n"
            "model.fc.bias.data[0] += job.rank\n"
            "try:\n    parallel.check_replicas()\n"
            "except RanksDisagree as e:\n    print(job.rank, e)\n" % ROOT)
    done, _ = launch(["-c", code])
    lines = sorted(done.stdout.strip().splitlines())
    assert len(lines) == 2 and all("rank(s) 1 are no longer rank 0's" in l for l in lines)


@pytest.mark.parametrize("mode,expected", [
    ("raise", r"error: rank 1: the feature cache cannot be read"),
    ("hang", r"error: rank 0: summing the gradients: the other ranks did not join within 5 s"),
    ("die", r"BAD TERMINATION"),
])
def test_a_failing_rank_ends_the_job_within_60_s_with_its_name(mode, expected):
    """A rank that raises is named in its error line and ends the job at once (the other is
    waiting in an allreduce); one that hangs makes the waiting rank time out; one that is
    killed is named by the launcher by its process id, which the job's first line maps to
    rank 1."""
    done, seconds = launch([os.path.join(SCRIPTS, "failures.py"), mode], timeout=120,
                           check=False)
    assert done.returncode != 0
    assert seconds < 60
    assert re.search(expected, done.stdout + done.stderr), done.stdout + done.stderr
    if mode == "die":  # the launcher's banner (on stdout) names the killed process's id
        pid = re.search(r"rank 1 pid (\d+)", done.stderr).group(1)
        assert re.search(rf"PID {pid}\b", done.stdout + done.stderr)


# -- train_esc50 --distributed -----------------------------------------------------------------
def train_args(esc50_root, out, cache, *extra):
    return ["-m", "experiments.train_esc50", "--data", esc50_root, "--cache-dir", str(cache),
            "--out", str(out), "--widths", "8", "16", "32", "64", "--no-progress",
            "--folds", "1", *extra]


def test_train_esc50_two_ranks_shard_one_process_batch(esc50_root, tmp_path):
    """One step of 32 clips (--limit 8: 32 training clips): 2 synchronised ranks see the
    augmented batch, dropout and loss that one process does, so the step's loss and accuracy
    agree to float32 rounding; each rank ran on its share of the cores; rank 0 alone wrote
    the run's files and printed its result."""
    cache = tmp_path / "cache"
    args = ("--limit", "8", "--epochs", "1")
    single = subprocess.run([sys.executable] + train_args(esc50_root, tmp_path / "one", cache,
                                                          *args),
                            cwd=ROOT, capture_output=True, text=True, check=True)
    done, _ = launch(train_args(esc50_root, tmp_path / "two", cache, *args, "--distributed",
                                "--sync-batchnorm"))
    one = json.load(open(tmp_path / "one" / "fold1" / "metrics.json"))[0]
    two = json.load(open(tmp_path / "two" / "fold1" / "metrics.json"))[0]
    assert abs(one["train_loss"] - two["train_loss"]) < 1e-5 * abs(one["train_loss"])
    assert one["train_acc"] == two["train_acc"]
    share = max(1, len(os.sched_getaffinity(0)) // 2)  # each of 2 ranks: half the cores
    assert two["machine"].endswith(f", {share} thread{'s' if share > 1 else ''}"), two["machine"]
    assert done.stdout.count('"folds"') == 1 and done.stderr.count("fold 1: accuracy") == 1
    assert "data-parallel job of 2 ranks" in done.stderr
    assert single.stdout.count('"folds"') == 1


def test_train_esc50_two_ranks_resume_as_if_never_stopped(esc50_root, tmp_path):
    """A 2-rank run stopped after its first epoch and resumed ends bit for bit where the
    uninterrupted 2-rank run does; and the checkpoint resumes under another number of ranks
    (here 1), since nothing in it belongs to a rank."""
    cache = tmp_path / "cache"
    args = ("--limit", "12", "--epochs", "2", "--distributed")
    launch(train_args(esc50_root, tmp_path / "whole", cache, *args))
    launch(train_args(esc50_root, tmp_path / "cut", cache, *args, "--stop-after", "1"))
    assert not (tmp_path / "cut" / "fold1" / "model.npz").exists()
    launch(train_args(esc50_root, tmp_path / "cut", cache, *args, "--resume"))
    whole = np.load(tmp_path / "whole" / "fold1" / "model.npz")
    cut = np.load(tmp_path / "cut" / "fold1" / "model.npz")
    assert all(np.array_equal(whole[k], cut[k]) for k in whole.files)
    launch(train_args(esc50_root, tmp_path / "other", cache, *args, "--stop-after", "1"))
    launch(train_args(esc50_root, tmp_path / "other", cache, *args, "--resume"), ranks=1)
    assert (tmp_path / "other" / "fold1" / "model.npz").exists()


def test_ranks_started_with_other_settings_are_named(esc50_root, tmp_path):
    """mpiexec's two programs with different seeds: the job ends at once with one error line
    that names rank 1 and the setting."""
    args = train_args(esc50_root, tmp_path / "run", tmp_path / "cache", "--limit", "8",
                      "--epochs", "1", "--distributed")
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([mpiexec(), "-n", "1", sys.executable] + args + ["--seed", "0"] +
                          [":", "-n", "1", sys.executable] + args + ["--seed", "1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert errors == ["error: rank 1 has other settings than rank 0: seed: 0 against 1"]


def test_each_rank_of_a_host_takes_its_own_gpu(standin):
    """--device gpu under MPI: local rank i takes GPU i; more ranks on a host than its GPUs is
    a named error (NCCL refuses two ranks on one GPU), not a job that fails later."""
    from scratchnet.runtime.backend import DeviceError, use_local_gpu
    assert use_local_gpu(0, 1) == 0
    with pytest.raises(DeviceError, match="2 ranks run on this host but it has 1 GPU: start "
                                          "at most 1 per host"):
        use_local_gpu(1, 2)
