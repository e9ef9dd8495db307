"""Prepared launches (kernels/_cuda.py): a repeated launch reuses what numba made of its arguments.

Checked without a GPU against numba's own code: the compiled kernel is a stand-in carrying numba-cuda's real
`_Kernel.launch` and `_Kernel._prepare_args`, the arrays are numba's real DeviceNDArray over a stand-in
allocation, and cuda.core's launch (as numba's dispatcher imported it) is replaced by a recorder. So the call a
prepared launch makes is compared with the one numba's own launch makes for the same arguments.
"""
import ctypes
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from gpt2lab.kernels import _cuda


class _Allocation:
    def __init__(self, ptr):
        self.device_ctypes_pointer, self.device_pointer_value, self.handle = ctypes.c_void_p(ptr), ptr, ptr


def device_array(shape, ptr=0x10000):
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    strides = tuple(4 * int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return DeviceNDArray(shape=shape, strides=strides, dtype=np.float32, gpu_data=_Allocation(ptr))


def _numba_like(argument_types, log):
    """numba's compiled kernel (_Kernel) as far as its launch reads it, with numba's own launch code."""
    from numba.cuda.dispatcher import _Kernel

    class Compiled:
        debug, cooperative, extensions = False, False, ()
        _codelibrary = SimpleNamespace(get_cufunc=lambda: SimpleNamespace(kernel="the compiled function"))
        launch = _Kernel.launch

        def _prepare_args(self, *a):
            log.append("prepare")
            return _Kernel._prepare_args(self, *a)
    compiled = Compiled()
    compiled.argument_types = argument_types
    return compiled


@pytest.fixture
def recorded(monkeypatch):
    """(launch, calls): a kernel whose first launch "compiles" the stand-in, and cuda.core's recorded calls."""
    from numba import types
    from numba.cuda import dispatcher
    calls, log = [], []
    monkeypatch.setattr(dispatcher, "launch", lambda stream, config, kernel, *args: calls.append(
        (stream, (config.grid, config.block, config.shmem_size), kernel, _plain(args))))
    monkeypatch.setattr(_cuda, "PREPARED_LAUNCH", True)

    def add(out, inp, n, flag):
        pass
    k = _cuda.kernel(add)
    compiled = _numba_like((types.Array(types.float32, 2, "C"), types.Array(types.float32, 2, "C"), types.int64,
                            types.boolean), log)

    class Configured:
        griddim, blockdim, stream, sharedmem = (3, 1, 1), (128, 1, 1), 0, 0

        def __call__(self, *args):   # numba's first launch: it compiles, then launches its own way
            compiled.launch(args, self.griddim, self.blockdim, self.stream, self.sharedmem)
    k.dispatcher = SimpleNamespace(__getitem__=None, typeof_pyval=_cuda._arg_key, overloads={})
    k.dispatcher.overloads = {tuple(_cuda._arg_key(a) for a in (device_array((2, 2)),) * 2) + (int, bool): compiled}
    k.launchers[(3, 128)] = _cuda._Launcher(k, Configured())
    return k[3, 128], calls, log, compiled


def _plain(args):
    return tuple(a.value if isinstance(a, ctypes._SimpleCData) else a for a in args)


def test_a_prepared_launch_makes_numbas_own_call(recorded):
    launch, calls, log, compiled = recorded
    out, inp = device_array((4, 8), 0x1000), device_array((4, 8), 0x2000)
    launch(out, inp, 7, True)     # the first: numba's own path (its dispatcher compiles)
    launch(out, inp, 7, True)     # prepared here, then launched
    compiled.launch((out, inp, 7, True), (3, 1, 1), (128, 1, 1), 0, 0)   # numba's own, for comparison
    assert len(calls) == 3 and calls[1] == calls[2] == calls[0]
    assert calls[1][3][:5] == (0, 0, 32, 4, 0x1000) and calls[1][3][-2:] == (7, True)   # size, itemsize, ptr


def test_a_repeated_launch_reuses_the_prepared_arguments(recorded):
    launch, calls, log, _ = recorded
    out, inp = device_array((4, 8), 0x1000), device_array((4, 8), 0x2000)
    launch(out, inp, 7, True)
    launch(out, inp, 7, True)
    prepared = log.count("prepare")
    for _ in range(3):
        launch(out, inp, 7, True)
    assert log.count("prepare") == prepared and len(calls) == 5          # no argument converted again
    launch(out, inp, 8, True)                                            # another value: prepared anew
    assert log.count("prepare") == prepared + 4 and calls[-1][3][-2:] == (8, True)
    other = device_array((4, 8), 0x3000)
    launch(other, inp, 7, True)                                          # another array: prepared anew
    assert calls[-1][3][4] == 0x3000


def test_an_array_is_checked_by_identity_not_by_its_id_alone(recorded):
    """A kept launch whose weak reference is not the array passed now (its id reused after the old array was
    freed, made here by hand) is not trusted: the arguments are prepared again."""
    launch, calls, log, _ = recorded
    out, inp = device_array((4, 8), 0x1000), device_array((4, 8), 0x2000)
    launch(out, inp, 7, True)
    freed = device_array((4, 8), 0x9000)
    launch.prepared[_cuda._identity((out, inp, 7, True))] = (
        (weakref.ref(freed), weakref.ref(inp), None, None), (lambda *a: calls.append("stale"), None, None, None, ()))
    launch(out, inp, 7, True)
    assert "stale" not in calls and calls[-1][3][4] == 0x1000


def test_numpy_arguments_and_the_switch_take_numbas_own_launch(recorded, monkeypatch):
    launch, calls, log, _ = recorded
    out, inp = device_array((4, 8), 0x1000), device_array((4, 8), 0x2000)
    assert _cuda._identity((out, np.zeros(3), 7)) is None   # a numpy array: nothing kept
    monkeypatch.setattr(_cuda, "PREPARED_LAUNCH", False)
    for _ in range(3):
        launch(out, inp, 7, True)
    assert not launch.prepared and log.count("prepare") == 4 * 3   # every launch converts its 4 arguments


def test_a_first_prepared_launch_that_fails_turns_them_off_for_numbas_own(recorded, monkeypatch, capsys):
    """Never yet run on a GPU: if cuda.core refuses what was prepared, the process says so once and goes on
    with numba's own launch (which raises again if the launch itself is bad)."""
    from numba.cuda import dispatcher
    launch, calls, log, compiled = recorded
    out, inp = device_array((4, 8), 0x1000), device_array((4, 8), 0x2000)
    launch(out, inp, 7, True)                                  # numba's first launch
    numbas = dispatcher.launch

    def refusing(prepared):
        raise TypeError("launch() got an unexpected argument")
    monkeypatch.setattr(_cuda, "_launch_prepared", refusing)
    launch(out, inp, 7, True)
    assert not _cuda.PREPARED_LAUNCH and "prepared kernel launches off (TypeError" in capsys.readouterr().err
    assert len(calls) == 2 and calls[1] == calls[0] and dispatcher.launch is numbas   # numba's own, once
    launch(out, inp, 7, True)
    assert len(calls) == 3 and not launch.prepared


def test_only_device_arrays_and_scalars_are_kept_and_floats_by_their_sign():
    out = device_array((4, 8))
    assert _cuda._identity((out, 3, True, 2.5, np.float32(1.5))) is not None
    for other in (np.zeros(3), (1, 2), 1j, None, "x"):
        assert _cuda._identity((out, other)) is None, other   # numba's own launch for these
    assert _cuda._identity((out, 0.0)) != _cuda._identity((out, -0.0))
    assert _cuda._identity((out, 1)) != _cuda._identity((out, True)) != _cuda._identity((out, 1.0))


def test_a_launch_numba_refuses_too_is_an_error_and_leaves_prepared_launches_on(recorded, monkeypatch):
    from numba.cuda import dispatcher
    launch, calls, log, _ = recorded
    out, inp = device_array((4, 8), 0x1000), device_array((4, 8), 0x2000)
    launch(out, inp, 7, True)

    def refusing(*args):
        raise RuntimeError("CUDA_ERROR_INVALID_VALUE")
    monkeypatch.setattr(dispatcher, "launch", refusing)   # both ways refused: the launch itself is bad
    with pytest.raises(RuntimeError, match="INVALID_VALUE"):
        launch(out, inp, 7, True)
    assert _cuda.PREPARED_LAUNCH and not launch.prepared


def test_prepared_launches_are_on_only_for_the_numba_cuda_they_mirror(monkeypatch):
    import importlib.metadata
    monkeypatch.delenv("GPT2LAB_PREPARED_LAUNCH", raising=False)
    for installed, on in (("0.30.4", True), ("0.31.0", False), ("0.29.9", False)):
        monkeypatch.setattr(importlib.metadata, "version", lambda name, v=installed: v)
        assert _cuda._prepared_by_default() is on, installed
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.30.4")
    monkeypatch.setenv("GPT2LAB_PREPARED_LAUNCH", "0")
    assert _cuda._prepared_by_default() is False
