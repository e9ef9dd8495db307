"""cuBLAS on our own device memory, through PyTorch: matmul's "cublas" version (llm.c's choice for its matmuls).

No copies. A numba device array publishes its pointer, shape, strides and dtype as
`__cuda_array_interface__`; `torch.as_tensor(arr, device="cuda")` wraps that same memory as a tensor, and
torch.mm / addmm with `out=` (or in place, `addmm_`) run cuBLAS's SGEMM writing straight into our buffers.
A numpy array is wrapped the same way by `torch.from_numpy` (CPU torch, CPU BLAS): the very same code path
then runs without a GPU, which is how tests/test_matmul_v4_cublas.py checks its logic (the accumulation,
the transposes, the bias, that the buffers are written in place).

Semantics are the kernels': the forward overwrites `out`, the backward accumulates (dinp += dout @ weight,
dweight += dout^T @ inp, dbias += column sums of dout), on (N, C)-shaped 2-D views.

Precision: TF32 off (torch's "highest" float32 matmul precision, set for the call and restored): full fp32
SGEMM, like our kernels and like the reference run. dbias is PyTorch's own column sum (a tree on the GPU).

Ordering: numba launches our kernels on its default stream and torch its calls on its current stream. Both
are, by default, CUDA's legacy default stream, which runs everything in launch order: a numba kernel that
writes dout and the cuBLAS call that reads it are ordered with no synchronisation. If either is moved off it
(a `torch.cuda.stream(...)` around the step, or numba's per-thread default stream), `ordered()`
synchronises the device before and after the call: correct, but slower.

Unmeasured: no GPU was lent while this was written; on the GPU path only the CPU-torch twin has run.
"""
from __future__ import annotations

import contextlib

import numpy as np


def as_torch(arr):
    """The same memory as a torch tensor, no copy: a numpy array on the CPU, a numba device array on the GPU."""
    import torch
    if isinstance(arr, np.ndarray):
        return torch.from_numpy(arr)
    if hasattr(arr, "__cuda_array_interface__"):
        return torch.as_tensor(arr, device="cuda")
    raise TypeError(f"cublas: expected a numpy array or a CUDA device array, got {type(arr).__name__}")


def _on_one_stream(torch) -> bool:
    """True when numba's and torch's launches both go to the legacy default stream (so they run in order)."""
    from numba import config
    if config.CUDA_PER_THREAD_DEFAULT_STREAM:
        return False
    return torch.cuda.current_stream().cuda_stream == 0


@contextlib.contextmanager
def ordered(on_gpu: bool):
    """Full fp32 matmuls (no TF32) inside; on the GPU, a device-wide sync around them unless numba and torch
    share the legacy default stream (the module docstring)."""
    import torch
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    sync = on_gpu and not _on_one_stream(torch)
    if sync:
        from numba import cuda
        cuda.synchronize()
    try:
        yield
    finally:
        if sync:
            torch.cuda.synchronize()
        torch.set_float32_matmul_precision(precision)


def forward(out, inp, weight, bias) -> None:
    """out (N, OC) = inp (N, C) @ weight (OC, C)^T (+ bias (OC,)), written in place by one (cuBLAS) GEMM."""
    import torch
    with ordered(not isinstance(out, np.ndarray)):
        o, x, w = as_torch(out), as_torch(inp), as_torch(weight)
        if bias is None:
            torch.mm(x, w.T, out=o)
        else:
            torch.addmm(as_torch(bias), x, w.T, out=o)  # bias broadcast over rows: beta * bias + x @ w^T


def backward(dinp, dweight, dbias, dout, inp, weight) -> None:
    """dinp (N, C) += dout (N, OC) @ weight; dweight (OC, C) += dout^T @ inp (N, C); dbias += dout's column sums.

    A gradient given as None is skipped (kernels/accuracy.py runs the three one at a time)."""
    with ordered(not isinstance(dout, np.ndarray)):
        d = as_torch(dout)
        if dinp is not None:
            as_torch(dinp).addmm_(d, as_torch(weight))       # beta = 1: cuBLAS adds into the buffer
        if dweight is not None:
            as_torch(dweight).addmm_(d.T, as_torch(inp))     # dout^T: a transposed view, cuBLAS reads it as such
        if dbias is not None:
            as_torch(dbias).add_(d.sum(0))
