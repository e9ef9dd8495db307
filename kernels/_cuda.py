"""Small helpers shared by the CUDA kernels: launch geometry, running a kernel from numpy, and `kernel`, the
decorator every CUDA kernel of gpt2lab is defined with (a lean launch path with a launch counter)."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import types
import weakref

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


def device_function(fn):
    """A CUDA device function, inlined into its kernels by NVVM (numba's `forceinline=True`).

    Why not numba's `inline="always"` (inlining at numba's own IR level, the choice before): it copies the
    callee's IR into every call site, then re-runs numba's passes on the result, and that was most of a
    kernel's compile. matmul v7's kernels took ~3.5 s each from Python to PTX on the 2-core machine, ~1-2 s with
    NVVM inlining. For v7's kernels, and 51 more of our 67, the SASS ptxas makes of the two is the same,
    instruction for instruction; the others differ in set-up integer code only (docs/figures.md).
    numba's simulator takes no `forceinline`; there the function runs as Python anyway. (Which of the two
    `cuda.jit` is, was settled when numba.cuda was imported: asked of cuda.jit itself, not of numba's config.)"""
    if cuda.jit.__module__.startswith("numba.cuda.simulator"):
        return cuda.jit(device=True, inline="always")(fn)
    return cuda.jit(device=True, forceinline=True)(fn)


GRID_STRIDE_BLOCK = 256  # threads per block of the grid-stride (elementwise) kernels


def grid_stride(n: int, block: int = GRID_STRIDE_BLOCK) -> tuple[int, int]:
    """(blocks, threads) to launch a grid-stride kernel over n elements: enough blocks to give every element
    its own thread, capped at 65535 (the kernel's stride loop covers the rest)."""
    return min(ceil_div(n, block), 65535), block


@device_function
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


