"""scratchnet.runtime.parallel: work split over threads by samples gives bit for bit the results of
one call, whatever the number of threads or pieces."""
import os
import threading

import numpy as np
import pytest

import scratchnet as sn
from scratchnet.kernels import conv_policy
from scratchnet.runtime import parallel


def test_pieces_cover_the_range_once_and_run_on_several_threads(monkeypatch):
    monkeypatch.setenv("SCRATCHNET_THREADS", "2")
    seen, threads = [], set()

    def record(part):
        seen.append(part)
        threads.add(threading.get_ident())
        threading.Event().wait(0.01)  # long enough that the second thread takes a piece

    parallel.parallel_slices(record, 10, 10 * parallel.PIECE_ELEMENTS)
    covered = sorted(i for part in seen for i in range(10)[part])
    assert covered == list(range(10)) and len(seen) == 10  # one piece per sample here
    assert len(threads) == 2


def test_the_calling_thread_takes_pieces_too(monkeypatch):
    monkeypatch.setenv("SCRATCHNET_THREADS", "2")
    on_main = []

    def record(part):
        on_main.append(threading.current_thread() is threading.main_thread())
        threading.Event().wait(0.005)

    parallel.parallel_slices(record, 8, 8 * parallel.PIECE_ELEMENTS)
    assert len(on_main) == 8 and any(on_main)  # returns only once every piece has run


def test_pieces_given_cut_the_range_into_that_many(monkeypatch):
    """``pieces`` overrides the cut by PIECE_ELEMENTS (which would make 3 pieces of 12 items
    here), never beyond one item a piece."""
    monkeypatch.setenv("SCRATCHNET_THREADS", "2")
    for pieces, sizes in ((12, [1] * 12), (4, [3] * 4), (20, [1] * 12)):
        seen = []
        parallel.parallel_slices(seen.append, 12, 3 * parallel.PIECE_ELEMENTS, pieces=pieces)
        assert sorted(len(range(12)[part]) for part in seen) == sizes
        assert sorted(i for part in seen for i in range(12)[part]) == list(range(12))


@pytest.mark.parametrize("threads, elements", [("1", 1 << 30), ("2", 100)])
def test_one_thread_or_little_work_is_one_call(monkeypatch, threads, elements):
    monkeypatch.setenv("SCRATCHNET_THREADS", threads)
    seen = []
    parallel.parallel_slices(seen.append, 7, elements)
    assert seen == [slice(0, 7)]


def test_an_exception_in_a_piece_reaches_the_caller(monkeypatch):
    monkeypatch.setenv("SCRATCHNET_THREADS", "2")

    def fail(part):
        if part.start > 0:
            raise RuntimeError("piece failed")

    with pytest.raises(RuntimeError, match="piece failed"):
        parallel.parallel_slices(fail, 4, 4 * parallel.PIECE_ELEMENTS)


def test_a_piece_that_splits_again_runs_whole_instead_of_waiting_forever(monkeypatch):
    monkeypatch.setenv("SCRATCHNET_THREADS", "2")
    inner = []

    def outer(part):
        parallel.parallel_slices(inner.append, 3, 3 * parallel.PIECE_ELEMENTS)

    parallel.parallel_slices(outer, 2, 2 * parallel.PIECE_ELEMENTS)
    assert inner == [slice(0, 3), slice(0, 3)]


def test_bad_thread_setting_is_named(monkeypatch):
    monkeypatch.setenv("SCRATCHNET_THREADS", "two")
    with pytest.raises(ValueError, match="SCRATCHNET_THREADS must be a whole number, got 'two'"):
        parallel.thread_count()


