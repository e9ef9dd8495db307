"""Small helpers shared by the CUDA kernels: launch geometry and running a kernel from numpy."""
from __future__ import annotations

import numpy as np
from numba import cuda


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


def run_on_device(launch, args: dict, outs) -> dict:
    """Copy numpy `args` to the GPU, call `launch(**device_args)`, copy the tensors named in `outs` back.

    Non-array arguments (ints, floats, None) pass through unchanged. Used by the verification harness
    and the benchmarks, which speak numpy; the model keeps its buffers on the device and calls the
    kernels directly.
    """
    dev = {k: cuda.to_device(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    launch(**dev)
    cuda.synchronize()
    return {k: dev[k].copy_to_host() for k in outs}


def compile_ptx(kernel, signature: str, cc=(9, 0)) -> str:
    """Real PTX for a @cuda.jit kernel, without a GPU (needs numba-cuda with its NVVM wheels)."""
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
    return ptx