@device_function
def two_sum(a, b):
    """(s, e): s = a + b rounded to float32 and e its rounding error, exactly (a + b = s + e), whichever of a
    and b is larger: Knuth's TwoSum, 6 additions and no comparison (compensated_add's test is a branch; in a
    kernel that sums 64 outputs a thread at once, matmul v7, a branch kept the compiler from unrolling)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


# Block reductions: every thread of a block brings one value, every thread gets the block's total.
# A tree in shared memory: thread tid adds in tid + stride, for stride = blockDim/2, blockDim/4, ..., 1, so
# the sum takes log2(blockDim) steps instead of blockDim. The barriers, and why each is where it is:
#   1. after the writes: no thread reads a partner's slot before the partner has written it;
#   2. after every step: step k + 1 reads what step k wrote;
#   3. after reading the total: nobody overwrites scratch[0] (the next reduction's first write) before every
#      thread has read it.
# Every thread of the block must call it (a barrier that some threads skip hangs the block). blockDim.x
# must be a power of two <= len(scratch).
@device_function
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


@device_function
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


# Warp reductions: registers, no shared memory and no barrier. A butterfly of shuffles: each lane adds the value
# of the lane `offset` away (xor), for offset = width/2, ..., 2, 1; after log2(width) steps every lane of a
# group of `width` adjacent lanes holds the group's total, the same bits in each (a + b = b + a, so the
# partners' two sums agree). All 32 lanes of the warp must take part in every shuffle (FULL_MASK).
FULL_MASK = np.uint32(0xFFFFFFFF)


@device_function
def lanes_sum(value, width):
    """Sum of `value` over each group of `width` adjacent lanes (a power of two <= 32; 32: the whole warp),
    returned to every lane of the group (see the comment above). width: a constant, so the loop unrolls."""
    offset = width // 2
    while offset > 0:
        value += cuda.shfl_xor_sync(FULL_MASK, value, offset)
        offset //= 2
    return value


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


_SCRATCH: dict = {}


def scratch(owner: str, shape, dtype=np.float32):
    """A device buffer for a kernel's intermediate results (`owner` names whose), made once per (owner, shape,
    dtype) and then reused, so a training step allocates nothing. Safe because every kernel here runs on the
    one default stream, in order: two launches never use the same scratch at once."""
    key = (owner, tuple(shape), np.dtype(dtype).str)
    if key not in _SCRATCH:
        _SCRATCH[key] = cuda.device_array(tuple(shape), dtype=dtype)
        if _POISONED:
            _poison(_SCRATCH[key])
    return _SCRATCH[key]


_POISONED = False   # poison_scratch was called: scratch made from then on is poisoned too


def poison_scratch() -> None:
    """Fill every scratch buffer with all-ones bytes (a NaN in float32), those made so far and, from now on in
    this process, those made later. For checks that compare two versions: reused scratch would otherwise hand the
    second what the first wrote there, and hide an element the second never wrote; poisoned, it shows."""
    global _POISONED
    _POISONED = True
    for a in _SCRATCH.values():
        _poison(a)


def _poison(a) -> None:
    a.copy_to_device(np.frombuffer(b"\xff" * a.nbytes, dtype=a.dtype).reshape(a.shape))


def compile_ptx(kernel, signature: str, cc=(9, 0)) -> str:
    """Real PTX for a @cuda.jit kernel, without a GPU (needs numba-cuda with its NVVM wheels)."""
    check_numpy_for_cuda()
    # the kernel's own launch bounds (@cuda.jit(launch_bounds=...)): they cap its registers in the PTX
    bounds = getattr(kernel, "targetoptions", {}).get("launch_bounds")
    with _device_functions_for(cc):
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc, launch_bounds=bounds)
    return ptx


@contextlib.contextmanager
def _device_functions_for(cc):
    """numba-cuda compiles a forceinline device function (`device_function`) for the current GPU's compute
    capability, which it asks the driver for: without a GPU that fails. While compile_ptx runs, the "current
    device" is the cc the PTX is for (numba-cuda 0.30's dispatcher module, which imported the name). Under
    numba-cuda's compiler lock (reentrant), so no other thread compiles meanwhile, nor swaps the name too."""
    from numba.cuda import dispatcher
    from numba.cuda.core.compiler_lock import global_compiler_lock
    with global_compiler_lock:
        real = dispatcher.get_current_device
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=tuple(cc))
        try:
            yield
        finally:
            dispatcher.get_current_device = real


# ---------------------------------------------------------------- @kernel: launches without per-call dispatch
# numba's `kernel[grid, block](*args)` does, on every call: type each argument (numba `typeof`: a Python-level
# call per device array), look the types up among the compiled overloads, then marshal the arguments and
# launch. Measured on an H100 (shared/guide/RECIPES.md): 26.8 us per launch that way, 16.7 us with an explicit
# signature, 15.1 us when the configured `kernel[grid, block]` object is also reused; a GPT-2 step makes
# hundreds of launches, so that is milliseconds per step. `@kernel` keeps the kernel a plain numba kernel
# (same source, same compiler, same `.py_func` for compile_ptx and the simulator) and changes only the
# launch: `[grid, block]` returns a launcher cached per configuration, which finds the compiled kernel from a
# cheap key of the arguments (class, dtype, rank, contiguity: what numba's typing would decide on) and calls
# numba's compiled-kernel launch directly. The first call with a new key goes through numba's own path
# (which compiles) and remembers the compiled kernel it used.
_LAUNCHES = [0]   # kernel launches and memsets since the process started (a list: one cheap in-place add)
# The open kernels.profile.Profile, or None: a launch checks it once; when set, it brackets the launch with
# CUDA events (kernels/profile.py). Off, that check is all profiling costs.
_PROFILER = [None]


def launch_count() -> int:
    """How many kernel launches (and device memsets, see `memset`) this process made through `@kernel`:
    take the difference around a step for launches per step."""
    return _LAUNCHES[0]


