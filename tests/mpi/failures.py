"""Run under mpiexec by tests/test_distributed.py: a job in which one rank fails while the
other waits in a collective.  It must end, with an error line naming the rank, not hang.

    mpiexec -n 2 python tests/mpi/failures.py raise   # rank 1 raises an error of its own
    mpiexec -n 2 python tests/mpi/failures.py hang    # rank 1 never joins: rank 0 times out
    mpiexec -n 2 python tests/mpi/failures.py die     # rank 1's process is killed
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np  # noqa: E402

from experiments import cli  # noqa: E402
from scratchnet.distributed import Communicator  # noqa: E402


def main(mode):
    job = Communicator(timeout=5 if mode == "hang" else 600)
    ranks = job.describe()
    if job.rank == 0:
        print(f"job of {ranks}", file=sys.stderr, flush=True)
    try:
        gradient = np.ones(1000, dtype=np.float32)
        job.allreduce(gradient, "summing the gradients")  # both ranks: a working collective
        if job.rank == 1:
            if mode == "raise":
                raise OSError("the feature cache cannot be read")
            if mode == "hang":
                time.sleep(120)
            if mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer
        job.allreduce(gradient, "summing the gradients")  # rank 0 waits here for rank 1
    except BaseException as e:
        cli.end_job(job, e)


if __name__ == "__main__":
    main(sys.argv[1])
