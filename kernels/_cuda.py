"""Small helpers shared by the CUDA kernels: launch geometry and running a kernel from numpy."""
from __future__ import annotations

import functools
import sys
import threading

import numpy as np
from numba import cuda, types
from numba.np import numpy_support


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
    ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
    return ptx


def patch_simulator() -> None:
    """Make numba's CUDA simulator fit for our kernels: warp shuffles, and shared arrays without a race.

    A no-op on a real GPU (or when the simulator is off). Idempotent. Called when this module is imported,
    so every kernel module gets it before its first launch.
    """
    from numba import config
    if not config.ENABLE_CUDASIM:
        return
    from numba.cuda.simulator.kernelapi import FakeCUDAModule, FakeCUDAShared
    if getattr(FakeCUDAModule, "_gpt2lab_patched", False):
        return
    _install_warp_shuffles(FakeCUDAModule)
    _install_locked_shared_arrays(FakeCUDAShared)
    FakeCUDAModule._gpt2lab_patched = True


def _install_warp_shuffles(module_class) -> None:
    """Teach the simulator cuda.shfl_sync / shfl_down_sync / shfl_xor_sync (it has none).

    In the simulator each CUDA thread is a Python thread and only syncthreads orders them, so a shuffle is
    emulated as: every thread posts its value, a block barrier, read the source lane's value, a barrier.
    That is exact for the way our kernels shuffle (every live thread of the block makes the same shuffle
    calls: whole-warp reductions), and it is how the warp-level kernels get checked without a GPU.
    """
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

    module_class.shfl_sync = exchange(lambda lane, src: src)
    module_class.shfl_down_sync = exchange(lambda lane, delta: lane + delta)
    module_class.shfl_xor_sync = exchange(lambda lane, lane_mask: lane ^ lane_mask)


_SHARED_LOCK = threading.Lock()


def shared_array_method(make, fallback=None):
    """A replacement for the simulator's FakeCUDAShared.array: every thread of a block that calls
    cuda.shared.array on one source line gets the same array, make(shape, dtype, key), made on first use
    (key: the calling line, (file name, line number)).

    numba's simulator does this look-up-then-insert unlocked: two threads switched between the two steps
    each get a private array, and the kernel then silently reduces over half-empty "shared" memory. Seen
    as a wrong c_attn weight gradient (max abs 5e-5 where 1e-7 is right) in about one run in five of the
    test suite on two busy cores. Here both steps happen under one lock. Calls this does not handle
    (dynamic shared memory, shape 0, or an alignment) go to `fallback`.
    """
    def array(self, shape, dtype, alignment=None):
        if fallback is not None and (shape == 0 or alignment is not None):
            return fallback(self, shape, dtype, alignment)
        dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else np.dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with _SHARED_LOCK:
            res = self._allocations.get(key)
            if res is None:
                res = self._allocations[key] = make(shape, dtype, key)
        return res

    return array


def _install_locked_shared_arrays(shared_class) -> None:
    """Every thread of a block gets the *same* cuda.shared.array, however the threads are scheduled.
    Dynamic shared memory keeps the simulator's own path."""
    shared_class.array = shared_array_method(lambda shape, dtype, key: np.empty(shape, dtype),
                                              fallback=shared_class.array)


patch_simulator()