def test_ranks_on_one_host_share_its_cores(monkeypatch):
    """Under an MPI launcher each of the host's ranks takes cores / ranks threads (at least
    one), unless SCRATCHNET_THREADS names a count."""
    from scratchnet.runtime import cores
    monkeypatch.delenv("SCRATCHNET_THREADS", raising=False)
    for name in cores.LOCAL_RANKS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    alone = cores.thread_count()
    assert alone == cores.machine_cores()
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")
    assert parallel.thread_count() == max(1, alone // 2)
    monkeypatch.setenv("MPI_LOCALNRANKS", str(4 * alone))
    assert parallel.thread_count() == 1
    monkeypatch.setenv("SCRATCHNET_THREADS", "3")
    assert parallel.thread_count() == 3


def test_the_runtimes_blas_takes_the_ranks_share_unless_told(tmp_path):
    """The runtime's BLAS loads with the rank's share of the cores as its thread count under a
    launcher that starts several ranks on the host, from a plain script, and keeps a count
    the user set."""
    import subprocess
    import sys
    code = ("import numpy as np, scratchnet as sn\n"
            "from scratchnet import runtime\n"
            "sn.Linear(3, 2).forward(np.ones((2, 3), dtype=np.float32))\n"
            "print(runtime.settings()['blas'].get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "SCRATCHNET_THREADS")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], env=dict(env, **extra),
                              capture_output=True, text=True, check=True).stdout.strip()

    assert run(MPI_LOCALNRANKS="2") == str(max(1, cores // 2))
    assert run(MPI_LOCALNRANKS="2", OMP_NUM_THREADS="5") == "None"  # told otherwise: kept
    assert run() == "None"  # alone on the host: OpenBLAS's own default, every core


def _training_step_and_eval(rng_seed):
    """A ResNet training step (every layer forward and backward) and an eval forward."""
    model = sn.ResNet(1, 5, widths=(4, 8), depths=(1, 1), stem_kernel=3, seed=3)
    x = np.random.default_rng(rng_seed).standard_normal((6, 1, 20, 17)).astype(np.float32)
    x[0, 0, :4, :4] = 1.5  # ties in max-pool windows
    loss = sn.SoftmaxCrossEntropy(0.1)
    loss.forward(model.forward(x), np.array([0, 1, 2, 3, 4, 0]))
    dx = model.backward(loss.backward())
    grads = [p.grad.copy() for p in model.parameters()]
    model.eval()
    logits = model.forward(x)
    dx_eval = model.backward(np.ones_like(logits))  # eval-mode backward paths too
    folded = sn.fold_batchnorm(model).forward(x)    # convolutions with a bias
    return [dx, logits, dx_eval, folded] + grads


@pytest.mark.parametrize("all_shifted", [False, True])
def test_split_layers_match_one_call_bit_for_bit(monkeypatch, all_shifted):
    # all_shifted: every stride-1 convolution through shifted GEMMs
    policy = conv_policy.prefer("shifted") if all_shifted else conv_policy.DEFAULT["cpu"]
    with conv_policy.using(policy):
        monkeypatch.setenv("SCRATCHNET_THREADS", "1")
        whole = _training_step_and_eval(0)
        monkeypatch.setenv("SCRATCHNET_THREADS", "3")
        monkeypatch.setattr(parallel, "PIECE_ELEMENTS", 64)  # many uneven pieces per call
        split = _training_step_and_eval(0)
    for a, b in zip(whole, split):
        np.testing.assert_array_equal(a, b)


def test_command_line_tools_name_a_bad_thread_setting(monkeypatch, tmp_path, refused):
    from experiments import evaluate, train_esc50
    from scratchnet.runtime.backend import DeviceError, check_device
    monkeypatch.setenv("SCRATCHNET_THREADS", "many")
    with pytest.raises(DeviceError, match="SCRATCHNET_THREADS must be a whole number"):
        check_device("cpu")  # where every tool asks for its device, before any work
    refused(train_esc50.main, ["--out", str(tmp_path / "run")],
            "SCRATCHNET_THREADS must be a whole number")
    refused(evaluate.main, [], "SCRATCHNET_THREADS must be a whole number")
