"""Data-parallel training over MPI, as ChainerMN and Horovod do it: every rank holds the whole
network, takes its share of each batch, and sums the gradients with the other ranks before the
optimiser's step.  The only module that imports mpi4py (``pip install -e .[mpi]``).

The maths.  A global batch B of n clips is split into shards B_r of n_r clips, one per rank.
Its loss, the mean over the batch, is a weighted sum of the ranks' own means:

    L = (1/n) sum_{i in B} l_i = sum_r (n_r / n) L_r,     L_r = (1/n_r) sum_{i in B_r} l_i,

and the parameters theta are the same on every rank, so

    dL/dtheta = sum_r (n_r / n) dL_r/dtheta.

Each rank back-propagates (n_r / n) dL_r/dlogits, which is the global loss's gradient at its
own logits, and one allreduce (a sum over the ranks, in place, over one flat buffer of every
gradient) gives every rank dL/dtheta.  Clipping and the optimiser's step then run on the same
numbers everywhere, and the parameters stay equal without being sent again.  BatchNorm either
normalises each shard by its own statistics (the default, as PyTorch's DDP), or by the whole
batch's, its sums taken over the ranks (``sync_batchnorm``; the derivation is BatchNorm2d's).

Randomness belongs to the job, not to a rank: every rank draws the whole batch's augmentation
and dropout masks from the same generators and keeps its own rows (Dropout.batch_rows), so N
ranks train the network one process would, up to the order in which the sums are rounded.

No collective hangs silently.  Each is started non-blocking and waited on with a deadline
(``timeout``); a rank that misses it makes the others raise :class:`CollectiveTimeout`.  The
waits for rank 0 alone (building the feature cache, writing a fold's report) have no deadline
and sleep rather than spin (:meth:`Communicator.wait_for_root`), so rank 0 has the cores.
On CuPy arrays the sums run on the GPUs through NCCL (scratchnet.runtime.backend.DeviceGroup).
"""
import hashlib
import importlib.util
import os
import pickle
import shutil
import socket
import sys
import time

import numpy as np

from .layers import BatchNorm2d, Dropout
from .runtime.backend import (DeviceGroup, get_array_module, nccl_unique_id, to_numpy,
                              use_local_gpu)

# Seconds a rank that ends the job waits, after flushing its output, for the launcher to
# forward it (Communicator.abort).
ABORT_GRACE_S = 0.5


class DistributedError(RuntimeError):
    """A data-parallel job that cannot go on: MPI missing, ranks that disagree or diverge."""


class CollectiveTimeout(DistributedError):
    """A collective that the other ranks did not join within the deadline."""


class RanksDisagree(DistributedError):
    """Ranks whose settings or parameters are not rank 0's: raised on every rank at once."""


def find_mpiexec():
    """The MPI launcher beside this Python (the mpich wheel's, ``pip install -e .[mpi]``),
    else the one on the PATH; None when it or mpi4py is missing."""
    if importlib.util.find_spec("mpi4py") is None:
        return None
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


