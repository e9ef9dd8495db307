"""Every change gpt2lab makes to numba's CUDA simulator, in one place, installed explicitly.

numba's simulator (NUMBA_ENABLE_CUDASIM=1, read when numba is first imported) runs each CUDA thread as
Python code. Two things it lacks, our kernels need, and one it does slowly:

* warp shuffles (cuda.shfl_sync, shfl_down_sync, shfl_xor_sync): layernorm v3's warp sums;
* a race-free cuda.shared.array: numba looks the block's array up and inserts it unlocked, so two threads
  switched between the two steps each get a private "shared" array (`shared_array_method`);
* cheap blocks (`_install_cooperative_blocks`): numba starts an OS thread per CUDA thread and its block
  manager spins, asking every thread again and again whether it waits in syncthreads. Here a block's threads
  are greenlets, switched at barriers and after atomics: no OS threads, no polling, and a launch runs the same
  way every time. A thread that runs alone for long (a spin on another thread's plain write never ends here)
  is reported on stderr (`_Watchdog`).

`install()` adds all three; `install_recorder(...)` (explain/cudatrace.py) replaces shared arrays, barriers and
atomics with recording ones. Nothing here runs on import. A kernel of ours installs it at its first launch in
the simulator (kernels/_cuda.py's launcher), whoever launched it; a plain @cuda.jit kernel (a learner's puzzle,
a test's) runs in it where its process called `install()` (puzzle_sim, cudatrace, the verification CLI, the
model on device "cudasim"). On a real GPU it does nothing.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time

import numpy as np
from numba import types
from numba.np import numpy_support


def install() -> None:
    """Make numba's CUDA simulator fit for our kernels: warp shuffles, shared arrays without a race, and blocks
    whose threads are greenlets (no OS thread a CUDA thread, no polling).

    A no-op on a real GPU (or when the simulator is off). Idempotent.
    """
    from numba import config
    if not config.ENABLE_CUDASIM:
        return
    from numba.cuda.simulator.kernelapi import FakeCUDAModule, FakeCUDAShared
    if getattr(FakeCUDAModule, "_gpt2lab_patched", False):
        return
    _Watchdog.start()   # first: a bad GPT2LAB_SIM_STALL_S raises before anything is patched
    _install_warp_shuffles(FakeCUDAModule)
    _install_cooperative_blocks()
    FakeCUDAShared.array = shared_array_method(lambda shape, dtype, key: np.empty(shape, dtype),
                                               fallback=FakeCUDAShared.array)
    FakeCUDAModule._gpt2lab_patched = True


def _install_warp_shuffles(module_class) -> None:
    """Teach the simulator cuda.shfl_sync / shfl_down_sync / shfl_xor_sync (it has none).

    In the simulator each CUDA thread runs in Python and only syncthreads orders them, so a shuffle is
    emulated as: every thread posts its value, a block barrier, read the source lane's value, a barrier.
    That is exact for the way our kernels shuffle (every live thread of the block makes the same shuffle
    calls: whole-warp reductions), and it is how the warp-level kernels get checked without a GPU.
    """
    def exchange(src_lane_of):
        def shfl(self, mask, value, arg):
            thread = current_thread()
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


_BARRIER = object()   # what a thread hands its block's scheduler at a barrier (at an atomic it hands None)


class SimThread:
    """One simulated CUDA thread: what kernel code asks of numba's BlockThread (threadIdx, blockIdx, thread_id,
    the block's manager, the barriers), run as a greenlet of the block's scheduler instead of an OS thread."""

    def __init__(self, manager, block_idx, thread_idx, body):
        from greenlet import greenlet
        from numba.cuda.simulator.kernelapi import Dim3
        self._manager = manager
        self.blockIdx, self.threadIdx = Dim3(*block_idx), Dim3(*thread_idx)
        bx, by, _ = manager._block_dim
        self.thread_id = thread_idx[0] + bx * (thread_idx[1] + by * thread_idx[2])
        self.greenlet = greenlet(body)

    def syncthreads(self) -> None:
        """Back to the block's scheduler; it resumes this thread once every running thread is at a barrier."""
        self.greenlet.parent.switch(_BARRIER)

    def _syncthreads_reduce(self, value, reduce):   # numba's syncthreads_count/and/or, over our barrier
        self._manager.block_state[tuple(self.threadIdx)] = value
        self.syncthreads()
        result = reduce(self._manager.block_state)
        self.syncthreads()
        return result

    def syncthreads_count(self, value):
        return self._syncthreads_reduce(value, np.count_nonzero)

    def syncthreads_and(self, value):
        return self._syncthreads_reduce(value, lambda s: int(np.all(s)))

    def syncthreads_or(self, value):
        return self._syncthreads_reduce(value, lambda s: int(np.any(s)))


