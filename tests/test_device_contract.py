"""The device contract, read off the sources: the array module comes from the inputs, never
from ``isinstance(x, np.ndarray)``; nothing calls ``np.asarray`` / ``np.array`` on what may be
a device array (host-only data says so in a ``# host:`` comment on its line); only the
runtime module imports CuPy, and only scratchnet.distributed imports mpi4py."""
import pathlib
import re

import numpy as np
import pytest

import dsp
from dsp import mel
from scratchnet.runtime.backend import DeviceError, describe_device

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("scratchnet", "dsp", "experiments")
RUNTIME = {"scratchnet/runtime/backend.py"}  # where host and device meet, by name


def source_lines():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for number, line in enumerate(path.read_text().splitlines(), 1):
                yield rel, number, line


def test_no_isinstance_tells_a_device_by_numpys_type():
    found = [f"{p}:{n}" for p, n, line in source_lines()
             if re.search(r"isinstance\([^)]*np\.ndarray", line)]
    assert not found, f"use get_array_module instead: {found}"


def test_host_conversions_are_named_as_such():
    found = [f"{p}:{n}: {line.strip()}" for p, n, line in source_lines()
             if re.search(r"\bnp\.(asarray|array)\(", line) and "# host:" not in line
             and p not in RUNTIME]
    assert not found, ("np.asarray/np.array on what may be a device array (to_numpy says so; "
                       f"host-only data carries '# host: why'): {found}")


def test_only_the_runtime_imports_cupy():
    found = [f"{p}:{n}" for p, n, line in source_lines()
             if re.match(r"\s*(import cupy|from cupy)", line) and p not in RUNTIME]
    assert not found, found


def test_only_the_distributed_module_imports_mpi4py():
    found = [f"{p}:{n}" for p, n, line in source_lines()
             if re.match(r"\s*(import mpi4py|from mpi4py)", line)
             and p != "scratchnet/distributed.py"]
    assert not found, found
    assert any("from mpi4py import MPI" in line for p, _, line in source_lines()
               if p == "scratchnet/distributed.py")


def test_mel_scale_keeps_the_device(standin):
    f = standin.asarray([0.0, 500.0, 1000.0, 4000.0])
    for htk in (False, True):
        m = mel.hz_to_mel(f, htk)
        assert type(m) is standin.ndarray
        np.testing.assert_allclose(standin.asnumpy(m), dsp.hz_to_mel(standin.asnumpy(f), htk))
        np.testing.assert_allclose(standin.asnumpy(mel.mel_to_hz(m, htk)), standin.asnumpy(f),
                                   atol=1e-9)


def test_describe_device_names_the_processor(standin, monkeypatch):
    monkeypatch.setenv("SCRATCHNET_THREADS", "3")
    cpu = describe_device("cpu")
    assert cpu.endswith(", 3 threads") and len(cpu) > len(", 3 threads")
    assert describe_device("gpu") == "cupy stand-in"  # the stand-in's device name
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        describe_device("tpu")
    monkeypatch.setenv("SCRATCHNET_THREADS", "two")
    with pytest.raises(DeviceError, match="SCRATCHNET_THREADS must be a whole number"):
        describe_device("cpu")
