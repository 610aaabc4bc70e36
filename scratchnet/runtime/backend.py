"""NumPy / CuPy selection: the only module in the project that imports CuPy.

Every other module asks ``get_array_module(x)`` for the array module of its inputs and then
writes one implementation that runs on both (Chainer's convention).  CuPy is optional: when it
is missing, everything runs on NumPy and asking for the GPU raises a clear ``DeviceError``.
"""
import platform

import numpy as np

from .parallel import thread_count

try:  # CuPy is an optional extra (pip install .[gpu])
    import cupy as _cupy
except Exception:  # ImportError, or a broken CUDA install that fails at import
    _cupy = None


class DeviceError(RuntimeError):
    """Raised when a device is asked for that this machine cannot provide."""


def gpu_available():
    """True when CuPy imports and at least one CUDA device answers."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def check_device(device):
    """Validate a device name ("cpu" or "gpu") and return the matching array module."""
    if device == "cpu":
        try:  # read by every pass that splits over the cores: named here, before any work
            thread_count()
        except ValueError as e:
            raise DeviceError(str(e)) from None
        return np
    if device == "gpu":
        if _cupy is None:
            raise DeviceError("device 'gpu' was asked for, but CuPy is not installed "
                              "(install the extra: pip install -e .[gpu]); use --device cpu")
        if not gpu_available():
            raise DeviceError("device 'gpu' was asked for, but no CUDA device is visible to CuPy; "
                              "use --device cpu")
        return _cupy
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'gpu'")


def use_local_gpu(local_rank, local_ranks):
    """Make GPU ``local_rank`` this process's current device: the host's ranks take one GPU
    each (NCCL refuses two ranks on one GPU).  Returns its index."""
    check_device("gpu")
    count = _cupy.cuda.runtime.getDeviceCount()
    if local_ranks > count:
        raise DeviceError(f"{local_ranks} ranks run on this host but it has {count} GPU"
                          f"{'s' if count > 1 else ''}: start at most {count} per host "
                          "(mpiexec -ppn), one per GPU")
    _cupy.cuda.Device(local_rank).use()
    return local_rank


def describe_device(device):
    """The processor that runs ``device``'s work, in words ("AMD EPYC, 2 threads", or the GPU's
    name), for a results file: minutes of training compare only on the same processor."""
    check_device(device)
    if device == "gpu":
        name = _cupy.cuda.runtime.getDeviceProperties(_cupy.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    threads = thread_count()
    return f"{cpu_identity()[0]}, {threads} thread{'s' if threads > 1 else ''}"


def cpu_identity(cpuinfo=None):
    """(model name, family, model) of the first processor in /proc/cpuinfo, or in the text
    ``cpuinfo``: family and model None where it gives none, the name platform's where Linux
    names none (platform.processor() often gives only the architecture)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break                                 # the first processor's block only
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = (fields.get("model name") or platform.processor() or platform.machine()
            or "unknown CPU")
    return name, fields.get("cpu family"), fields.get("model")


def memory_order(x):
    """The axes of x by decreasing stride: x.transpose(memory_order(x)) reads x's memory in
    order (the identity for a C-contiguous array)."""
    return sorted(range(x.ndim), key=lambda axis: -x.strides[axis])


def _keeping_layout(copy, x):
    """copy(x) with x's memory layout: the copy is made of x read in memory order (which
    ``asarray`` and ``asnumpy`` keep, as C order) and viewed back in x's axes, so that a
    channels-last convolution weight stays channels-last on either device."""
    order = memory_order(x)
    return copy(x.transpose(order)).transpose([order.index(axis) for axis in range(x.ndim)])


def to_device(x, device):
    """Copy an array to "cpu" (NumPy) or "gpu" (CuPy), keeping its memory layout; no copy when
    it is already there."""
    xp = check_device(device)
    if xp is np:
        return to_numpy(x)
    if get_array_module(x) is _cupy:
        return x
    return _keeping_layout(_cupy.asarray, np.asarray(x))


def to_numpy(x):
    """Return a NumPy array for a NumPy or CuPy array (a device-to-host copy for CuPy, in the
    array's memory layout)."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _keeping_layout(_cupy.asnumpy, x)
    return np.asarray(x)


def device_of(x):
    """"gpu" for a CuPy array, "cpu" otherwise."""
    return "gpu" if get_array_module(x) is not np else "cpu"


def as_strided(x, shape, strides):
    """``as_strided`` from the module that owns ``x`` (NumPy's lives in numpy.lib)."""
    if get_array_module(x) is np:
        return np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)
    return _cupy.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


def erf(x):
    """The error function, element-wise, on the array's device: SciPy's on the host, CuPy's
    (cupyx.scipy.special) on the GPU.  GELU's exact form needs it; NumPy has none."""
    if get_array_module(x) is np:
        from scipy.special import erf as host_erf
        return host_erf(x)
    from cupyx.scipy.special import erf as device_erf
    return device_erf(x)


def nccl_unique_id():
    """A new NCCL communicator id (a tuple of ints, to be sent to every rank), or a
    DeviceError naming what is missing."""
    return _nccl().get_unique_id()


def _nccl():
    nccl = getattr(_cupy.cuda, "nccl", None) if _cupy is not None else None
    if nccl is None and _cupy is not None:
        try:
            from cupy.cuda import nccl
        except Exception:  # ImportError, or CuPy built without NCCL
            nccl = None
    if nccl is None or not hasattr(nccl, "NcclCommunicator"):
        raise DeviceError("summing gradients over GPUs needs NCCL, which this CuPy cannot load "
                          "(install it: python -m cupyx.tools.install_library --library nccl)")
    return nccl


class DeviceGroup:
    """NCCL over this process's GPU and the other ranks': sums on device buffers, on the
    current stream, with no copy to the host.  ``size``, ``rank`` and ``unique_id`` (from
    :func:`nccl_unique_id` on one rank, sent to all) as ncclCommInitRank takes them."""

    def __init__(self, size, rank, unique_id):
        self._nccl = _nccl()
        self._comm = self._nccl.NcclCommunicator(size, tuple(unique_id), rank)

    def start_allreduce(self, array):
        """Start the in-place sum of the contiguous device array over the ranks; returns an
        event whose ``done`` says when it has finished (for a wait with a deadline)."""
        nccl = self._nccl
        types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
                 "int64": nccl.NCCL_INT64}
        if array.dtype.name not in types or not array.flags.c_contiguous:
            raise ValueError(f"NCCL sums contiguous {sorted(types)} arrays, got a "
                             f"{array.dtype.name} one (contiguous: {array.flags.c_contiguous})")
        stream = _cupy.cuda.get_current_stream()
        self._comm.allReduce(array.data.ptr, array.data.ptr, array.size,
                             types[array.dtype.name], nccl.NCCL_SUM, stream.ptr)
        event = _cupy.cuda.Event()
        event.record(stream)
        return event
