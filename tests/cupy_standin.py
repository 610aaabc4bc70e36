"""A strict stand-in for CuPy, so that CI (which has no GPU) runs every CuPy-side branch.

``ndarray`` here holds a NumPy array but is NOT an ``np.ndarray`` subclass, and, as CuPy does,
it refuses to become a host array implicitly (``np.asarray``, ``__array__``, NumPy functions
and ufuncs) and refuses to be mixed with host arrays in one operation (operands, indices,
``out=``).  The only crossings are the explicit ones: ``asarray``/``array`` (host to device),
``asnumpy``/``.get()`` (device to host), and ``float()``/``int()``/``bool()`` of one element.
Random generators hold a lock, as CuPy's BitGenerator does, so they cannot be deep-copied or
pickled.  The module is installed in place of ``cupy`` by the ``xp`` / ``standin`` fixtures
(tests/conftest.py).

What it cannot catch: functions CuPy lacks (any NumPy function is offered), numerical
differences of the GPU's kernels, and performance.  It is stricter than CuPy in two places:
NumPy functions applied to device arrays (CuPy dispatches some of them) and host index
arrays are refused, since the project's code must say ``xp`` and ``xp.asarray`` anyway.
"""
import sys
import threading
import types

import numpy as np

__name__ = "cupy"  # noqa: A001  (what the code under test sees as xp.__name__)


class HostDeviceMixError(TypeError):
    pass


reads = 0  # device-to-host reads so far: each one would make the host wait for the GPU


def _count_read():
    global reads
    reads += 1


def _refuse_host(kind):
    raise HostDeviceMixError(f"cupy stand-in: {kind} mixes a host (NumPy) array with device "
                             "arrays; convert explicitly with xp.asarray / xp.asnumpy")


def _unwrap(value, kind="an operation"):
    """The NumPy data behind device arrays (recursively in lists, tuples and dicts); host
    arrays are refused, scalars and everything else pass through."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        _refuse_host(kind)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, kind) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, kind) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results back to device arrays (NumPy scalars become 0-d device arrays, as CuPy's
    reductions return)."""
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _device_function(fn, name):
    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args, name), **_unwrap(kwargs, name)))
    call.__name__ = name
    return call


class _Flags:
    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata


class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: NumPy data that never leaves without being asked."""

    __array_ufunc__ = None  # NumPy ufuncs and host-array operators refuse device arrays
    __array_priority__ = 1000

    def __init__(self, a):
        self._a = a

    # -- refusing implicit host conversion ---------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __array_function__(self, func, types_, args, kwargs):
        raise TypeError(f"cupy stand-in: numpy.{func.__name__} was called on a device array; "
                        "use the array module (xp) of the inputs")

    def get(self):
        _count_read()
        return self._a.copy()

    # -- attributes -------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    imag = property(lambda self: ndarray(self._a.imag))
    device = property(lambda self: "standin:0")

    @property
    def base(self):
        return None if self._a.base is None else ndarray(self._a.base)

    @property
    def data(self):
        """CuPy's MemoryPointer: ``ptr`` is the address of the first element (here in host
        memory, which the stand-in's NCCL reads and writes through it)."""
        return types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0])

    def __repr__(self):
        return f"standin.array({self._a!r})"

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(row) for row in self._a)

    # -- explicit one-element conversions (a host synchronisation on a GPU), counted ---------
    def __float__(self):
        _count_read()
        return float(self._a)

    def __int__(self):
        _count_read()
        return int(self._a)

    def __index__(self):
        _count_read()
        return self._a.__index__()

    def __bool__(self):
        _count_read()
        return bool(self._a)

    def item(self):
        _count_read()
        return self._a.item()

    def tolist(self):
        _count_read()
        return self._a.tolist()

    # -- indexing ---------------------------------------------------------------------------
    def __getitem__(self, index):
        return _wrap(self._a[_unwrap(index, "an index")])

    def __setitem__(self, index, value):
        self._a[_unwrap(index, "an index")] = _unwrap(value, "an assignment")

    # -- methods ----------------------------------------------------------------------------
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        method = getattr(self._a, name)
        if not callable(method):
            return _wrap(method)
        return _device_function(method, f"ndarray.{name}")

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())

    def __reduce__(self):
        raise TypeError("cupy stand-in: device arrays are not pickled here; save "
                        "xp.asnumpy(x)")


def _binary(op):
    def forward(self, other):
        return _wrap(op(self._a, _unwrap(other, f"operator {op.__name__}")))

    def reverse(self, other):
        return _wrap(op(_unwrap(other, f"operator {op.__name__}"), self._a))
    return forward, reverse


def _inplace(op):
    def call(self, other):
        op(self._a, _unwrap(other, f"operator {op.__name__}"), out=self._a)
        return self
    return call


for _name, _op in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                   ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                   ("and", np.logical_and), ("or", np.logical_or), ("xor", np.bitwise_xor)]:
    _f, _r = _binary(_op)
    setattr(ndarray, f"__{_name}__", _f)
    setattr(ndarray, f"__r{_name}__", _r)
for _name, _op in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                   ("truediv", np.true_divide), ("floordiv", np.floor_divide),
                   ("pow", np.power), ("or", np.logical_or), ("and", np.logical_and)]:
    setattr(ndarray, f"__i{_name}__", _inplace(_op))
