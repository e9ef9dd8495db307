"""Small helpers shared by the CUDA kernels: launch geometry and running a kernel from numpy."""
from __future__ import annotations

import functools

import numpy as np
from numba import cuda


# numba-cuda 0.30 registers np.row_stack when it compiles a kernel; numpy 2.5 removed row_stack, so there
# every CUDA compile dies with an AttributeError deep inside numba-cuda. pyproject pins numpy < 2.5; this
# says so in one line for whoever still has 2.5 (the CPU kernels and the simulator do not need the pin).
NUMPY_FOR_CUDA = (2, 5)


@functools.cache
def _numpy_release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def check_numpy_for_cuda(version: str | None = None) -> None:
    """Raise a one-line RuntimeError when numpy (default: the installed one) is too new for numba-cuda."""
    version = version or np.__version__
    if _numpy_release(version) >= NUMPY_FOR_CUDA:
        raise RuntimeError(f"CUDA kernels need numpy < 2.5 (numba-cuda calls np.row_stack, which numpy 2.5 "
                           f"removed), but numpy {version} is installed: pip install \"numpy<2.5\"")


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


def grid_stride(n: int, block: int = 256) -> tuple[int, int]:
    """(blocks, threads) to launch a grid-stride kernel over n elements: enough blocks to give every element
    its own thread, capped at 65535 (the kernel's stride loop covers the rest)."""
    return min(ceil_div(n, block), 65535), block


@cuda.jit(device=True, inline="always")  # inlined at the IR level: compiles to PTX without a GPU
def compensated_add(total, comp, x):
    """One step of a compensated (Kahan-Babuska-Neumaier) float32 sum: returns the new (total, comp).

    total + x rounds away the low bits of the smaller of the two; (big - t) + small recovers exactly those
    bits (exact in float32 when |big| >= |small|), and comp collects them. The sum is total + comp at the
    end. Its error stays ~1 rounding of the result however many terms are added, where a plain float32
    running sum of K terms loses up to K roundings (~sqrt(K) for random signs). The kernels compile without
    fastmath, so the compiler may not "simplify" (big - t) + small to 0.
    """
    t = total + x
    if abs(total) >= abs(x):
        comp += (total - t) + x
    else:
        comp += (x - t) + total
    return t, comp


# Block reductions: every thread of a block brings one value, every thread gets the block's total.
# A tree in shared memory: thread tid adds in tid + stride, for stride = blockDim/2, blockDim/4, ..., 1, so
# the sum takes log2(blockDim) steps instead of blockDim. The barriers, and why each is where it is:
#   1. after the writes: no thread reads a partner's slot before the partner has written it;
#   2. after every step: step k + 1 reads what step k wrote;
#   3. after reading the total: nobody overwrites scratch[0] (the next reduction's first write) before every
#      thread has read it.
# Every thread of the block must call it (a barrier that some threads skip hangs the block). blockDim.x
# must be a power of two <= len(scratch). Inlined at the IR level: compiles to PTX without a GPU.
@cuda.jit(device=True, inline="always")
def block_sum(scratch, value):
    """Sum of `value` over the threads of the block, returned to every thread (see the comment above)."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] += scratch[tid + stride]
        cuda.syncthreads()
        stride //= 2
    total = scratch[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True, inline="always")
def block_max(scratch, value):
    """Max of `value` over the threads of the block, returned to every thread; block_sum's tree and barriers."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] = max(scratch[tid], scratch[tid + stride])
        cuda.syncthreads()
        stride //= 2
    result = scratch[0]
    cuda.syncthreads()
    return result


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
    check_numpy_for_cuda()
    # the kernel's own launch bounds (@cuda.jit(launch_bounds=...)): they cap its registers in the PTX
    bounds = getattr(kernel, "targetoptions", {}).get("launch_bounds")
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc, launch_bounds=bounds)
    return ptx