class _Running:
    thread: SimThread | None = None   # the simulated thread whose greenlet runs now (None between kernels)
    since = 0.0                       # when it was resumed (time.monotonic)


def _run_as(t: SimThread | None) -> None:
    _Running.thread, _Running.since = t, time.monotonic()


class _Watchdog:
    """Says so, once, on stderr when one simulated thread has run STALL_S seconds without handing back.

    Threads switch only at barriers, after atomics and at their end, so a loop that waits for another thread's
    plain (non-atomic) write never ends here: the writer never runs. (In numba's own simulator, threads that
    are OS threads, it usually ended; on a GPU it is a bug as well, the compiler may keep the value in a
    register.) Without this message a learner's puzzle just hangs; a lesson runs the simulator in a child
    process, and explain/simulator.py's run_simulated shows this line as soon as the child prints it."""
    STALL_S = 30.0   # the default; GPT2LAB_SIM_STALL_S sets it, read when install() starts the watchdog
    started = False
    warned = None   # (thread, since) already reported

    @classmethod
    def start(cls) -> None:
        if not cls.started:
            cls.STALL_S = _stall_seconds(os.environ.get("GPT2LAB_SIM_STALL_S"), cls.STALL_S)   # raises first
            cls.started = True
            threading.Thread(target=cls._watch, name="gpt2lab-sim-watchdog", daemon=True).start()

    @classmethod
    def _watch(cls) -> None:
        while True:
            time.sleep(min(cls.STALL_S / 4, 5.0))
            t, since = _Running.thread, _Running.since
            if t is not None and time.monotonic() - since > cls.STALL_S and cls.warned != (t, since):
                cls.warned = (t, since)
                print(stall_message(t, cls.STALL_S), file=sys.stderr, flush=True)


def _stall_seconds(text: str | None, default: float) -> float:
    """GPT2LAB_SIM_STALL_S's seconds (a positive number), or the default when unset; else a one-line error."""
    if text is None:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"GPT2LAB_SIM_STALL_S must be a positive number of seconds, got {text!r}")
    return seconds


STALL_PREFIX = "gpt2lab: CUDA simulator: thread "   # explain/simulator.py relays lines that start so


def stall_message(t: SimThread, seconds: float) -> str:
    return (f"{STALL_PREFIX}tid={list(t.threadIdx)} ctaid={list(t.blockIdx)} has run "
            f"{seconds:g} s while the other threads of its block wait. They take turns only at barriers, at a "
            f"thread's end and (outside a trace) after atomics, so a loop that waits for another thread's plain "
            f"(non-atomic) write never ends here (on a GPU it is a bug too). Interrupt the cell to stop it; if "
            f"the thread is only slow, wait.")


def current_thread():
    """The simulated CUDA thread running now (inside a kernel), else threading.current_thread()."""
    return _Running.thread or threading.current_thread()


class _Aborted(RuntimeError):
    """Thrown into the threads of a block one of whose threads raised (numba's words for it)."""


def _run_block(manager, grid_point, *args) -> None:
    """Run one block: every thread in numba's thread order, each until its next barrier or its end, round after
    round. So a barrier opens when every thread that has not finished waits at it, as numba's rule says (a
    thread that returned early does not hold it shut). A thread also steps aside after each atomic operation
    and runs again before the barrier opens: a thread spinning on a flag that another sets atomically then
    lets the other run, as a GPU's threads would. The first thread that raises ends the launch with its error,
    named by tid and ctaid as numba names it; the others are unwound at once (a thread left suspended inside a
    device function would keep that function's module bound to this launch's fake `cuda`)."""
    body = (lambda: manager._f(*args)) if not manager._debug else _debug_body(manager, args)
    threads = [SimThread(manager, grid_point, point, body) for point in np.ndindex(*manager._block_dim)]
    try:
        running = threads
        while running:
            waiting = running   # to run until their next barrier or end
            while waiting:
                waiting = [t for t in waiting if _resume(t) is not _BARRIER and not t.greenlet.dead]
            running = [t for t in running if not t.greenlet.dead]
    finally:
        _unwind(threads)
        _run_as(None)


