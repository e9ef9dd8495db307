"""numpy 2.5 removed np.row_stack, which numba-cuda 0.30 calls on every CUDA compile: a CUDA path must say
so in one line (naming the installed numpy and the fix) instead of an AttributeError deep in numba-cuda."""
import numpy as np
import pytest

from gpt2lab.kernels import _cuda
from gpt2lab.kernels._validate import check_same_device


class FakeDeviceArray:
    """Looks like a numba device array to check_same_device (it only asks for copy_to_host)."""
    def copy_to_host(self):
        return np.zeros(1, np.float32)


@pytest.mark.parametrize("version", ["2.5.2", "2.5.0rc1", "3.0.0"])
def test_cuda_path_names_numpy_and_fix(monkeypatch, version):
    monkeypatch.setattr(np, "__version__", version)
    with pytest.raises(RuntimeError) as err:
        check_same_device("gelu_forward", out=FakeDeviceArray(), inp=FakeDeviceArray())
    message = str(err.value)
    assert "\n" not in message
    assert f"numpy {version} is installed" in message and 'pip install "numpy<2.5"' in message


@pytest.mark.parametrize("version", ["2.4.6", "1.26.4", "2.4.0rc1"])
def test_supported_numpy_passes(monkeypatch, version):
    monkeypatch.setattr(np, "__version__", version)
    assert check_same_device("gelu_forward", out=FakeDeviceArray(), inp=FakeDeviceArray())


def test_cpu_path_never_asks(monkeypatch):
    # the CPU kernels work with numpy 2.5: only a CUDA path may refuse it
    monkeypatch.setattr(np, "__version__", "2.5.2")
    assert not check_same_device("gelu_forward", out=np.zeros(2, np.float32), inp=np.zeros(2, np.float32))


def test_compile_ptx_refuses_too_new_numpy(monkeypatch):
    monkeypatch.setattr(np, "__version__", "2.5.2")
    with pytest.raises(RuntimeError, match=r'pip install "numpy<2\.5"'):
        _cuda.compile_ptx(None, "void()")
