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