def _resume(t: SimThread):
    """Run thread t until it hands back (_BARRIER at a barrier, None at an atomic or its end)."""
    _run_as(t)
    try:
        return t.greenlet.switch()
    except Exception as e:   # numba's message: which thread of which block failed
        where = f"tid={list(t.threadIdx)} ctaid={list(t.blockIdx)}"
        raise type(e)(f"{where}: {e}" if str(e) else where).with_traceback(e.__traceback__) from None


def _unwind(threads) -> None:
    """End every thread not finished (a launch that failed): each raises where it waits, so its frames close."""
    for t in threads:
        if not t.greenlet.dead:
            _run_as(t)
            try:
                t.greenlet.throw(_Aborted("abort flag set on syncthreads clear"))
            except Exception:   # noqa: BLE001 - the launch's own error is already on its way
                pass


def _step_aside():
    """After an atomic operation: back to the block's scheduler, which runs the others before this one again."""
    t = _Running.thread
    if t is not None:
        t.greenlet.parent.switch(None)


def _debug_body(manager, args):
    def body():   # numba's debug mode: a division by zero raises
        with np.errstate(divide="raise"):
            manager._f(*args)
    return body


class _ThreadingForKernels:
    """threading, as numba's kernel API sees it: current_thread is the simulated thread running now."""
    current_thread = staticmethod(current_thread)

    def __getattr__(self, name):
        return getattr(threading, name)


def _install_cooperative_blocks() -> None:
    """Replace numba's block manager. numba starts an OS thread per CUDA thread and polls them all, again and
    again, to find out whether they wait at syncthreads. Here a block's threads are greenlets in the launching
    thread, switched at barriers and after atomics: no thread starts, no polling, no hand-offs of the GIL (a
    simulated fused training step 2.6x faster; docs/figures.md). Same blockIdx, threadIdx, thread order and
    barrier rule, and a launch runs the same way every time. numba's kernel API finds "the current thread"
    through threading.current_thread: it is pointed at `current_thread`."""
    from numba.cuda.simulator import kernel, kernelapi
    kernelapi.threading = _ThreadingForKernels()
    kernel.BlockManager.run = _run_block
    atomic = kernelapi.FakeCUDAAtomic
    for name, op in list(vars(atomic).items()):
        if callable(op) and not name.startswith("_"):
            setattr(atomic, name, _then_step_aside(op))


def _then_step_aside(op):
    @functools.wraps(op)
    def atomic_op(*args, **kwargs):
        old = op(*args, **kwargs)
        _step_aside()
        return old
    return atomic_op


_SHARED_LOCK = threading.Lock()


def shared_array_method(make, fallback=None):
    """A replacement for the simulator's FakeCUDAShared.array: every thread of a block that calls
    cuda.shared.array on one source line gets the same array, make(shape, dtype, key), made on first use
    (key: the calling line, (file name, line number)).

    numba's simulator does this look-up-then-insert unlocked: two threads switched between the two steps
    each get a private array, and the kernel then silently reduces over half-empty "shared" memory. Seen
    as a wrong c_attn weight gradient (max abs 5e-5 where 1e-7 is right) in about one run in five of the
    test suite on two busy cores. Here both steps happen under one lock (and a block of greenlets,
    `_install_cooperative_blocks`, never switches between them either). Dynamic shared memory (shape 0) goes
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
    from numba.cuda.simulator import kernelapi
    if getattr(SimThread, "_gpt2lab_traced", False):
        return
    SimThread._gpt2lab_traced = True

    barrier = SimThread.syncthreads

    def syncthreads(self):
        barrier(self)
        self.phase = getattr(self, "phase", 0) + 1

    SimThread.syncthreads = syncthreads
    kernelapi.FakeCUDAShared.array = shared_array_method(make_shared)
    add = kernelapi.FakeCUDAAtomic.add

    def atomic_add(self, array, index, val):
        if not is_recording(array):
            return add(self, array, index, val)
        with kernelapi.addlock:   # one indivisible read-add-write, logged as one event
            return log_atomic(array, index, val)

    kernelapi.FakeCUDAAtomic.add = atomic_add
