"""Every change gpt2lab makes to numba's CUDA simulator, in one place, installed explicitly.

numba's simulator (NUMBA_ENABLE_CUDASIM=1, read when numba is first imported) runs each CUDA thread as a
Python thread. Two things it lacks, our kernels need, and one it does slowly:

* warp shuffles (cuda.shfl_sync, shfl_down_sync, shfl_xor_sync): layernorm v3's warp sums;
* a race-free cuda.shared.array: numba looks the block's array up and inserts it unlocked, so two threads
  switched between the two steps each get a private "shared" array (`shared_array_method`);
* a block barrier that waits instead of polling (`_install_waiting_barrier`): numba's block manager spins,
  asking every thread of the block again and again whether it is alive or blocked in syncthreads, and that
  loop took about half the CPU time of a simulated model step.

`install()` adds all three; `install_recorder(...)` (explain/cudatrace.py) replaces shared arrays, barriers and
atomics with recording ones. Nothing here runs on import: whoever runs kernels in the simulator calls
`install()` first (the verification CLI, the model on device "cudasim", the simulator tests), and on a real
GPU it does nothing.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
from numba import types
from numba.np import numpy_support


def install() -> None:
    """Make numba's CUDA simulator fit for our kernels: warp shuffles, shared arrays without a race, and a
    block barrier that waits instead of polling.

    A no-op on a real GPU (or when the simulator is off). Idempotent.
    """
    from numba import config
    if not config.ENABLE_CUDASIM:
        return
    from numba.cuda.simulator.kernelapi import FakeCUDAModule, FakeCUDAShared
    if getattr(FakeCUDAModule, "_gpt2lab_patched", False):
        return
    _install_warp_shuffles(FakeCUDAModule)
    _install_waiting_barrier()
    FakeCUDAShared.array = shared_array_method(lambda shape, dtype, key: np.empty(shape, dtype),
                                               fallback=FakeCUDAShared.array)
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


class _BlockBarrier:
    """cuda.syncthreads for one simulated block, with numba's rule: the barrier opens when every thread of
    the block that has not finished is waiting at it (a thread that returned early does not hold it shut).
    A thread that fails opens it for good: the others raise, as numba's manager makes them, instead of
    waiting for a thread that will never come."""

    def __init__(self, n_threads: int):
        self.cond = threading.Condition()
        self.running = n_threads   # threads of the block not finished
        self.waiting = 0           # of those, how many wait at the barrier now
        self.opened = 0            # how many times it opened: a waiter leaves when this moves on
        self.failed = None         # the first thread that raised: its error is the launch's

    def _open(self) -> None:
        self.waiting = 0
        self.opened += 1
        self.cond.notify_all()

    def wait(self) -> None:
        with self.cond:
            if self.failed is not None:
                raise RuntimeError("abort flag set on syncthreads call")
            opened = self.opened
            self.waiting += 1
            if self.waiting == self.running:
                self._open()
            while opened == self.opened and self.failed is None:
                self.cond.wait()
            if self.failed is not None:
                raise RuntimeError("abort flag set on syncthreads clear")

    def leave(self, thread, failed: bool) -> None:
        with self.cond:
            self.running -= 1
            if failed and self.failed is None:
                self.failed = thread
                self.cond.notify_all()
            elif self.running and self.waiting == self.running:
                self._open()


def _install_waiting_barrier() -> None:
    """Replace numba's polling block manager: every CUDA thread is still its own Python thread, started in
    the same order with the same blockIdx and threadIdx, but syncthreads waits on a `_BlockBarrier` and the
    block's launch joins its threads, so no thread spins while the others compute. An exception in a thread
    is raised with its tid and ctaid, as numba raises it. Same results, bit for bit, on a model step."""
    from numba.cuda.simulator import kernel

    def syncthreads(self):
        self._block_barrier.wait()

    def run_thread(self):
        try:
            threading.Thread.run(self)
        except Exception as e:   # numba's message: which thread of which block failed
            where = f"tid={list(self.threadIdx)} ctaid={list(self.blockIdx)}"
            self.exception = (type(e)(f"{where}: {e}" if str(e) else where), sys.exc_info()[2])
        finally:
            self._block_barrier.leave(self, failed=self.exception is not None)

    def run_block(self, grid_point, *args):
        points = list(np.ndindex(*self._block_dim))
        barrier = _BlockBarrier(len(points))
        threads = []
        for block_point in points:
            t = kernel.BlockThread(lambda: self._f(*args), self, grid_point, block_point, self._debug)
            t._block_barrier = barrier
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        if barrier.failed is not None:   # the thread that failed first, not one it aborted
            error, traceback = barrier.failed.exception
            raise error.with_traceback(traceback)

    kernel.BlockThread.syncthreads = syncthreads
    kernel.BlockThread.run = run_thread
    kernel.BlockManager.run = run_block


_SHARED_LOCK = threading.Lock()


def shared_array_method(make, fallback=None):
    """A replacement for the simulator's FakeCUDAShared.array: every thread of a block that calls
    cuda.shared.array on one source line gets the same array, make(shape, dtype, key), made on first use
    (key: the calling line, (file name, line number)).

    numba's simulator does this look-up-then-insert unlocked: two threads switched between the two steps
    each get a private array, and the kernel then silently reduces over half-empty "shared" memory. Seen
    as a wrong c_attn weight gradient (max abs 5e-5 where 1e-7 is right) in about one run in five of the
    test suite on two busy cores. Here both steps happen under one lock. Dynamic shared memory (shape 0) goes
    to `fallback`. An alignment is accepted and has nothing to do here (numba's simulator refuses it): it is a
    promise about GPU addresses that lets the compiler use vector loads, and numpy arrays need none.
    """
    def array(self, shape, dtype, alignment=None):
        if fallback is not None and shape == 0:
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


def install_recorder(make_shared, is_recording, log_atomic) -> None:
    """Trace kernels in the simulator (explain/cudatrace.py), after `install()`: count barriers per thread
    (thread.phase), hand out shared arrays made by make_shared(shape, dtype, key) (one per source line and
    block, as `install` does), and send cuda.atomic.add on arrays for which is_recording(array) holds to
    log_atomic(array, index, val) under the simulator's atomic lock (it returns the old value). Installed
    once per process (a second call is a no-op: wrapping syncthreads twice would count every barrier twice),
    so the callables should read what they log into from state the caller swaps per launch.
    """
    from numba.cuda.simulator import kernel, kernelapi
    if getattr(kernel.BlockThread, "_gpt2lab_traced", False):
        return
    kernel.BlockThread._gpt2lab_traced = True

    barrier = kernel.BlockThread.syncthreads

    def syncthreads(self):
        barrier(self)
        self.phase = getattr(self, "phase", 0) + 1

    kernel.BlockThread.syncthreads = syncthreads
    kernelapi.FakeCUDAShared.array = shared_array_method(make_shared)
    add = kernelapi.FakeCUDAAtomic.add

    def atomic_add(self, array, index, val):
        if not is_recording(array):
            return add(self, array, index, val)
        with kernelapi.addlock:   # one indivisible read-add-write, logged as one event
            return log_atomic(array, index, val)

    kernelapi.FakeCUDAAtomic.add = atomic_add