# bitwise & | on booleans, as NumPy's operators do
ndarray.__and__, ndarray.__rand__ = _binary(np.bitwise_and)
ndarray.__or__, ndarray.__ror__ = _binary(np.bitwise_or)
ndarray.__iand__, ndarray.__ior__ = _inplace(np.bitwise_and), _inplace(np.bitwise_or)
for _name, _op in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater),
                   ("ge", np.greater_equal), ("eq", np.equal), ("ne", np.not_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_op)[0])
ndarray.__neg__ = lambda self: ndarray(-self._a)
ndarray.__pos__ = lambda self: ndarray(+self._a)
ndarray.__abs__ = lambda self: ndarray(abs(self._a))
ndarray.__invert__ = lambda self: ndarray(~self._a)
ndarray.__hash__ = None


# -- the module's own functions ------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    """Host (or device) data to a device array: the one explicit host-to-device crossing.
    As CuPy's, the upload of a host array is C-contiguous unless another order is asked."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return ndarray(np.array(a, dtype=dtype, order=order or "C", copy=True))


array = asarray


def asnumpy(a):
    """A device array to a host (NumPy) array: the one explicit device-to-host crossing."""
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*arrays):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else np


def _numpy_namespace(source, name):
    """A namespace offering ``source``'s functions on device arrays."""
    space = types.ModuleType(name)

    def lookup(attr):
        value = getattr(source, attr)
        return _device_function(value, attr) if callable(value) and not isinstance(
            value, type) else value
    space.__getattr__ = lookup
    return space


fft = _numpy_namespace(np.fft, "cupy.fft")


def _special():
    """cupyx.scipy.special: SciPy's special functions on device arrays."""
    import scipy.special
    return _numpy_namespace(scipy.special, "cupyx.scipy.special")


# cupyx, CuPy's SciPy-like companion, as the fixtures install it beside ``cupy``.
cupyx = types.ModuleType("cupyx")
cupyx.scipy = types.ModuleType("cupyx.scipy")
cupyx.scipy.special = _special()
linalg = _numpy_namespace(np.linalg, "cupy.linalg")
lib = types.ModuleType("cupy.lib")
lib.stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
lib.stride_tricks.as_strided = lambda x, shape=None, strides=None: ndarray(
    np.lib.stride_tricks.as_strided(_unwrap(x, "as_strided"), shape, strides))


class Generator:
    """cupy.random.Generator: NumPy's generator behind a lock, as CuPy's BitGenerator holds
    one, so a model holding it cannot be deep-copied or pickled."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _device_function(getattr(self._rng, name), f"Generator.{name}")


random = types.ModuleType("cupy.random")
random.default_rng = Generator
random.Generator = Generator

cuda = types.ModuleType("cupy.cuda")
cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                     getDeviceProperties=lambda i: {"name": b"cupy stand-in"})
cuda.Stream = types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None))


class _Device:
    def __init__(self, index=0):
        self.id = index

    def synchronize(self):
        pass

    def use(self):
        count = cuda.runtime.getDeviceCount()
        if not 0 <= self.id < count:
            raise ValueError(f"cupy stand-in: no device {self.id} among {count}")


cuda.Device = _Device
cuda.get_device_id = lambda: 0


class _Stream:
    ptr = 0

    def synchronize(self):
        pass

    def record(self, event=None):
        event = event or _Event()
        event.record(self)
        return event


class _Event:
    """cupy.cuda.Event: the stand-in's work is finished when it is issued, so ``done``."""

    def record(self, stream=None):
        self.recorded = True

    @property
    def done(self):
        return getattr(self, "recorded", False)


cuda.Event = _Event
cuda.get_current_stream = lambda: _Stream()

# cupy.cuda.nccl: the stand-in's allReduce reads the buffer at the pointer it is given, as
# NCCL does, and sums it over the ranks with ``nccl_transport`` (an in-place host sum the
# test installs; the MPI job's, tests/mpi/steps.py), so that the code under test is checked
# to hand NCCL a device pointer, its count and dtype, and never a host array.
nccl_transport = None
nccl = types.ModuleType("cupy.cuda.nccl")
nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64, nccl.NCCL_INT64, nccl.NCCL_SUM = 7, 8, 4, 0
_NCCL_TYPES = {7: np.float32, 8: np.float64, 4: np.int64}
nccl.get_unique_id = lambda: tuple(range(128))


class _NcclCommunicator:
    def __init__(self, ndev, comm_id, rank):
        if len(comm_id) != 128:
            raise ValueError("an NCCL unique id has 128 entries")
        self.ndev, self.rank = ndev, rank

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
        import ctypes
        if sendbuf != recvbuf or op != nccl.NCCL_SUM or not isinstance(stream, int):
            raise ValueError("the stand-in's NCCL sums in place on a stream")
        dtype = np.dtype(_NCCL_TYPES[datatype])
        memory = (ctypes.c_char * (count * dtype.itemsize)).from_address(sendbuf)
        nccl_transport(np.frombuffer(memory, dtype=dtype, count=count))


nccl.NcclCommunicator = _NcclCommunicator
cuda.nccl = nccl


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


get_default_memory_pool = _MemoryPool
get_default_pinned_memory_pool = _MemoryPool


def fuse(*args, **kwargs):
    """cupy.fuse: here the function itself (its element-wise body runs on the stand-in)."""
    if args and callable(args[0]):
        return args[0]
    return lambda fn: fn


def __getattr__(name):
    """Every other NumPy name: dtypes and constants as they are, functions on device arrays
    (host arrays refused)."""
    value = getattr(np, name)
    if callable(value) and not isinstance(value, type):
        return _device_function(value, name)
    return value
