"""Every CUDA kernel compiles to real PTX for Hopper (sm_90) without a GPU.

The simulator runs Python semantics and accepts code the real compiler rejects (untyped lists, Python
objects, bad shared-array shapes); compiling each kernel with NVVM catches that here.
"""
import importlib
import os

import pytest

from kernel_ops import IMPLEMENTED
from ptx_cache import ptx_of

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                                reason="PTX needs the real numba.cuda, not the simulator")


@pytest.mark.parametrize("op", IMPLEMENTED)
def test_cuda_kernels_compile_to_ptx(op):
    from gpt2lab.kernels._cuda import Kernel
    mod = importlib.import_module(f"gpt2lab.kernels.{op}")
    assert mod.CUDA_KERNELS, f"{op}: no CUDA kernels listed"
    for kernel, sig in mod.CUDA_KERNELS:
        # launched through @cuda_kernel (kernels/_cuda.py), not numba's per-call dispatch
        assert isinstance(kernel, Kernel), f"{op}: {kernel.__name__} is not defined with @cuda_kernel"
        ptx = ptx_of(kernel, sig)  # compiled once per session: test_kernels_resources reads it too
        assert ".entry" in ptx and ".target sm_90" in ptx, f"{op}: {kernel.__name__}"
        # A Python float constant silently promotes float32 math to float64, which runs at a small
        # fraction of the speed on most GPUs: the kernels keep every constant float32.
        assert ".f64" not in ptx, f"{op}: {kernel.__name__} does float64 arithmetic"


def test_compile_ptx_leaves_numbas_current_device_as_it_was():
    """compile_ptx stands in a device of the PTX's compute capability while it compiles (numba-cuda asks the
    driver for one when it compiles a forceinline device function); after it, numba's own lookup is back."""
    from numba.cuda import dispatcher

    from gpt2lab.kernels import crossentropy
    from gpt2lab.kernels._cuda import compile_ptx
    before = dispatcher.get_current_device
    # v3 calls device functions (block_max, block_sum): compiling them asks for the current device
    kernel, sig = next((k, s) for k, s in crossentropy.CUDA_KERNELS if k.__name__ == "crossentropy_forward_kernel_v3")
    assert ".entry" in compile_ptx(kernel, sig)
    assert dispatcher.get_current_device is before
