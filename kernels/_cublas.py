"""cuBLAS on our own device memory, through PyTorch: matmul's and attention's "cublas" versions (llm.c's choice
for its matmuls: the linear layers, and attention's batched products q k^T and att v).

No copies. A numba device array publishes its pointer, shape, strides and dtype as
`__cuda_array_interface__`; `torch.as_tensor(arr, device="cuda")` wraps that same memory as a tensor, and
torch.mm / addmm with `out=` (or in place, `addmm_`) run cuBLAS's SGEMM writing straight into our buffers.
A numpy array is wrapped the same way by `torch.from_numpy` (CPU torch, CPU BLAS): the very same code path
then runs without a GPU, which is how tests/test_matmul_v4_cublas.py checks its logic (the accumulation,
the transposes, the bias, that the buffers are written in place).

Semantics are the kernels': the forward overwrites `out`, the backward accumulates (dinp += dout @ weight,
dweight += dout^T @ inp, dbias += column sums of dout), on (N, C)-shaped 2-D views. Attention's heads are
strided views of the (B, T, 3C) qkv buffer, (B, NH, T, hs), made without copies; the causal softmax and
its backward are torch's elementwise ops, as llm.c's attention_forward pairs cuBLAS with softmax kernels. Its
(B, NH, T, T) temporaries (datt and one more in the backward) come from torch's caching allocator: memory
our own attention kernels do not take.

Precision: TF32 off (torch's "highest" float32 matmul precision, set for the call and restored): full fp32
SGEMM, like our kernels and like the reference run. dbias is PyTorch's own column sum (a tree on the GPU).

Ordering: numba launches our kernels on its default stream and torch its calls on its current stream. Both
are, by default, CUDA's legacy default stream, which runs everything in launch order: a numba kernel that
writes dout and the cuBLAS call that reads it are ordered with no synchronisation. If either is moved off it
(a `torch.cuda.stream(...)` around the step, or numba's per-thread default stream), `ordered()`
synchronises the device before and after the call: correct, but slower.

Measured on an H200 (2026-11-26, docs/figures.md): verified against PyTorch (`gpt2lab verify --device cuda`);
the 124M step at B=4, T=1024 with `--matmul cublas` at 1.11x PyTorch eager's on the fused path (the default:
our flash attention, cuBLAS's matmuls) and 1.09x on the per-op path (cuBLAS's attention products too).
"""
from __future__ import annotations

import contextlib
import functools
import math

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
    # newer torch also keeps a setting per backend, which the legacy getter does not see: put those back last
    backends = (getattr(torch.backends.cuda, "matmul", None),
                getattr(getattr(torch.backends, "mkldnn", None), "matmul", None))
    saved = [(b, b.fp32_precision) for b in backends if hasattr(b, "fp32_precision")]
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
        for backend, value in saved:
            backend.fp32_precision = value


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


# ---------------------------------------------------------------- attention (the default path's: att kept)
def _heads(x, n_head: int, part: int, parts: int):
    """Head view (B, NH, T, hs) of part `part` of a (B, T, parts * C) tensor (qkv: q 0, k 1, v 2), no copy."""
    B, T, W = x.shape
    C = W // parts
    return x.view(B, T, parts, n_head, C // n_head)[:, :, part].permute(0, 2, 1, 3)


@functools.lru_cache(maxsize=8)
def _future(T: int, device):
    """(T, T) bool, True where key t2 > query t1: the scores the causal mask hides. Made once per T."""
    import torch
    return torch.ones(T, T, dtype=torch.bool, device=device).triu(1)


def attention_forward(out, att, inp, n_head: int) -> None:
    """out (B, T, C) and att (B, NH, T, T) = softmax(q k^T / sqrt(hs), causal) from qkv inp (B, T, 3C),
    written in place: q k^T and att v as batched GEMMs, the mask and softmax by torch."""
    import torch
    with ordered(not isinstance(out, np.ndarray)):
        x, a = as_torch(inp), as_torch(att)
        q, k, v = (_heads(x, n_head, i, 3) for i in range(3))
        T, hs = q.shape[2], q.shape[3]
        torch.matmul(q, k.transpose(-2, -1), out=a)
        a.div_(math.sqrt(hs)).masked_fill_(_future(T, a.device), float("-inf"))
        a.copy_(torch.softmax(a, dim=-1))
        _heads(as_torch(out), n_head, 0, 1).copy_(torch.matmul(a, v))


def attention_backward(dinp, dout, inp, att, n_head: int) -> None:
    """dinp (B, T, 3C) += d q, k, v from dout (B, T, C) and the forward's att (B, NH, T, T):
    datt = dout v^T, dv += att^T dout, dpreatt = att (datt - sum_t2 att datt) / sqrt(hs), dq += dpreatt k,
    dk += dpreatt^T q. Masked entries have att = 0, so their dpreatt is 0 too."""
    import torch
    with ordered(not isinstance(dinp, np.ndarray)):
        x, a, g = as_torch(inp), as_torch(att), as_torch(dinp)
        q, k, v = (_heads(x, n_head, i, 3) for i in range(3))
        dq, dk, dv = (_heads(g, n_head, i, 3) for i in range(3))
        dy = _heads(as_torch(dout), n_head, 0, 1)
        datt = torch.matmul(dy, v.transpose(-2, -1))
        dv.add_(torch.matmul(a.transpose(-2, -1), dy))
        row = (a * datt).sum(-1, keepdim=True)
        dpreatt = datt.sub_(row).mul_(a).div_(math.sqrt(q.shape[3]))   # in datt's memory
        dq.add_(torch.matmul(dpreatt, k))
        dk.add_(torch.matmul(dpreatt.transpose(-2, -1), q))