def _arg_key(a):
    """What numba's typing of a device-array or scalar kernel argument depends on, cheaply: an array by
    class, dtype, rank and layout ("C", "F" or "A" as numba's DeviceNDArray._numba_type_ decides it), a
    scalar by class. None for a numpy array: numba copies those to the device per call (slow anyway) and types
    them by more flags (read-only, aligned), so they always take numba's own path."""
    ndim = getattr(a, "ndim", None)
    if ndim is None or isinstance(a, np.generic):   # numpy scalars have ndim 0 (and no layout)
        return a.__class__
    if isinstance(a, np.ndarray):
        return None
    broadcast = 0 in a.strides
    layout = "A" if broadcast else "C" if a.is_c_contiguous() else "F" if a.is_f_contiguous() else "A"
    return a.__class__, a.dtype, ndim, layout


# Prepared launches. numba's compiled-kernel launch (numba-cuda 0.30, dispatcher._Kernel.launch) does on every
# call: find the function for the current context (get_cufunc), convert every argument (_prepare_args: ~6 us an
# array, ~1.2 us a scalar, measured here with numba's real DeviceNDArray class), build a cuda.core LaunchConfig,
# then cuda.core's launch. A training step launches the same kernels on the same arrays every step (the model's
# buffers, and since `view` the same view objects), so a launcher keeps what numba made of one set of arguments,
# keyed by the arrays' identities and the scalars' values, and checks the arrays by weak reference (an id is
# reused once its array is freed; a kept launch never keeps an array alive): a repeated launch is a dict lookup
# and cuda.core's launch. Only numba device arrays and real scalars are kept: numpy arguments (copied to the
# device per call), tuples and the rest, kernels in debug mode and numba extensions take numba's own launch. The
# code mirrors numba-cuda 0.30's private launch, so it runs only there; GPT2LAB_PREPARED_LAUNCH=0 turns it off.
PREPARED_PER_LAUNCHER = 1024   # kept argument sets per launch configuration; past it, the launcher starts afresh
_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


def _prepared_by_default() -> bool:
    """On unless GPT2LAB_PREPARED_LAUNCH=0, and only on the numba-cuda whose launch _prepare mirrors (0.30)."""
    if os.environ.get("GPT2LAB_PREPARED_LAUNCH", "1") == "0":
        return False
    try:
        from importlib.metadata import version
        return version("numba-cuda").startswith("0.30.")
    except Exception:  # noqa: BLE001 -- numba-cuda not installed as a distribution: its launch is unknown
        return False


PREPARED_LAUNCH = _prepared_by_default()


def _identity(args):
    """The key of a launch's arguments: a numba device array by id, a scalar by class and value (a float also
    by its sign: -0.0 == 0.0); None when an argument is neither (a numpy array, a tuple, ...)."""
    key = []
    for a in args:
        if isinstance(a, _SCALARS):
            key.append((a.__class__, a, math.copysign(1.0, a)) if isinstance(a, (float, np.floating))
                       else (a.__class__, a))
        elif getattr(a, "__cuda_memory__", False) and not isinstance(a, np.ndarray):
            key.append(id(a))
        else:
            return None
    return tuple(key)


def _prepare(compiled, configured, args):
    """(weak references to the arrays, (launch, stream, LaunchConfig, kernel, arguments)): the call numba's
    _Kernel.launch makes for these args (cuda.core's launch, as numba's dispatcher imported it); None where
    that cannot be kept."""
    if compiled.debug or compiled.extensions:
        return None
    from numba.cuda.dispatcher import LaunchConfig, launch
    kernelargs, written_back = [], []
    for numba_type, value in zip(compiled.argument_types, args):
        compiled._prepare_args(numba_type, value, configured.stream, written_back, kernelargs)
    if written_back:   # an argument copied to the device for this call only
        return None
    cooperative = {"is_cooperative" if _cuda_core_ge_1() else "cooperative_launch": compiled.cooperative}
    config = LaunchConfig(grid=configured.griddim, block=configured.blockdim, shmem_size=configured.sharedmem,
                          **cooperative)
    refs = tuple(None if isinstance(a, _SCALARS) else weakref.ref(a) for a in args)
    return refs, (launch, configured.stream, config, compiled._codelibrary.get_cufunc().kernel, tuple(kernelargs))


