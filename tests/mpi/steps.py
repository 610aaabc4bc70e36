"""Run under mpiexec by tests/test_distributed.py: three data-parallel SGD steps of a small
ResNet (BatchNorm synchronised, dropout on), or the same steps in one process (no MPI), and
the parameters written by rank 0 to the .npz given.

    mpiexec -n 2 python tests/mpi/steps.py OUT.npz [--sync-batchnorm] [--batch N]
    python tests/mpi/steps.py OUT.npz --single
    mpiexec -n 2 python tests/mpi/steps.py OUT.npz --sync-batchnorm --standin   # CuPy's path
    mpiexec -n 1 python tests/mpi/steps.py OUT.npz --sync-batchnorm --gpu       # real NCCL
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np  # noqa: E402

from scratchnet import SGD, ResNet, SoftmaxCrossEntropy  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--single", action="store_true")
    p.add_argument("--sync-batchnorm", action="store_true")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--standin", action="store_true",
                   help="on the CuPy stand-in (tests/cupy_standin.py), summed by its NCCL")
    p.add_argument("--gpu", action="store_true",
                   help="on a real GPU, summed by NCCL (benchmarks.gpu_check)")
    args = p.parse_args()
    xp = np
    if args.standin:
        xp = install_standin()
    if args.gpu:
        from scratchnet.runtime.backend import check_device
        xp = check_device("gpu")
    model = ResNet(1, 10, widths=(8, 16), depths=(1, 1), dropout=0.5, seed=0,
                   input_grad=False)
    model.to("gpu" if args.standin or args.gpu else "cpu")
    optimizer = SGD(model, lr=0.05, momentum=0.9)
    criterion = SoftmaxCrossEntropy(label_smoothing=0.1)
    parallel = None
    if not args.single:
        from scratchnet.distributed import Communicator, DataParallel
        job = Communicator(timeout=60)
        parallel = DataParallel(model, optimizer, job, sync_batchnorm=args.sync_batchnorm)
        if args.standin:  # the stand-in's NCCL sums through MPI on the host; count the reads
            xp.nccl_transport = lambda host: job.allreduce(host, "the stand-in's NCCL")
            parallel.allreduce_gradients = counting_reads(parallel.allreduce_gradients, xp)
    data = np.random.default_rng(1)
    for step in range(args.steps):
        x = data.standard_normal((args.batch, 1, 32, 40)).astype(np.float32)
        y = data.integers(0, 10, args.batch)
        if parallel:
            rows, _ = parallel.shard(args.batch)
            x, y = x[rows], y[rows]
        x = xp.asarray(x)
        optimizer.zero_grad()
        criterion.forward(model.forward(x), y)
        (parallel or model).backward(criterion.backward())
        optimizer.step()
    if parallel:
        parallel.average_buffers()
        parallel.check_replicas()  # raises, naming the rank, if any replica differs
        if parallel.rank != 0:
            return
    if args.standin and parallel:
        assert xp.reads_in_allreduce == 0, "the device allreduce read device arrays to the host"
    model.to("cpu")
    np.savez(args.out, **{k: np.asarray(v) for k, v in model.state_dict().items()})


def install_standin():
    """The strict CuPy stand-in as ``cupy``, as tests/conftest.py's fixture installs it."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import cupy_standin

    import scratchnet.runtime.backend as backend
    sys.modules["cupy"] = cupy_standin
    backend._cupy = cupy_standin
    cupy_standin.reads_in_allreduce = 0
    return cupy_standin


def counting_reads(allreduce, standin):
    def call():
        before = standin.reads
        allreduce()
        standin.reads_in_allreduce += standin.reads - before
    return call


if __name__ == "__main__":
    main()
