"""`@cuda_kernel` (kernels/_cuda.py): the launch path a real GPU takes, checked without one.

numba's own kernel object is replaced by a stand-in that records how it was called, so this shows which way
each launch went: numba's typed dispatch (the first launch of each argument key) or straight to the compiled
kernel (every later one), and that a key tells apart what numba's typing tells apart.
"""
import numpy as np
import pytest

from gpt2lab.kernels import _cuda


class FakeDeviceArray:
    """What _arg_key reads of a numba device array."""

    def __init__(self, shape, dtype=np.float32, c=True, f=False, strides=None):
        self.shape, self.ndim, self.dtype = shape, len(shape), np.dtype(dtype)
        self.strides = strides or tuple(4 for _ in shape)
        self._c, self._f = c, f

    def is_c_contiguous(self):
        return self._c

    def is_f_contiguous(self):
        return self._f


class Compiled:
    def __init__(self, log, argtypes):
        self.log, self.argtypes = log, argtypes

    def launch(self, args, griddim, blockdim, stream, sharedmem):
        self.log.append(("direct", self.argtypes, griddim, blockdim))


class FakeDispatcher:
    """numba's CUDADispatcher as far as _cuda.Kernel uses it: [config], typeof_pyval, overloads."""

    def __init__(self, log):
        self.log, self.overloads = log, {}

    def __getitem__(self, config):
        dispatcher = self

        class Configured:
            griddim, blockdim, stream, sharedmem = (config[0], 1, 1), (config[1], 1, 1), 0, 0

            def __call__(self, *args):   # numba types the args and compiles a new overload if needed
                argtypes = tuple(dispatcher.typeof_pyval(a) for a in args)
                dispatcher.overloads.setdefault(argtypes, Compiled(dispatcher.log, argtypes))
                dispatcher.log.append(("numba", argtypes))
        return Configured()

    def typeof_pyval(self, a):
        return ("numpy",) if isinstance(a, np.ndarray) else _cuda._arg_key(a)


@pytest.fixture
def kernel(monkeypatch):
    """A kernel whose compiled stand-ins record their launches; prepared launches off (they have their own
    tests, tests/test_cuda_prepared_launch.py): here every launch after numba's first goes "direct"."""
    monkeypatch.setattr(_cuda, "PREPARED_LAUNCH", False)

    def add_one(out, inp, n):
        pass
    k = _cuda.kernel(add_one)
    k.dispatcher = FakeDispatcher([])
    return k


def routes(k):
    return [entry[0] for entry in k.dispatcher.log]


def test_a_kernel_keeps_its_python_function(kernel):
    assert kernel.py_func.__name__ == "add_one" == kernel.__name__
    with pytest.raises(ValueError, match=r"add_one\[grid, block\]"):
        kernel(1, 2, 3)


def test_numba_dispatches_once_per_key_then_launches_go_direct(kernel):
    a, b = FakeDeviceArray((8,)), FakeDeviceArray((8,))
    n0 = _cuda.launch_count()
    for _ in range(3):
        kernel[4, 32](a, b, 8)
    kernel[2, 64](a, b, 8)          # another configuration, the same compiled kernel
    assert routes(kernel) == ["numba", "direct", "direct", "direct"]
    assert kernel.dispatcher.log[-1][2:] == ((2, 1, 1), (64, 1, 1))
    assert _cuda.launch_count() - n0 == 4
    assert kernel[4, 32] is kernel[4, 32]   # the launcher is cached per configuration


@pytest.mark.parametrize("other", [
    FakeDeviceArray((8,), dtype=np.float64),                 # dtype
    FakeDeviceArray((2, 4)),                                 # rank
    FakeDeviceArray((8,), c=False),                          # not contiguous: numba's layout "A"
    FakeDeviceArray((8,), c=False, f=True),                  # Fortran order: layout "F"
    FakeDeviceArray((8,), strides=(0,)),                     # broadcast: layout "A" even if flagged C
])
def test_what_numba_types_apart_is_keyed_apart(kernel, other):
    a = FakeDeviceArray((8,))
    kernel[4, 32](a, a, 8)
    kernel[4, 32](a, other, 8)      # a new key: numba's path (which compiles for it)
    kernel[4, 32](a, other, 8)
    assert routes(kernel) == ["numba", "numba", "direct"]
    assert kernel.dispatcher.log[-1][1][1] == _cuda._arg_key(other)


def test_scalars_are_keyed_by_class_and_numpy_arrays_always_go_through_numba(kernel):
    a = FakeDeviceArray((8,))
    kernel[4, 32](a, a, 8)
    kernel[4, 32](a, a, np.int32(8))   # int32, not int64: another overload
    kernel[4, 32](a, a, np.int32(9))   # a numpy scalar (ndim 0, no layout) is keyed by its class too
    host = np.zeros(8, np.float32)
    kernel[4, 32](a, host, 8)
    kernel[4, 32](a, host, 8)          # numpy: copied per call by numba, never cached here
    assert routes(kernel) == ["numba", "numba", "direct", "numba", "numba"]