@functools.cache
def _cuda_core_ge_1() -> bool:
    from numba.cuda._compat import CUDA_CORE_GE_1_0
    return CUDA_CORE_GE_1_0


def _launch_prepared(prepared) -> None:
    launch, stream, config, kernel, kernelargs = prepared
    launch(stream, config, kernel, *kernelargs)


class _Launcher:
    """`kernel[grid, block]`: launches the compiled kernel that fits the arguments' key."""
    __slots__ = ("kernel", "configured", "compiled", "prepared")

    def __init__(self, kernel: "Kernel", configured):
        self.kernel, self.configured = kernel, configured  # numba's own configured launch (its first call)
        self.compiled = kernel.compiled                    # arg key -> numba's compiled kernel, shared
        self.prepared = {}                                 # _identity(args) -> _prepare's answer

    def __call__(self, *args):
        _LAUNCHES[0] += 1
        if _PROFILER[0] is not None:
            return _PROFILER[0].timed(self.kernel.__name__, self.launch, args)
        self.launch(args)

    def launch(self, args):
        """The launch itself (what __call__ does after counting), for an open profile to bracket."""
        identity = _identity(args) if PREPARED_LAUNCH else None
        if identity is not None:
            kept = self.prepared.get(identity)
            if kept is not None and all(ref is None or ref() is a for ref, a in zip(kept[0], args)):
                return _launch_prepared(kept[1])
        key = tuple(map(_arg_key, args))
        compiled = self.compiled.get(key)
        if compiled is None:   # a new key (or a numpy argument): numba's own launch
            return self.kernel.first_launch(self.configured, key, args)
        c = self.configured
        kept = None
        if identity is not None:
            try:
                kept = _prepare(compiled, c, args)
                if kept is not None:
                    _launch_prepared(kept[1])
            except Exception as e:  # noqa: BLE001 -- never yet run on a GPU: on any surprise, numba's own launch
                compiled.launch(args, c.griddim, c.blockdim, c.stream, c.sharedmem)   # a bad launch raises here
                _give_up_preparing(e)   # numba's own launch worked where the prepared one did not
                return
        if kept is None:   # not keepable (or prepared launches off): numba's own launch
            compiled.launch(args, c.griddim, c.blockdim, c.stream, c.sharedmem)
            return
        if len(self.prepared) >= PREPARED_PER_LAUNCHER:
            self.prepared.clear()
        self.prepared[identity] = kept


def _give_up_preparing(error: Exception) -> None:
    """Prepared launches off for this process, said once on stderr: preparing or making a launch failed where
    numba's own launch of the same arguments then worked (a numba-cuda or cuda.core this code does not know)."""
    global PREPARED_LAUNCH
    if PREPARED_LAUNCH:
        import sys
        PREPARED_LAUNCH = False
        print(f"gpt2lab: prepared kernel launches off ({type(error).__name__}: {error}); numba's own launch from "
              f"here on", file=sys.stderr)


class _SimLauncher:
    """`kernel[grid, block]` in numba's simulator: counted, then numba's own launch (nothing is compiled). The
    simulator's `k[grid, block]` sets the grid on the one kernel object and returns it, so it is redone at
    every call rather than kept."""
    __slots__ = ("name", "dispatcher", "config")

    def __init__(self, name, dispatcher, config):
        from ._cudasim import install
        install()   # our kernels always run in our simulator (greenlet blocks, shuffles), whoever launched them
        self.name, self.dispatcher, self.config = name, dispatcher, config

    def __call__(self, *args):
        _LAUNCHES[0] += 1
        if _PROFILER[0] is not None:
            return _PROFILER[0].timed(self.name, self.launch, args)
        return self.launch(args)

    def launch(self, args):
        return self.dispatcher[self.config](*args)


