"""How many cores this process may use: the machine's (its CPU affinity), shared with the other
ranks of an MPI job on the same host, unless ``$SCRATCHNET_THREADS`` says otherwise.

:func:`scratchnet.runtime.blas_settings` reads these for the runtime's BLAS, and
``parallel`` for its worker threads.
"""
import os

# What launchers put in each rank's environment: the number of ranks on this host (MPICH's
# Hydra, Open MPI, MVAPICH, Slurm's srun).
LOCAL_RANKS_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                         "MV2_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def machine_cores():
    """The cores this process may run on (its affinity mask), whatever else runs beside it."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_ranks():
    """How many processes of an MPI job run on this host (1 outside one)."""
    for name in LOCAL_RANKS_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    return 1


LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")


def local_rank():
    """This process's index among the job's ranks on this host (0 outside a job): which of the
    host's GPUs it takes."""
    for name in LOCAL_RANK_VARIABLES:
        text = os.environ.get(name, "").strip()
        if text.isdigit():
            return int(text)
    return 0


def thread_count():
    """``$SCRATCHNET_THREADS`` when set, else this process's share of the cores: all of them,
    or cores / ranks for each of the ranks an MPI job runs on this host (so that two ranks on
    two cores run a thread each instead of four threads on two cores)."""
    text = os.environ.get("SCRATCHNET_THREADS", "").strip()
    if text:
        try:
            count = int(text)
        except ValueError:
            raise ValueError(f"SCRATCHNET_THREADS must be a whole number, got {text!r}") from None
        return max(1, count)
    return max(1, machine_cores() // local_ranks())