class Communicator:
    """The ranks of an MPI job (MPI_COMM_WORLD unless ``comm`` is given), with deadlines.

    ``timeout``: seconds any collective of the training steps waits for the other ranks before
    :class:`CollectiveTimeout` (a rank has died or hangs)."""

    def __init__(self, timeout=300.0, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise DistributedError(f"data-parallel training needs mpi4py and an MPI library "
                                   f"({e}): pip install -e .[mpi]") from None
        self._mpi = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout
        self._device_group = None  # NCCL, made when a device array is first summed

    # -- waiting ---------------------------------------------------------------------------
    def _wait(self, request, what, deadline=True):
        """Wait for a started collective, polling with growing sleeps (a spinning wait would
        take a core from the work of the rank being waited for)."""
        limit = time.monotonic() + self.timeout if deadline else None
        pause = 2e-5
        while not _finished(request):
            if limit is not None and time.monotonic() > limit:
                raise CollectiveTimeout(
                    f"{what}: the other ranks did not join within "
                    f"{self.timeout:g} s (a rank has died or hangs)")
            time.sleep(pause)
            pause = min(2 * pause, 1e-3 if deadline else 0.05)

    def wait_for_root(self, what="waiting for rank 0"):
        """A barrier without a deadline, sleeping between polls: the other ranks wait here
        while rank 0 alone builds the feature cache or writes a report."""
        self._wait(self.comm.Ibarrier(), what, deadline=False)

    # -- arrays ----------------------------------------------------------------------------
    def allreduce(self, array, what="allreduce"):
        """Sum a contiguous array over the ranks, in place, on its own device."""
        if get_array_module(array) is not np:
            if self._device_group is None:
                self._device_group = DeviceGroup(self.size, self.rank,
                                                 self.share(nccl_unique_id()
                                                            if self.rank == 0 else None))
            self._wait(self._device_group.start_allreduce(array), what)
            return array
        if not array.flags.c_contiguous:
            raise ValueError(f"{what}: MPI sums contiguous arrays")
        self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE, array, op=self._mpi.SUM), what)
        return array

    def sum(self, values, what="sum"):
        """Host numbers summed over the ranks (a new float64 array)."""
        return self.allreduce(np.array(values, dtype=np.float64), what)  # host: numbers

    def broadcast(self, array, root=0, what="broadcast"):
        """Overwrite ``array`` with rank ``root``'s, on any device and in any layout (through
        a contiguous host copy: for the start of a run, not for every step)."""
        xp = get_array_module(array)
        host = np.ascontiguousarray(to_numpy(array))
        self._wait(self.comm.Ibcast(host, root=root), what)
        if self.rank != root:
            array[...] = xp.asarray(host)
        return array

    # -- Python objects --------------------------------------------------------------------
    def share(self, obj, root=0, what="sharing rank 0's settings"):
        """Rank ``root``'s ``obj`` on every rank (pickled)."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == root else None
        length = np.array([0 if data is None else data.size], dtype=np.int64)  # host: a size
        self._wait(self.comm.Ibcast(length, root=root), what)
        buffer = data.copy() if data is not None else np.empty(int(length[0]), dtype=np.uint8)
        self._wait(self.comm.Ibcast(buffer, root=root), what)
        return obj if self.rank == root else pickle.loads(buffer.tobytes())

    def gather_all(self, obj, what="gathering the ranks' values"):
        """Every rank's ``obj``, in rank order, on every rank (pickled)."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        lengths = np.empty(self.size, dtype=np.int64)
        size = np.array([data.size], dtype=np.int64)  # host: a size
        self._wait(self.comm.Iallgather(size, lengths), what)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        buffer = np.empty(int(lengths.sum()), dtype=np.uint8)
        self._wait(self.comm.Iallgatherv(data, [buffer, lengths, offsets, self._mpi.BYTE]), what)
        return [pickle.loads(buffer[o:o + n].tobytes()) for o, n in zip(offsets, lengths)]

    def check_same(self, value, what):
        """Raise :class:`RanksDisagree` on every rank, naming the ranks, when ``value``
        (settings, a digest) is not rank 0's on every rank."""
        values = self.gather_all(value, f"comparing the ranks' {what}")
        others = [r for r, v in enumerate(values) if v != values[0]]
        if others:
            raise RanksDisagree(f"rank{'s' if len(others) > 1 else ''} "
                                f"{', '.join(map(str, others))} "
                                f"{'have' if len(others) > 1 else 'has'} other {what} than "
                                f"rank 0: {_first_difference(values[0], values[others[0]])}")

    def use_local_gpu(self):
        """Give this rank its own GPU: the host's ranks take GPUs 0, 1, ... in the order of
        their local rank (before any array is made on the device)."""
        from .runtime.cores import local_rank, local_ranks
        return use_local_gpu(local_rank(), local_ranks())

    def describe(self):
        """The job in one line, every rank's host and process id: MPI's launcher names a
        process that dies (killed by the kernel, crashed) by its id only."""
        where = self.gather_all((socket.gethostname(), os.getpid()), "naming the ranks")
        return (f"{self.size} rank{'s' if self.size > 1 else ''}: " +
                ", ".join(f"rank {r} pid {pid} on {host}" for r, (host, pid) in
                          enumerate(where)))

    def abort(self, code=1):
        """End every rank of the job now (after a rank's own error: the others would wait).
        This rank's output is flushed first and given ABORT_GRACE_S to reach the launcher,
        which forwards each rank's output and stops forwarding when the job is aborted: a
        rank's last error line was otherwise lost now and then on a loaded host."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)


def _finished(request):
    if hasattr(request, "Test"):  # an MPI request
        return request.Test()
    return request.done  # a CUDA event (NCCL)


def _first_difference(mine, theirs):
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs), key=str):
            if mine.get(key) != theirs.get(key):
                return f"{key}: {mine.get(key)!r} against {theirs.get(key)!r}"
    return f"{mine!r} against {theirs!r}"


class StatisticsGroup:
    """The ranks over which synchronised BatchNorm pools its sums (BatchNorm2d.group).  A
    handle on the job, not state: a deep copy of a layer (the weight average, BatchNorm
    folding) shares it, and it cannot be saved."""

    def __init__(self, communicator):
        self.communicator = communicator

    def sum(self, array):
        xp = get_array_module(array)
        return self.communicator.allreduce(xp.ascontiguousarray(array),
                                           "synchronised BatchNorm's sums")

    def count(self, m):
        return int(self.communicator.sum([m], "synchronised BatchNorm's count")[0])

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        raise TypeError("a BatchNorm synchronised over MPI ranks cannot be pickled; save its "
                        "state_dict()")


class DataParallel:
    """One rank's part of a data-parallel job for ``model`` and its ``optimizer``: at the start
    the parameters and buffers are rank 0's; :meth:`shard` gives this rank's rows of each
    batch, and :meth:`backward` back-propagates its share of the loss and sums the gradients
    over the ranks, before the optimiser's step:

        rows, _ = parallel.shard(len(batch))
        loss.forward(model.forward(x[rows]), y[rows])
        parallel.backward(loss.backward())
        optimizer.step()

    ``sync_batchnorm``: BatchNorm's statistics over the whole batch (every rank's shard)."""

    def __init__(self, model, optimizer, communicator, sync_batchnorm=False):
        self.model, self.communicator = model, communicator
        self.rank, self.size = communicator.rank, communicator.size
        self.gradient = optimizer.flat_gradient()
        self.dropouts = [m for m in model.modules() if isinstance(m, Dropout)]
        self.batchnorms = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
        self.sync_batchnorm, self.share = sync_batchnorm, 1.0
        group = StatisticsGroup(communicator) if sync_batchnorm else None
        for bn in self.batchnorms:
            bn.group = group
        self.broadcast_state()

    def broadcast_state(self):
        """Every parameter and buffer set to rank 0's (a fresh start, or a resumed one)."""
        for array in self.model.state_dict().values():
            self.communicator.broadcast(array, what="sending rank 0's parameters")

    def rows(self, n):
        """This rank's rows of n (a slice; the ranks' are contiguous, in rank order, and
        cover the n)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def shard(self, n):
        """This rank's rows of a training batch of n and its share n_r / n of the loss; the
        dropout layers draw the whole batch's masks and keep these rows."""
        rows = self.rows(n)
        for dropout in self.dropouts:
            dropout.batch_rows = (rows, n)
        self.share = (rows.stop - rows.start) / n
        return rows, self.share

    def backward(self, dlogits):
        """The model's backward pass from dL_r/dlogits (this rank's own mean loss, as the loss
        returns it) scaled by n_r / n, the global loss's gradient at these logits; then
        :meth:`allreduce_gradients`.  Returns the model's input gradient."""
        dx = self.model.backward(dlogits * dlogits.dtype.type(self.share))
        self.allreduce_gradients()
        return dx

    def allreduce_gradients(self):
        """dL/dtheta = sum_r (n_r / n) dL_r/dtheta, in place in the flat gradient (each rank's
        gradient already carries its share: the loss gradient was scaled by it)."""
        self.communicator.allreduce(self.gradient, "summing the gradients")

    def average_buffers(self):
        """Per-rank BatchNorm's running statistics, averaged over the ranks (each rank saw only
        its shards); synchronised ones are equal already."""
        if self.sync_batchnorm or self.size == 1:
            return
        for bn in self.batchnorms:
            for name in bn._buffers:
                array = getattr(bn, name)
                total = self.communicator.allreduce(array.copy(), "averaging BatchNorm's "
                                                                  "running statistics")
                array[...] = total / self.size

    def check_replicas(self):
        """Raise :class:`RanksDisagree` naming the ranks whose parameters and buffers are
        no longer rank 0's bit for bit (they should never be: every rank steps on the same
        summed gradient)."""
        digest = hashlib.sha256()
        for name, array in self.model.state_dict().items():
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(to_numpy(array)).tobytes())
        digests = self.communicator.gather_all(digest.hexdigest(), "comparing the replicas")
        others = [r for r, d in enumerate(digests) if d != digests[0]]
        if others:
            raise RanksDisagree(f"the parameters of rank(s) {', '.join(map(str, others))} are "
                                "no longer rank 0's: the replicas diverged")
