"""Matmul with bias: the linear layer (nn.Linear), the op that holds ~all of GPT-2's FLOPs.

Forward, with inp (B, T, C), weight (OC, C) in nn.Linear's layout (one row per output channel) and
bias (OC,):

    out[b, t, o] = sum_c inp[b, t, c] * weight[o, c] + bias[o]        i.e.  out = inp @ weight^T + bias

Backward. Write N = B*T and view inp as (N, C), out and dout as (N, OC). Each out[n, o] is a dot product,
so d out[n, o] / d inp[n, c] = weight[o, c] and d out[n, o] / d weight[o, c] = inp[n, c]; the chain rule
sums over every output an input feeds:

    dinp[n, c]    = sum_o dout[n, o] * weight[o, c]                 dinp    = dout @ weight
    dweight[o, c] = sum_n dout[n, o] * inp[n, c]                    dweight = dout^T @ inp
    dbias[o]      = sum_n dout[n, o]

Why the sums over all N = B*T rows: the same weight and bias are used at every position of every sequence
(the layer is shared), so each of the N uses contributes its own gradient and the total is their sum; a
parameter used N times gets N gradient terms. dinp has no such sum: each row of inp is used by its own
row of out only. Nothing is cached beyond the forward's inputs (inp and weight). Like llm.c, the backward
*accumulates* (dinp += ..., dweight += ..., dbias += ...); the model zeroes its gradients once per step.
bias may be None (GPT-2's lm_head has none), and then dbias is None too.

Shapes: inp (B, T, C), weight (OC, C), bias (OC,) or None, out (B, T, OC); gradients like their tensors.
GPT-2 small: C = 768, OC in {3C, C, 4C} inside a block and OC = 50257 for the lm_head.

Versions (`version=` of the entry points; DEFAULT_VERSION below, chosen by the rule in docs/kernels.md):

    CPU  "loops" the three sums as loops, accumulated in float64: read this one first
         "blas"  each numba thread calls single-threaded BLAS on its slice of the product (default: as
                 accurate as PyTorch's float32, and far faster)
    CUDA "v1"    naive: one thread per output element, all reads from global memory
         "v2"    tiled: TILE x TILE blocks stage inp and weight in shared memory
         "v3"    v2 with compensated (Kahan) sums: as accurate as PyTorch's float32 (default)
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from numba import cuda, float32, njit, prange

from ._blas import SPLIT, gemm, set_blas_threads, xxgemm
from ._cuda import ceil_div, compensated_add, run_on_device
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_no_overlap, check_same_device, pick_version
from .check import OpSpec


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp, weight, bias, dout):
    """PyTorch: F.linear and its autograd gradients (float64). bias may be None."""
    import torch.nn.functional as F
    if bias is None:
        return autograd(lambda inp, weight: {"out": F.linear(inp, weight)}, {"inp": inp, "weight": weight},
                        ("inp", "weight"), {"out": dout})
    return autograd(lambda inp, weight, bias: {"out": F.linear(inp, weight, bias)},
                    {"inp": inp, "weight": weight, "bias": bias}, ("inp", "weight", "bias"), {"out": dout})


# ---------------------------------------------------------------- CPU (numba @njit)
# "loops": the docstring's three sums, one output row at a time. Each sum is accumulated in float64 and
# rounded to float32 once: a float32 running sum over the lm_head's OC = 50257 terms would lose ~50257
# roundings (CUDA v1's comment measures that). The inner loops walk contiguous rows of each operand.
@njit(parallel=True, fastmath=True, cache=True)
def matmul_forward_loops(out, inp, weight, bias):
    """out (N, OC) = inp (N, C) @ weight (OC, C)^T (+ bias (OC,)): out[n, o] = sum_c inp[n, c] weight[o, c]."""
    N, C = inp.shape
    OC = weight.shape[0]
    for n in prange(N):
        for o in range(OC):
            acc = 0.0  # float64
            for c in range(C):
                acc += inp[n, c] * weight[o, c]
            if bias is not None:
                acc += bias[o]
            out[n, o] = acc


@njit(parallel=True, fastmath=True, cache=True)
def matmul_backward_loops(dinp, dweight, dbias, dout, inp, weight):
    """dinp += dout @ weight; dweight += dout^T @ inp; dbias += dout summed over rows (dbias may be None)."""
    N, C = inp.shape
    OC = weight.shape[0]
    for n in prange(N):  # dinp[n, :] = sum_o dout[n, o] weight[o, :]
        acc = np.zeros(C)
        for o in range(OC):
            acc += dout[n, o] * weight[o]
        dinp[n] += acc.astype(np.float32)
    for o in prange(OC):  # dweight[o, :] = sum_n dout[n, o] inp[n, :]; dbias[o] = sum_n dout[n, o]
        acc = np.zeros(C)
        acc_bias = 0.0
        for n in range(N):
            acc += dout[n, o] * inp[n]
            acc_bias += dout[n, o]
        dweight[o] += acc.astype(np.float32)
        if dbias is not None:
            dbias[o] += acc_bias


# "blas": the products as BLAS calls.
# Threads. Each product is split into one slice per numba thread (prange), and each thread calls BLAS
# single-threaded on its slice (see _blas for why). Slices cut the big operand (weight or dweight) so that
# no two threads stream the same 154 MB of lm_head weights. Where BLAS cannot be held to one thread per
# caller (_blas.SPLIT is False) there is one slice, and BLAS threads itself.


@njit(parallel=True, cache=True)
def matmul_forward_blas(out, inp, weight, bias, n_slices, xxgemm, set_blas_threads):
    """out (N, OC) = inp (N, C) @ weight (OC, C)^T (+ bias (OC,)); thread j owns out[:, slice j of OC]."""
    OC = weight.shape[0]
    for j in prange(n_slices):
        set_blas_threads(1)
        lo, hi = j * OC // n_slices, (j + 1) * OC // n_slices
        if bias is None:
            gemm(out[:, lo:hi], inp, weight[lo:hi], False, True, 0.0, xxgemm)  # beta 0: old out ignored
        else:
            for n in range(out.shape[0]):
                out[n, lo:hi] = bias[lo:hi]
            gemm(out[:, lo:hi], inp, weight[lo:hi], False, True, 1.0, xxgemm)


@njit(parallel=True, cache=True)
def matmul_backward_blas(dinp, dweight, dout, inp, weight, n_slices, xxgemm, set_blas_threads):
    """dinp (N, C) += dout (N, OC) @ weight (OC, C);  dweight (OC, C) += dout^T @ inp (N, C).

    Thread j owns dinp[:, slice j of C] (reading weight[:, slice j]) and dweight[slice j of OC].
    """
    C, OC = inp.shape[1], weight.shape[0]
    for j in prange(n_slices):
        set_blas_threads(1)
        lo, hi = j * C // n_slices, (j + 1) * C // n_slices
        gemm(dinp[:, lo:hi], dout, weight[:, lo:hi], False, False, 1.0, xxgemm)
        lo, hi = j * OC // n_slices, (j + 1) * OC // n_slices
        gemm(dweight[lo:hi], dout[:, lo:hi], inp, True, False, 1.0, xxgemm)


ROWS_PER_PART = 32  # dbias: rows per first-level partial sum, and first-level parts per second-level one


@njit(parallel=True, fastmath=True, cache=True)
def _bias_backward_cpu(dbias, dout):
    """dbias (OC,) += dout (N, OC) summed over its N rows.

    Parallel over blocks of columns, rows inside: each thread owns its columns (no races) and walks
    rows of contiguous memory. A three-level cascade: 32 rows into `part`, 32 parts into `mid`, the mids
    into `acc`. One running sum over all N rows rounds N times into an ever larger total (at N = 8192: 17x
    PyTorch float32's error, whose sum is a cascade too); the cascade rounds ~32 + 32 + N/1024 times.
    (Not a compensated sum: fastmath lets the compiler reassociate that away.)
    """
    N, OC = dout.shape
    block = 1024
    P = ROWS_PER_PART
    for j in prange((OC + block - 1) // block):
        lo, hi = j * block, min(OC, (j + 1) * block)
        acc = np.zeros(hi - lo, dtype=np.float32)
        mid = np.empty(hi - lo, dtype=np.float32)
        part = np.empty(hi - lo, dtype=np.float32)
        for m0 in range(0, N, P * P):
            mid[:] = 0.0
            for n0 in range(m0, min(N, m0 + P * P), P):
                part[:] = 0.0
                for n in range(n0, min(N, n0 + P)):
                    part += dout[n, lo:hi]
                mid += part
            acc += mid
        dbias[lo:hi] += acc


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# All kernels use 2-D blocks of TILE x TILE threads; x runs along the output's columns (the contiguous
# index, so neighbouring threads touch neighbouring addresses), y along its rows.
TILE = 16
TILE_PADDED = TILE + 1  # a module constant: shared-array shapes must be compile-time constants


# v1, naive: one thread per output element, each reading a whole row of inp and of weight from global
# memory. Every element of inp is read OC times and every element of weight N times, and the weight reads
# are strided by C across a warp: memory-bound and uncoalesced. Accuracy (v1 and v2 alike): one float32
# running sum of K terms. Measured in the simulator (python -m gpt2lab.kernels.accuracy): 8.1x PyTorch
# float32's error for dinp at OC = 2048, 8.4x for dweight at N = 2048, 16x for dbias at N = 4096, and the
# gap grows with K (about 100x on an H100 at the lm_head's OC = 50257). v3 fixes that.
@cuda_kernel
def matmul_forward_kernel_v1(out, inp, weight, bias, has_bias):
    o, n = cuda.grid(2)
    N, C = inp.shape
    OC = weight.shape[0]
    if n < N and o < OC:
        acc = float32(0.0)
        for c in range(C):
            acc += inp[n, c] * weight[o, c]
        if has_bias:
            acc += bias[o]
        out[n, o] = acc


@cuda_kernel
def matmul_backward_dinp_kernel_v1(dinp, dout, weight):
    """dinp[n, c] += sum_o dout[n, o] * weight[o, c], one thread per (n, c)."""
    c, n = cuda.grid(2)
    N, C = dinp.shape
    OC = weight.shape[0]
    if n < N and c < C:
        acc = float32(0.0)
        for o in range(OC):
            acc += dout[n, o] * weight[o, c]
        dinp[n, c] += acc


@cuda_kernel
def matmul_backward_dweight_kernel_v1(dweight, dout, inp):
    """dweight[o, c] += sum_n dout[n, o] * inp[n, c], one thread per (o, c)."""
    c, o = cuda.grid(2)
    OC, C = dweight.shape
    N = inp.shape[0]
    if o < OC and c < C:
        acc = float32(0.0)
        for n in range(N):
            acc += dout[n, o] * inp[n, c]
        dweight[o, c] += acc


# v2, shared-memory tiles. A block computes a TILE x TILE tile of the output. It walks the reduction
# dimension K in steps of TILE: the block's threads first load one TILE x TILE tile of each operand into
# shared memory (one element each, coalesced along x), wait (syncthreads), then each thread does TILE
# multiply-adds from shared memory. Every element loaded from global memory is used by TILE threads, so
# global traffic drops TILE-fold (16x here). TILE = 16: 256 threads a block and 2 KB of shared memory per
# operand; 32 would reuse more (32x) but needs 1024 threads a block, leaving the scheduler less freedom.
# Out-of-range elements are loaded as 0, which adds nothing, so any N, C, OC work.
@cuda_kernel
def matmul_forward_kernel_v2(out, inp, weight, bias, has_bias):
    """out[n, o] = sum_c inp[n, c] * weight[o, c] (+ bias[o]); block (x, y) owns out[y-tile, x-tile]."""
    inp_tile = cuda.shared.array((TILE, TILE), float32)
    # Each thread reads w_tile[tx, k]: a warp reads down a column. With rows TILE + 1 floats long those
    # addresses fall in distinct shared-memory banks; with rows of 16 they would collide 8 ways.
    w_tile = cuda.shared.array((TILE, TILE_PADDED), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = inp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty
    o = cuda.blockIdx.x * TILE + tx
    w_row = cuda.blockIdx.x * TILE + ty  # loads: thread (ty, tx) fetches weight[w_row, k0 + tx]
    acc = float32(0.0)
    for k0 in range(0, C, TILE):
        c = k0 + tx
        inp_tile[ty, tx] = inp[n, c] if n < N and c < C else float32(0.0)
        w_tile[ty, tx] = weight[w_row, c] if w_row < OC and c < C else float32(0.0)
        cuda.syncthreads()
        for k in range(TILE):
            acc += inp_tile[ty, k] * w_tile[tx, k]
        cuda.syncthreads()  # everyone done reading before the next tiles overwrite these
    if n < N and o < OC:
        if has_bias:
            acc += bias[o]
        out[n, o] = acc


@cuda_kernel
def matmul_backward_dinp_kernel_v2(dinp, dout, weight):
    """dinp[n, c] += sum_o dout[n, o] * weight[o, c]; the same tiling with K = OC."""
    dout_tile = cuda.shared.array((TILE, TILE), float32)
    w_tile = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = dinp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty
    c = cuda.blockIdx.x * TILE + tx
    acc = float32(0.0)
    for k0 in range(0, OC, TILE):
        o_load = k0 + tx
        dout_tile[ty, tx] = dout[n, o_load] if n < N and o_load < OC else float32(0.0)
        w_row = k0 + ty
        w_tile[ty, tx] = weight[w_row, c] if w_row < OC and c < C else float32(0.0)
        cuda.syncthreads()
        for k in range(TILE):
            acc += dout_tile[ty, k] * w_tile[k, tx]
        cuda.syncthreads()
    if n < N and c < C:
        dinp[n, c] += acc


@cuda_kernel
def matmul_backward_dweight_kernel_v2(dweight, dout, inp):
    """dweight[o, c] += sum_n dout[n, o] * inp[n, c]; the same tiling with K = N (the batch sum)."""
    dout_tile = cuda.shared.array((TILE, TILE), float32)
    inp_tile = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    OC, C = dweight.shape
    N = inp.shape[0]
    o = cuda.blockIdx.y * TILE + ty
    c = cuda.blockIdx.x * TILE + tx
    o_load = cuda.blockIdx.y * TILE + tx  # dout is read transposed: load along its contiguous o axis
    acc = float32(0.0)
    for k0 in range(0, N, TILE):
        n = k0 + ty
        dout_tile[ty, tx] = dout[n, o_load] if n < N and o_load < OC else float32(0.0)
        inp_tile[ty, tx] = inp[n, c] if n < N and c < C else float32(0.0)
        cuda.syncthreads()
        for k in range(TILE):
            acc += dout_tile[k, ty] * inp_tile[k, tx]
        cuda.syncthreads()
    if o < OC and c < C:
        dweight[o, c] += acc


# v3, v2's tiles with an accurate sum. v1 and v2 add K products one by one into one float32 `acc`:
# once acc is large, each addition rounds away the low bits of the term, and the K roundings pile up. At
# the lm_head (dinp sums K = OC = 50257 products) the backward errors were ~100x PyTorch's on an H100. v3
# sums each tile's TILE products into a fresh float32 `part` (short, so accurate), and adds the parts with
# a compensated sum (_cuda.compensated_add): the error no longer grows with K. Cost: ~4 flops per TILE
# multiply-adds. Simulator (python -m gpt2lab.kernels.accuracy): 0.67x PyTorch float32's error for dinp,
# 0.53x for dweight, 1.3x for dbias (v1: 8.1x, 8.4x, 16x).
@cuda_kernel
def matmul_forward_kernel_v3(out, inp, weight, bias, has_bias):
    """v2's forward with the tile parts added by a compensated sum (K = C)."""
    inp_tile = cuda.shared.array((TILE, TILE), float32)
    w_tile = cuda.shared.array((TILE, TILE_PADDED), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = inp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty
    o = cuda.blockIdx.x * TILE + tx
    w_row = cuda.blockIdx.x * TILE + ty
    acc, comp = float32(0.0), float32(0.0)
    for k0 in range(0, C, TILE):
        c = k0 + tx
        inp_tile[ty, tx] = inp[n, c] if n < N and c < C else float32(0.0)
        w_tile[ty, tx] = weight[w_row, c] if w_row < OC and c < C else float32(0.0)
        cuda.syncthreads()
        part = float32(0.0)
        for k in range(TILE):
            part += inp_tile[ty, k] * w_tile[tx, k]
        acc, comp = compensated_add(acc, comp, part)
        cuda.syncthreads()
    if n < N and o < OC:
        acc += comp
        if has_bias:
            acc += bias[o]
        out[n, o] = acc


@cuda_kernel
def matmul_backward_dinp_kernel_v3(dinp, dout, weight):
    """dinp[n, c] += sum_o dout[n, o] * weight[o, c]: v2's tiles, parts added by a compensated sum."""
    dout_tile = cuda.shared.array((TILE, TILE), float32)
    w_tile = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = dinp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty
    c = cuda.blockIdx.x * TILE + tx
    acc, comp = float32(0.0), float32(0.0)
    for k0 in range(0, OC, TILE):
        o_load = k0 + tx
        dout_tile[ty, tx] = dout[n, o_load] if n < N and o_load < OC else float32(0.0)
        w_row = k0 + ty
        w_tile[ty, tx] = weight[w_row, c] if w_row < OC and c < C else float32(0.0)
        cuda.syncthreads()
        part = float32(0.0)
        for k in range(TILE):
            part += dout_tile[ty, k] * w_tile[k, tx]
        acc, comp = compensated_add(acc, comp, part)
        cuda.syncthreads()
    if n < N and c < C:
        dinp[n, c] += acc + comp


@cuda_kernel
def matmul_backward_dweight_kernel_v3(dweight, dout, inp):
    """dweight[o, c] += sum_n dout[n, o] * inp[n, c]: v2's tiles, parts added by a compensated sum."""
    dout_tile = cuda.shared.array((TILE, TILE), float32)
    inp_tile = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    OC, C = dweight.shape
    N = inp.shape[0]
    o = cuda.blockIdx.y * TILE + ty
    c = cuda.blockIdx.x * TILE + tx
    o_load = cuda.blockIdx.y * TILE + tx
    acc, comp = float32(0.0), float32(0.0)
    for k0 in range(0, N, TILE):
        n = k0 + ty
        dout_tile[ty, tx] = dout[n, o_load] if n < N and o_load < OC else float32(0.0)
        inp_tile[ty, tx] = inp[n, c] if n < N and c < C else float32(0.0)
        cuda.syncthreads()
        part = float32(0.0)
        for k in range(TILE):
            part += dout_tile[k, ty] * inp_tile[k, tx]
        acc, comp = compensated_add(acc, comp, part)
        cuda.syncthreads()
    if o < OC and c < C:
        dweight[o, c] += acc + comp


# dbias v1 (used by v1 and v2): a column sum. One thread per column o walking down the N rows; neighbouring
# threads read neighbouring columns of a row, so each step of the loop is one coalesced read. The running
# float32 sum over N = B*T rows loses accuracy as N grows (simulator, N = 4096: ~5x PyTorch float32's error).
@cuda_kernel
def matmul_backward_dbias_kernel(dbias, dout):
    o = cuda.grid(1)
    N, OC = dout.shape
    if o < OC:
        acc = float32(0.0)
        for n in range(N):
            acc += dout[n, o]
        dbias[o] += acc


# dbias v3: the same walk, blocks of TILE rows summed plainly, the block sums added by a compensated sum.
@cuda_kernel
def matmul_backward_dbias_kernel_v3(dbias, dout):
    o = cuda.grid(1)
    N, OC = dout.shape
    if o < OC:
        acc, comp = float32(0.0), float32(0.0)
        for n0 in range(0, N, TILE):
            part = float32(0.0)
            for n in range(n0, min(n0 + TILE, N)):
                part += dout[n, o]
            acc, comp = compensated_add(acc, comp, part)
        dbias[o] += acc + comp


# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
_M = "float32[:, ::1]"
_V = "float32[::1]"
CUDA_KERNELS = (
    (matmul_forward_kernel_v1, f"void({_M}, {_M}, {_M}, {_V}, boolean)"),
    (matmul_backward_dinp_kernel_v1, f"void({_M}, {_M}, {_M})"),
    (matmul_backward_dweight_kernel_v1, f"void({_M}, {_M}, {_M})"),
    (matmul_forward_kernel_v2, f"void({_M}, {_M}, {_M}, {_V}, boolean)"),
    (matmul_backward_dinp_kernel_v2, f"void({_M}, {_M}, {_M})"),
    (matmul_backward_dweight_kernel_v2, f"void({_M}, {_M}, {_M})"),
    (matmul_backward_dbias_kernel, f"void({_V}, {_M})"),
    (matmul_forward_kernel_v3, f"void({_M}, {_M}, {_M}, {_V}, boolean)"),
    (matmul_backward_dinp_kernel_v3, f"void({_M}, {_M}, {_M})"),
    (matmul_backward_dweight_kernel_v3, f"void({_M}, {_M}, {_M})"),
    (matmul_backward_dbias_kernel_v3, f"void({_V}, {_M})"),
)
FORWARD_KERNELS = {"v1": matmul_forward_kernel_v1, "v2": matmul_forward_kernel_v2, "v3": matmul_forward_kernel_v3}
# version -> (dinp kernel, dweight kernel, dbias kernel)
BACKWARD_KERNELS = {
    "v1": (matmul_backward_dinp_kernel_v1, matmul_backward_dweight_kernel_v1, matmul_backward_dbias_kernel),
    "v2": (matmul_backward_dinp_kernel_v2, matmul_backward_dweight_kernel_v2, matmul_backward_dbias_kernel),
    "v3": (matmul_backward_dinp_kernel_v3, matmul_backward_dweight_kernel_v3, matmul_backward_dbias_kernel_v3)}


def _grid_2d(rows, cols):
    """Launch geometry covering a (rows, cols) output with TILE x TILE blocks (x along cols)."""
    return (ceil_div(cols, TILE), ceil_div(rows, TILE)), (TILE, TILE)


@functools.cache
def _no_bias():
    # A kernel argument must be an array; when bias is None the kernels get this and has_bias=False.
    return cuda.device_array(1, dtype=np.float32)


# ---------------------------------------------------------------- public entry points
CPU_VERSIONS = ("loops", "blas")
CUDA_VERSIONS = tuple(FORWARD_KERNELS)
DEFAULT_VERSION = {"cpu": "blas", "cuda": "v3"}  # v3: the accurate one, see its comment


def _n_slices():
    return numba.get_num_threads() if SPLIT else 1


def _check_shapes(fn, inp, weight, **tensors):
    """Validate inp (B, T, C), weight (OC, C) and each tensor given as name=(array or None, "B,T,OC"-style dims).

    Returns B, T, C, OC.
    """
    check_array(fn, "inp", inp, (None, None, None), dims="B,T,C")
    B, T, C = inp.shape
    check_array(fn, "weight", weight, (None, C), dims="OC,C")
    size = {"B": B, "T": T, "C": C, "OC": weight.shape[0]}
    for name, (a, dims) in tensors.items():
        if a is not None:
            check_array(fn, name, a, tuple(size[d] for d in dims.split(",")), dims=dims)
    return B, T, C, size["OC"]


def matmul_forward(out, inp, weight, bias, version=None):
    """out (B, T, OC) = inp (B, T, C) @ weight (OC, C)^T + bias (OC,) (bias may be None).

    Numpy arrays run on the CPU, CUDA device arrays on the GPU; `version` one of the module docstring's
    (None: DEFAULT_VERSION).
    """
    B, T, C, OC = _check_shapes("matmul_forward", inp, weight, bias=(bias, "OC"),
                                out=(out, "B,T,OC"))
    check_no_overlap("matmul_forward", "out", out, inp=inp, weight=weight, bias=bias)
    N = B * T
    on_device = check_same_device("matmul_forward", out=out, inp=inp, weight=weight, bias=bias)
    version = pick_version("matmul_forward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device:
        grid, block = _grid_2d(N, OC)
        has_bias = bias is not None
        FORWARD_KERNELS[version][grid, block](out.reshape(N, OC), inp.reshape(N, C), weight,
                                              bias if has_bias else _no_bias(), has_bias)
    elif version == "loops":
        matmul_forward_loops(out.reshape(N, OC), inp.reshape(N, C), weight, bias)
    else:
        matmul_forward_blas(out.reshape(N, OC), inp.reshape(N, C), weight, bias, _n_slices(), xxgemm,
                            set_blas_threads)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight, version=None):
    """dinp += dout @ weight; dweight += dout^T @ inp; dbias += dout summed over B*T (dbias may be None).

    dinp (B, T, C), dweight (OC, C), dbias (OC,) or None, dout (B, T, OC), inp (B, T, C), weight (OC, C).
    """
    B, T, C, OC = _check_shapes(
        "matmul_backward", inp, weight, dinp=(dinp, "B,T,C"), dweight=(dweight, "OC,C"), dbias=(dbias, "OC"),
        dout=(dout, "B,T,OC"))
    N = B * T
    dinp2, dout2, inp2 = dinp.reshape(N, C), dout.reshape(N, OC), inp.reshape(N, C)
    on_device = check_same_device("matmul_backward", dinp=dinp, dweight=dweight, dbias=dbias, dout=dout,
                                  inp=inp, weight=weight)
    version = pick_version("matmul_backward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device:
        dinp_kernel, dweight_kernel, dbias_kernel = BACKWARD_KERNELS[version]
        grid, block = _grid_2d(N, C)
        dinp_kernel[grid, block](dinp2, dout2, weight)
        grid, block = _grid_2d(OC, C)
        dweight_kernel[grid, block](dweight, dout2, inp2)
        if dbias is not None:
            dbias_kernel[ceil_div(OC, 256), 256](dbias, dout2)
    elif version == "loops":
        matmul_backward_loops(dinp2, dweight, dbias, dout2, inp2, weight)
    else:
        matmul_backward_blas(dinp2, dweight, dout2, inp2, weight, _n_slices(), xxgemm, set_blas_threads)
        if dbias is not None:
            _bias_backward_cpu(dbias, dout2)


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    """inp ~ N(0, 1) and weight ~ N(0, 1/C), so out ~ N(0, 1) whatever C; "bias": 0 in a shape drops it."""
    B, T, C, OC = shape["B"], shape["T"], shape["C"], shape["OC"]
    inputs = {"inp": rng.standard_normal((B, T, C), dtype=np.float32),
              "weight": (rng.standard_normal((OC, C)) / np.sqrt(C)).astype(np.float32),
              "dout": rng.standard_normal((B, T, OC), dtype=np.float32)}
    if shape.get("bias", 1):
        inputs["bias"] = rng.standard_normal(OC, dtype=np.float32)
    return inputs


def _run(inputs, version="blas"):
    """Forward then backward on fresh buffers; a CPU version runs on numpy, a CUDA one on the GPU."""
    inp, weight, bias, dout = inputs["inp"], inputs["weight"], inputs.get("bias"), inputs["dout"]
    B, T, C = inp.shape
    OC = weight.shape[0]
    args = {"out": np.zeros((B, T, OC), np.float32), "inp": inp, "weight": weight, "bias": bias}
    bargs = {"dinp": np.zeros_like(inp), "dweight": np.zeros_like(weight),
             "dbias": None if bias is None else np.zeros_like(bias), "dout": dout, "inp": inp, "weight": weight}
    grads = ["dinp", "dweight"] + ([] if bias is None else ["dbias"])
    if version in CUDA_VERSIONS:
        return {**run_on_device(functools.partial(matmul_forward, version=version), args, ["out"]),
                **run_on_device(functools.partial(matmul_backward, version=version), bargs, grads)}
    matmul_forward(**args, version=version)
    matmul_backward(**bargs, version=version)
    return {"out": args["out"], **{g: bargs[g] for g in grads}}


SPEC = OpSpec(
    name="matmul",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp"], i["weight"], i.get("bias"), i["dout"]),
    versions={"cpu": {v: functools.partial(_run, version=v) for v in CPU_VERSIONS},
              "cuda": {v: functools.partial(_run, version=v) for v in CUDA_VERSIONS}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 768, "OC": 3072},           # GPT-2 MLP up-projection
                {"B": 4, "T": 64, "C": 3072, "OC": 768},           # MLP down-projection: the longest sum
                {"B": 2, "T": 7, "C": 768, "OC": 50257, "bias": 0},  # lm_head: vocab-sized, no bias
                {"B": 3, "T": 1, "C": 37, "OC": 65}],
        "cudasim": [{"B": 2, "T": 3, "C": 37, "OC": 20}, {"B": 1, "T": 1, "C": 5, "OC": 17, "bias": 0}],
        "cuda": [{"B": 4, "T": 256, "C": 768, "OC": 3072}, {"B": 4, "T": 64, "C": 768, "OC": 50257, "bias": 0},
                 {"B": 3, "T": 1, "C": 37, "OC": 65}],
    },
    backward=("dinp", "dweight", "dbias"),
    teaching=("v1", "v2"),  # less accurate than PyTorch on long sums: see kernels/accuracy.py
)