def skip_kernel_bodies() -> None:
    """In numba's simulator: every launch from here on is counted and its configuration kept, but its body not
    run, so only the host side runs (gpt2/host_profile.py; the launch-size test). For the rest of the process."""
    if not _simulated():
        raise RuntimeError("skip_kernel_bodies: only in numba's simulator (NUMBA_ENABLE_CUDASIM=1)")
    _SimLauncher.launch = lambda self, args: None


class Kernel:
    """A CUDA kernel defined with `@kernel` (see the comment above): launched as `k[grid, block](*args)`
    like numba's, with `.py_func` (the Python source, for compile_ptx and the simulator) and `.dispatcher`
    (numba's own kernel object)."""

    def __init__(self, py_func, **options):
        functools.update_wrapper(self, py_func)
        self.py_func = py_func
        self.dispatcher = cuda.jit(**options)(py_func)
        self.compiled = {}
        self.launchers = {}

    def __getitem__(self, config):
        launcher = self.launchers.get(config)
        if launcher is None:
            if _simulated():
                launcher = _SimLauncher(self.__name__, self.dispatcher, config)
            else:
                launcher = _Launcher(self, self.dispatcher[config])
            self.launchers[config] = launcher
        return launcher

    def first_launch(self, configured, key, args):
        """Launch through numba (which types the arguments and compiles if needed), then remember the compiled
        kernel for `key`: later launches with this key skip numba's dispatch."""
        configured(*args)
        if None in key:
            return
        argtypes = tuple(self.dispatcher.typeof_pyval(a) for a in args)
        compiled = self.dispatcher.overloads.get(argtypes)
        if compiled is not None:   # (numba may have routed the call elsewhere: then keep using its path)
            self.compiled[key] = compiled

    @property
    def targetoptions(self) -> dict:
        """numba's options of the kernel (e.g. launch_bounds, which compile_ptx passes on)."""
        return getattr(self.dispatcher, "targetoptions", {})

    def __call__(self, *args):
        raise ValueError(f"{self.__name__}: a CUDA kernel is launched as {self.__name__}[grid, block](...)")

    def __repr__(self):
        return f"<gpt2lab CUDA kernel {self.__name__}>"


def _simulated() -> bool:
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def kernel(py_func=None, **options):
    """Define a CUDA kernel: `@kernel` where numba has `@cuda.jit` (options, e.g. fastmath=True, go to
    cuda.jit). Launch it as before, `k[grid, block](*args)`; see the comment above for what changes."""
    if py_func is None:
        return functools.partial(kernel, **options)
    return Kernel(py_func, **options)


def view(a, *shape):
    """a.reshape(*shape), made once per (array, shape) for a device array and kept on the array: numba's
    DeviceNDArray.reshape builds a new array object each call (14-25 us of host time here, with the
    real class), and a training step reshapes ~300 times (gpt2/host_profile.py), the same buffers every step.
    A numpy array is reshaped as usual (cheap). The view is read-only metadata over the same memory: sharing
    one object between calls is safe as long as no caller sets attributes on it (none does). The shape as
    reshape takes it: sizes, or one tuple (or list) of them."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if isinstance(a, np.ndarray):
        return a.reshape(shape)
    views = a.__dict__.get("_gpt2lab_views")
    if views is None:
        views = a._gpt2lab_views = {}
    found = views.get(shape)
    if found is None:
        found = views[shape] = a.reshape(*shape)
    return found


def memset_zero(a) -> None:
    """a[...] = 0 for a contiguous device array: one driver memset (asynchronous on the default stream), or
    a fill kernel in the simulator. Counted as a launch (and timed as one by an open kernels.profile)."""
    _LAUNCHES[0] += 1
    if _PROFILER[0] is not None:
        return _PROFILER[0].timed("memset_zero", _memset_zero, a)
    _memset_zero(a)


def _memset_zero(a) -> None:
    if _simulated():
        a.reshape(a.size)[:] = 0  # the simulator's device arrays are numpy underneath
    else:
        from numba.cuda.cudadrv.driver import device_memset
        device_memset(a, 0, a.nbytes)
