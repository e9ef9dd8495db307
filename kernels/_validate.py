"""Input checks at the public entry points: wrong dtype, rank, shape or layout -> a clear error."""
from __future__ import annotations

import numpy as np
from numba import config as numba_config


def is_device_array(x) -> bool:
    """True for a numba CUDA device array (real GPU or the simulator's), False for numpy."""
    return not isinstance(x, np.ndarray) and hasattr(x, "copy_to_host")


def to_host(a) -> np.ndarray:
    """A numpy copy of `a`, a numpy or CUDA device array (the one host-copy helper)."""
    return a.copy_to_host() if is_device_array(a) else np.array(a)


def on_host(a) -> np.ndarray:
    """`a` as a numpy array to read now: the array itself when on the host (no copy), else a copy."""
    return a.copy_to_host() if is_device_array(a) else a


def _fmt_shape(shape) -> str:
    return "(" + ",".join("?" if s is None else str(s) for s in shape) + ")"


def check_array(op: str, name: str, x, shape, dtype=np.float32, dims: str = ""):
    """Raise TypeError/ValueError unless `x` is a C-contiguous array of `dtype` and `shape`.

    shape: a tuple of ints or None (any size). dims: the shape's letters for the message, e.g. "B,T,C".
    Returns `x`, so a caller may write `inp = check_array(...)`.
    """
    # This runs on every kernel call (~400 times a GPT-2 training step): the passing path is a few plain
    # comparisons, and the messages are formatted only on failure (_array_error).
    if not (isinstance(x, np.ndarray) or is_device_array(x)):
        raise TypeError(f"{op}: {name} must be a numpy or CUDA device array {_want(shape, dtype, dims)}, "
                        f"got {type(x).__name__}")
    if x.dtype != dtype:
        raise _array_error(TypeError, op, name, x, shape, dtype, dims)
    got = x.shape
    if len(got) != len(shape):
        raise _array_error(ValueError, op, name, x, shape, dtype, dims)
    for want, size in zip(shape, got):
        if want is not None and want != size:
            raise _array_error(ValueError, op, name, x, shape, dtype, dims)
    if not (x.flags["C_CONTIGUOUS"] if isinstance(x, np.ndarray) else x.is_c_contiguous()):
        raise ValueError(f"{op}: {name} must be C-contiguous (try np.ascontiguousarray), got strides {x.strides}")
    return x


def _want(shape, dtype, dims: str) -> str:
    return f"{np.dtype(dtype).name} {'(' + dims + ')' if dims else _fmt_shape(shape)}"


def _array_error(kind, op: str, name: str, x, shape, dtype, dims: str) -> Exception:
    """check_array's message for a wrong dtype (TypeError) or shape (ValueError)."""
    got = f"{np.dtype(x.dtype).name} {tuple(x.shape)}"
    if kind is TypeError:
        return TypeError(f"{op}: {name} must be {_want(shape, dtype, dims)}, got {got}")
    return ValueError(f"{op}: {name} must be {_want(shape, dtype, dims)} = {_fmt_shape(shape)}, got {got}")


def check_same_device(op: str, **arrays) -> bool:
    """All arrays on the host, or all on the GPU; returns True when on the GPU.

    The GPU path is where a CUDA kernel is about to be compiled: a numpy too new for numba-cuda is
    reported here in one line (on a real GPU; the simulator compiles nothing).
    """
    on_gpu = None
    for a in arrays.values():   # the passing path: one test an array (this runs on every kernel call)
        if a is not None:
            here = is_device_array(a)
            if on_gpu is None:
                on_gpu = here
            elif here != on_gpu:
                where = {k: is_device_array(v) for k, v in arrays.items() if v is not None}
                host = [k for k, d in where.items() if not d]
                dev = [k for k, d in where.items() if d]
                raise ValueError(f"{op}: arrays must all be numpy or all CUDA device arrays; host: {host}, "
                                 f"device: {dev}")
    if on_gpu and not numba_config.ENABLE_CUDASIM:
        from ._cuda import check_numpy_for_cuda
        check_numpy_for_cuda()
    return bool(on_gpu)


def check_no_overlap(op: str, out_name: str, out, **inputs) -> None:
    """ValueError if the output `out` shares memory with any of `inputs` (host arrays; None skipped).

    A kernel that reads inp while writing out, with both in one buffer, overwrites values it has yet to read:
    the result is silently wrong. Device arrays are not checked (numba gives no cheap overlap test for them).
    """
    if not isinstance(out, np.ndarray):
        return
    for name, x in inputs.items():
        if isinstance(x, np.ndarray) and np.may_share_memory(out, x) and np.shares_memory(out, x):
            raise ValueError(f"{op}: {out_name} must not share memory with {name} (the kernel would read values "
                             f"it has already overwritten); pass a separate output array")


def check_finite_scalars(op: str, **scalars) -> None:
    """ValueError naming the first argument that is not a finite real number (nan and inf included)."""
    for name, v in scalars.items():
        ok = not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating))
        if not ok or not np.isfinite(v):
            raise ValueError(f"{op}: {name} must be a finite number, got {v!r}")


def check_block(op: str, name: str, threads, most: int) -> None:
    """ValueError in one line unless `threads` is a power of two (1, 2, 4, ...) <= `most`: a block whose
    threads halve down a tree reduction, over shared memory sized for `most`."""
    if not isinstance(threads, (int, np.integer)) or threads < 1 or threads > most or threads & (threads - 1):
        raise ValueError(f"{op}: {name} must be a power of two <= {most}, got {threads!r}")


def default_version(op: str, on_device: bool, default: dict) -> str:
    """The default of `op` for the arrays' device: pick_version's, when no version is named."""
    kind = "cuda" if on_device else "cpu"
    simulated = on_device and "cudasim" in default and numba_config.ENABLE_CUDASIM
    chosen = default["cudasim" if simulated else kind]
    return chosen[op] if isinstance(chosen, dict) else chosen


def pick_version(op: str, version, on_device: bool, cpu_versions, cuda_versions, default: dict) -> str:
    """The version an entry point runs: `version` when it names one for the arrays' device, else the default.

    default: the module's DEFAULT_VERSION, {"cpu": name, "cuda": name}; a "cuda" value may instead map entry
    point -> name where an op's forward and backward defaults differ (attention). An optional "cudasim" name
    is the default in numba's simulator instead of "cuda"'s (matmul: the GPU's v8 costs the simulator ~4x v5's
    work at the small shapes it runs). version None, or the device kind itself ("cpu", "cuda"), picks the
    default; the rule that chose it is in docs/kernels.md.
    """
    kind, versions = ("cuda", cuda_versions) if on_device else ("cpu", cpu_versions)
    if version is None or version == kind:
        return default_version(op, on_device, default)
    if version not in versions:
        raise ValueError(f"{op}: version must be one of {tuple(versions)} for {kind} arrays, got {version!r}")
    return version
