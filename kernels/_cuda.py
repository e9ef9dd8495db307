"""Small helpers shared by the CUDA kernels: launch geometry and running a kernel from numpy."""
from __future__ import annotations

import numpy as np
from numba import cuda


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


def grid_stride(n: int, block: int = 256) -> tuple[int, int]:
    """(blocks, threads) to launch a grid-stride kernel over n elements: enough blocks to give every element
    its own thread, capped at 65535 (the kernel's stride loop covers the rest)."""
    return min(ceil_div(n, block), 65535), block


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


def install_simulator_warp_shuffles() -> None:
    """Teach numba's CUDA simulator cuda.shfl_sync / shfl_down_sync / shfl_xor_sync (it has none).

    A no-op on a real GPU. In the simulator each CUDA thread is a Python thread and only syncthreads
    orders them, so a shuffle is emulated as: every thread posts its value, a block barrier, read the
    source lane's value, a barrier. That is exact for the way our kernels shuffle (every live thread of
    the block makes the same shuffle calls: whole-warp reductions), and it is how the warp-level
    kernels get checked without a GPU. Idempotent.
    """
    from numba import config
    if not config.ENABLE_CUDASIM:
        return
    import threading

    from numba.cuda.simulator.kernelapi import FakeCUDAModule
    if hasattr(FakeCUDAModule, "shfl_xor_sync"):
        return

    def exchange(src_lane_of):
        def shfl(self, mask, value, arg):
            thread = threading.current_thread()
            posted = thread._manager.__dict__.setdefault("_shfl_values", {})
            lane = thread.thread_id % 32
            posted[thread.thread_id] = value
            thread.syncthreads()
            src = src_lane_of(lane, arg)
            result = posted.get(thread.thread_id - lane + src, value) if 0 <= src < 32 else value
            thread.syncthreads()  # all reads done before the next shuffle posts
            return result
        return shfl

    FakeCUDAModule.shfl_sync = exchange(lambda lane, src: src)
    FakeCUDAModule.shfl_down_sync = exchange(lambda lane, delta: lane + delta)
    FakeCUDAModule.shfl_xor_sync = exchange(lambda lane, lane_mask: lane ^ lane_mask)
