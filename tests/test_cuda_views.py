"""kernels/_cuda.view: a device array's reshape made once per shape and kept (numba's DeviceNDArray.reshape
builds a new array object each call, ~14-25 us of host time; a training step reshapes ~300 times). Built here on
numba's real DeviceNDArray class over a stand-in allocation: no GPU is touched (nothing reads the memory)."""
import numpy as np
import pytest

from gpt2lab.kernels._cuda import view


class _Allocation:
    device_pointer_value = 0


def _device_array(shape):
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    strides = tuple(4 * int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return DeviceNDArray(shape=shape, strides=strides, dtype=np.float32, gpu_data=_Allocation())


def test_a_device_array_view_is_made_once_per_shape():
    a = _device_array((4, 8, 16))
    first = view(a, 32, 16)
    assert first.shape == (32, 16) and first.strides == (64, 4)
    assert view(a, 32, 16) is first and view(a, (32, 16)) is first and view(a, [32, 16]) is first  # no reshape
    flat = view(a, 512)
    assert flat is not first and flat.shape == (512,)
    assert view(_device_array((4, 8, 16)), 32, 16) is not first      # kept per array, not per shape alone


def test_a_numpy_array_is_reshaped_as_usual():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    v = view(a, 2, 6)
    assert v.shape == (2, 6) and np.shares_memory(v, a) and view(a, (4, 3)).shape == (4, 3)
    with pytest.raises(ValueError):
        view(a, 5, 2)
