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
         "v3"    v2 with compensated (Kahan) sums: as accurate as PyTorch's float32
         "v4"    register-blocked: 64 x 64 tiles, 4 x 4 outputs per thread, bias in the epilogue, v3's
                 accurate sums; the skinny backward products split along N = B*T and reduced in order
                 (1.5-1.6x v3's speed on an H200, 23-34% of cuBLAS's; docs/figures.md)
         "v5"    v4 with 128-bit shared loads: each thread's 4 rows and 4 columns adjacent, so a step's operands
                 are 2 vector loads, not 8 (the same sums: the same bits as v4). 30-44% of cuBLAS's on an H200,
                 31-55% on an H100 (docs/figures.md). The default in numba's simulator (v8 costs it ~4x the
                 simulated work at its small shapes; v7 has its own simulator tests)
         "v6"    v5's kernels, the backward's reductions split for whole waves of blocks (dweight's long sums
                 over B*T into up to 16 ranges where its outputs fill few waves); on an H100 faster than v5 at
                 dweight only, slower than v7
         "v7"    128 x 128 tiles, 8 x 8 outputs a thread, double-buffered tiles (llm.c's hand-written kernel's
                 shape); its long sums compensated by carrying each part's lost bits into the next part (no
                 extra registers). 1.4-1.9x v5 on an H100, 58-77% of cuBLAS's, and as accurate as PyTorch
         "v8"    v7's sums (its bits) in 11-18% fewer instructions a k-tile: 8 k steps a pass of its loop, not 2,
                 the epilogue's rows written out (acc and part never leave registers), a k-major tile loaded one
                 k row a thread. The default on a GPU: bit for bit v7's on an H200, and 1.12-1.33x its speed
                 there, 67-109% of cuBLAS's; the 124M step 1.40x torch's, v7's 1.61x (docs/figures.md)
         "cublas" cuBLAS's SGEMM through PyTorch on the same device memory (kernels/_cublas.py; TF32 off;
                 llm.c's choice; `gpt2lab train --matmul cublas`)
"""
from __future__ import annotations

import functools

import numba
import numpy as np
from numba import cuda, float32, njit, prange, uint64

from . import _cublas
from ._blas import SPLIT, gemm, set_blas_threads, xxgemm
from ._cuda import ceil_div, compensated_add, device_function, run_on_device, scratch, two_sum, view
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
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
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


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
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


@njit(error_model="numpy", parallel=True, cache=True)
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


@njit(error_model="numpy", parallel=True, cache=True)
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


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
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


# v4, register blocking: each thread computes a TM x TN block of outputs held in registers. v2 and v3 did
# one output per thread, so every multiply-add read two numbers from shared memory (2 shared loads per FMA):
# shared-memory bandwidth, not arithmetic, bounded them. Here a block of THREADS = 16 x 16 threads owns a
# BM x BN = 64 x 64 output tile; per step k of the reduction a thread reads TM = 4 values of the inp-side
# tile and TN = 4 of the weight-side tile into registers and does TM * TN = 16 multiply-adds with them:
# 8 shared loads per 16 FMAs, 0.5 per FMA (v2: 2). Global memory: each element staged in shared memory is
# used by 64 threads' worth of outputs (v2: 16), so 1/32 global loads per FMA (v2: 1/8).
# Why these shapes: 4 x 4 outputs with v3's accurate sum need 3 x 16 registers (acc, comp, part) plus the
# 8 operands; 8 x 8 (llm.c's and most SGEMM tutorials' choice, at 128 x 128 tiles) would need ~200 and
# spill. 256 threads and 2 x BK x 65 x 4 = 17 KB of shared memory per block leave room for several
# blocks per SM. BK = 32 is one 128-byte row segment per warp when loading along a contiguous k.
# Thread (ty, tx) owns rows ty + 16 i and columns tx + 16 j (strided, not 4 adjacent): a warp's 16 tx
# then read 16 adjacent shared words (no bank conflict) and store 16 adjacent output columns (coalesced).
# One kernel serves all three products: out[m, n] = sum_k A[m, k] B[n, k], each operand read either
# k-contiguous (a (M, K) row-major array) or k-major (a (K, M) array, i.e. read transposed), so
#   forward  out = inp @ weight^T:   A = inp (N, C),        B = weight (OC, C)      both k-contiguous
#   dinp     += dout @ weight:       A = dout (N, OC),      B = weight (OC, C)      B k-major
#   dweight  += dout^T @ inp:        A = dout (N, OC),      B = inp (N, C)          both k-major
# Accuracy: v3's scheme. The BK products of one k-tile go into a fresh float32 `part`, and the parts into
# a compensated sum, so the error does not grow with K (C, OC = 50257, or N = B*T).
# Skinny products: dweight at C = OC = 768 has only 12 x 12 = 144 tiles, fewer blocks than an H100 has
# SMs x 2, and each would walk all N = B*T rows alone. The host splits the reduction k into S ranges
# (grid z): each block sums its range into a scratch (S, M, N) array, and a second kernel adds the S
# partial sums in split order with a compensated sum (deterministic: no atomics, the same bits every run)
# into the output. The forward never splits (N = B*T rows give enough tiles, and it overwrites with bias).
# llm.c: dev/cuda/matmul_forward.cu has a naive kernel, cuBLAS, cuBLASLt, and a hand-written one of this
# kind (128 x 128 tiles, 16 x 16 threads of 8 x 8 outputs, float4 loads, bias in the epilogue; no
# compensated sums); its trainer calls cuBLAS(Lt) for the matmuls and a kernel of its own for dbias (column
# sums split over rows, then reduced). Our "cublas" version is that choice.
# Timed on an H200 (2026-11-26, docs/figures.md): 9-12 TFLOP/s on GPT-2's products, 1.5-1.6x v3, 23-34% of
# cuBLAS's; v5 below is faster again, v7 faster still, and v8 (the default, v7's bits) faster again.
BM = 64                     # output rows per block (N for the forward)
BN = 64                     # output columns per block (OC for the forward)
BK = 32                     # reduction steps per shared-memory tile
TM = 4                      # output rows per thread
TN = 4                      # output columns per thread
THREADS_X = BN // TN        # 16
THREADS_Y = BM // TM        # 16
THREADS = THREADS_X * THREADS_Y
TILE_LOADS = BM * BK // THREADS  # elements of each operand tile every thread stages (needs BM == BN)
BM_PADDED = BM + 1          # a tile row of 65 floats: a warp storing down a column hits 32 different banks


@device_function
def _thread_v4():
    """(tx, ty) in v4's THREADS_X x THREADS_Y block, masked to that range: the same numbers, but the compiler
    then knows they are >= 0 and drops numba's negative-index wraparound (a sign test and a select) from every
    index built on them. Unmasked, the inner loop spent ~60 integer instructions on addresses for each 8
    shared loads and 16 multiply-adds, and was not unrolled; masked, ~6 per 16 loads and 32 multiply-adds
    (the PTX of the forward kernel, sm_90)."""
    return cuda.threadIdx.x & (THREADS_X - 1), cuda.threadIdx.y & (THREADS_Y - 1)


@device_function
def _block_range(out, a, a_k_major, k_per_split, block_rows, block_cols):
    """(M, N, m0, n0, k_begin, k_end) of a blocked kernel's block: out[z]'s size (M, N), the block's first row
    and column, and the range of k its split z sums (A is a (M, K), or (K, M) when a_k_major)."""
    K = a.shape[0] if a_k_major else a.shape[1]
    k_begin = cuda.blockIdx.z * k_per_split
    return (out.shape[1], out.shape[2], cuda.blockIdx.y * block_rows, cuda.blockIdx.x * block_cols, k_begin,
            min(K, k_begin + k_per_split))


@device_function
def _store_output(out, m, n, M, N, value, bias, has_bias, accumulate):
    """The blocked kernels' epilogue for one output: out[z, m, n] (+)= value (+ bias[n]) inside (M, N); the bias
    added once, in registers, before the one store."""
    if m < M and n < N:
        if has_bias:
            value += bias[n]
        if accumulate:
            out[cuda.blockIdx.z, m, n] += value
        else:
            out[cuda.blockIdx.z, m, n] = value


@device_function
def _load_tile_v4(tile, src, k_major, r0, R, k0, k_end, blocks_of_8):
    """tile[k, r] = A[r0 + r, k0 + k] for r < BM, k < BK (0 outside R rows or past k_end).

    A is src (R, K) when k_major is False (k contiguous), or src (K, R) read transposed when it is True (a
    warp loads 32 consecutive r of one k, and stores them along a tile row). k contiguous, a warp loads 32
    consecutive k of one row (v4), or with blocks_of_8 (v5) 8 consecutive k of 4 rows: 32-byte sectors
    either way, and v5's tile rows of 68 floats then take the warp's column store in 32 different banks.
    Each load sits behind its bounds test (PTX: a branch; ptxas may predicate it). Flash v5's clamped,
    unconditional loads (attention._clamped_load) were tried here: with all 16 loads in flight the dweight
    kernels spilled 120 bytes under the 80-register cap (ptxas 13.0, sm_90); which is faster is for a GPU.
    """
    tx, ty = _thread_v4()
    t = ty * THREADS_X + tx
    for load in range(TILE_LOADS):
        i = t + load * THREADS
        if k_major:
            k, r = i // BM, i % BM
        elif blocks_of_8:  # warp w: k block w % 4, rows 4 (w // 4) + 8 load ..; lane: k % 8, row + lane // 8
            k = t // 32 % (BK // 8) * 8 + t % 8
            r = t // (32 * (BK // 8)) * 4 + t % 32 // 8 + load * (THREADS // BK)
        else:
            r, k = i // BK, i % BK
        ok = r0 + r < R and k0 + k < k_end
        tile[k, r] = (src[k0 + k, r0 + r] if k_major else src[r0 + r, k0 + k]) if ok else float32(0.0)


# The operands' layouts (a_k_major, b_k_major) are compile-time constants: one kernel per product, made by
# _v4_kernel from one body. Passed as runtime flags, the compiler kept both load paths alive and ptxas needed
# 216 registers a thread (one block of 256 threads per SM). With the layout fixed, ptxas needed 128 under
# launch bounds of 2 blocks an SM (dinp's mixed layouts spilled 72 bytes); with the thread index masked
# (_thread_v4) 88-96 unbounded, and 80 without spills under V4_BLOCKS_PER_SM = 3: 24 warps an SM instead of 16
# (ptxas 13.0 -v on the PTX, sm_90).
V4_BLOCKS_PER_SM = 3
_V4_JIT = {} if numba.config.ENABLE_CUDASIM else {"launch_bounds": (THREADS, V4_BLOCKS_PER_SM)}  # sim: no bounds

# v5: v4 with 128-bit shared loads. v4's strided ownership (rows ty + 16 i) makes its 8 shared loads a step
# 8 scalar loads; a warp's 4 loads of a values hit 2 addresses and its 4 loads of b values 16 adjacent words,
# one 128-byte shared wavefront each: 8 wavefronts for the warp's 16 multiply-adds a thread, and an SM moves
# one wavefront a cycle against 4 warp-wide multiply-adds, so v4 is bound by shared memory near half the FP32
# peak. v5 gives thread (tx, ty) 4 adjacent rows 4 ty.. and 4 adjacent columns 4 tx..: its a and b values are
# one 16-byte load each (the tiles 16-byte aligned, rows of BM + 4 = 68 floats, a multiple of 4). A warp: a
# loads 2 addresses (1 wavefront), b 16 x 16 bytes (2): 3 wavefronts for 16 multiply-adds, under the FP32
# rate (counted assuming a 128-bit load's repeated addresses are served once, as 32-bit ones are: not measured
# by counters; on an H200 v5 ran 1.2-1.3x v4's speed, 11-15 TFLOP/s, 30-44% of cuBLAS's, docs/figures.md).
# The price: the loader's column stores (k contiguous) into rows of 68 floats would hit 8 banks 4 at a time, so
# there a warp loads 8 k of 4 rows (_load_tile_v4's blocks_of_8), 32 different banks; and the
# epilogue's stores are 4 adjacent columns a thread (each 32-byte sector written by 4 store instructions, not
# 1; once per output). Same sums in the same order as v4: the same bits. llm.c's hand-written kernel uses
# float4 loads the same way (8 x 8 outputs a thread there; no compensated sums).
V5_ROW = BM + 4


def _v4_kernel(name, a_k_major, b_k_major, vector=False):
    """v4's kernel for one pair of operand layouts (closure constants, so each load compiles to one path);
    vector: v5's layout (above)."""
    row = V5_ROW if vector else BM_PADDED
    stride_m, step_m = (TM, 1) if vector else (1, THREADS_Y)  # thread ty's rows: ty * stride_m + i * step_m
    stride_n, step_n = (TN, 1) if vector else (1, THREADS_X)

    def kernel(out, a, b, bias, has_bias, accumulate, k_per_split):
        """out[s, m, n] (+)= sum_{k in split s} A[m, k] B[n, k] (+ bias[n]): the comment above. Block
        (x, y, z) owns out[z, y-tile, x-tile]; accumulate: add into out (d += ...) instead of writing it."""
        a_tile = cuda.shared.array((BK, row), float32, alignment=16)
        b_tile = cuda.shared.array((BK, row), float32, alignment=16)
        acc = cuda.local.array((TM, TN), float32)
        comp = cuda.local.array((TM, TN), float32)
        part = cuda.local.array((TM, TN), float32)
        a_reg = cuda.local.array(TM, float32)
        b_reg = cuda.local.array(TN, float32)
        tx, ty = _thread_v4()
        M, N, m0, n0, k_begin, k_end = _block_range(out, a, a_k_major, k_per_split, BM, BN)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = float32(0.0)
                comp[i, j] = float32(0.0)
        for k0 in range(k_begin, k_end, BK):
            _load_tile_v4(a_tile, a, a_k_major, m0, M, k0, k_end, vector)
            _load_tile_v4(b_tile, b, b_k_major, n0, N, k0, k_end, vector)
            cuda.syncthreads()  # the tiles are whole before anyone reads them
            for i in range(TM):
                for j in range(TN):
                    part[i, j] = float32(0.0)
            for k in range(BK):
                kk = k & (BK - 1)  # k itself: the mask shows the compiler k >= 0 (no wraparound in the address)
                for i in range(TM):
                    a_reg[i] = a_tile[kk, ty * stride_m + i * step_m]
                for j in range(TN):
                    b_reg[j] = b_tile[kk, tx * stride_n + j * step_n]
                for i in range(TM):
                    for j in range(TN):
                        part[i, j] += a_reg[i] * b_reg[j]
            for i in range(TM):
                for j in range(TN):
                    acc[i, j], comp[i, j] = compensated_add(acc[i, j], comp[i, j], part[i, j])
            cuda.syncthreads()  # everyone is done reading before the next tiles overwrite them
        for i in range(TM):
            m = m0 + ty * stride_m + i * step_m
            for j in range(TN):
                n = n0 + tx * stride_n + j * step_n
                _store_output(out, m, n, M, N, acc[i, j] + comp[i, j], bias, has_bias, accumulate)
    kernel.__name__ = kernel.__qualname__ = name
    return cuda_kernel(**_V4_JIT)(kernel)


matmul_forward_kernel_v4 = _v4_kernel("matmul_forward_kernel_v4", False, False)  # inp (N, C), weight (OC, C)
matmul_backward_dinp_kernel_v4 = _v4_kernel("matmul_backward_dinp_kernel_v4", False, True)  # weight (OC, C): k-major
matmul_backward_dweight_kernel_v4 = _v4_kernel("matmul_backward_dweight_kernel_v4", True, True)  # dout^T, inp
V4_KERNELS = {(False, False): matmul_forward_kernel_v4, (False, True): matmul_backward_dinp_kernel_v4,
              (True, True): matmul_backward_dweight_kernel_v4}
V5_KERNELS = {layouts: _v4_kernel(kernel.__name__.replace("_v4", "_v5"), *layouts, vector=True)
              for layouts, kernel in V4_KERNELS.items()}


# v7: 128 x 128 tiles, 8 x 8 outputs a thread, the tiles double-buffered: llm.c's hand-written kernel's shape,
# with the accurate sums kept. Why: on an H200 v5 reached 30-44% of cuBLAS's rate and the matmul was 82% of the
# default 124M step (docs/figures.md): the 1.5x goal needs ~2x v5. Per k step a v5 thread does 16 multiply-adds
# for 2 vector shared loads; a v7 thread 64 for 4 (a: rows 4 ty.. and 64 + 4 ty.., b likewise: each a 16-byte
# load, and a warp's 16 tx read 256 adjacent bytes, 2 wavefronts, no bank conflict). A warp's shared traffic per
# multiply-add halves, and so does the loop's own overhead.
# Accuracy without a third 64-register array: v5 keeps acc, comp and part (3 x 16 registers). At 64 outputs
# that is 192 registers, and with the operands and the next tiles' values ptxas needed 255 and spilled ~600
# bytes. v7 keeps acc and part only. part sums V7_PART_TILES = 4 k-tiles (64 products) in plain float32; then
# acc + part by Knuth's TwoSum (_cuda.two_sum: the rounded sum and its exact rounding error, 6 additions, no
# branch), and the error *starts the next part*: the bits acc's rounding lost are carried into the sum instead
# of kept aside. The epilogue writes acc + part. That is Kahan's compensation with the correction folded into
# the next addend. A numpy model of the orders at the probes' lengths gave (x PyTorch float32's error on an
# H200, scaled from v1's measured ratio): v5's scheme 0.15-0.25, this one 0.19-0.33, parts of 64 with a plain
# acc 0.5-1.2; in the simulator's probes v7 is 0.87 and 1.51 x the yardstick (v5 0.74, 0.99).
# Registers (ptxas 13.0, sm_90): 246-249, no spills; one block of 256 threads an SM (8 warps: the ILP of 64
# independent multiply-adds a step hides the latency, the SGEMM tutorials' choice). The 512-byte stack is the
# epilogue's: its loop over rows is not unrolled, so acc and part go through local memory once, at the end.
# Double buffering: the next k-tile's values are loaded from global memory into registers before the current
# tile's multiply-adds and stored into the other shared buffer after them, so the loads' latency hides behind
# the arithmetic and one barrier a tile suffices (the buffer written was last read before the previous barrier).
# Shared memory: 2 buffers x 2 operands x 16 x 132 floats = 33 KiB (48 KiB is the static limit).
# Instructions (the SASS of the forward kernel, nvdisasm, counted): the k loop runs two k steps a pass (155
# instructions for 128 multiply-adds; one a pass: 88 for 64, the loop's index arithmetic ~25%); the loader
# reads tiles inside the operands without a test a load and with unsigned indices (no wraparound), which took
# the rest of a tile's instructions from ~500 to ~260. So ~64% of a tile's instructions are multiply-adds
# (v5, counted the same way: ~34%, its k loop 59 instructions for 32, its loader testing every load). On an
# H100 (2026-11-27, docs/figures.md) v7 ran 1.4-1.9x v5, 58-77% of cuBLAS: less than the ~1.9x the issue
# slots alone would allow, so something else (latency at 8 warps an SM, the barriers, memory) limits it too.
# The split of the skinny backward products: v6's wave model, with 1 block an SM (splits_v7).
V7_BM = 128                             # output rows (and columns) per block
V7_BK = 16                              # k per shared tile; 2 buffers of both operands: 33 KiB
V7_T = 8                                # outputs per thread along each side: 8 x 8
V7_QUAD = 4                             # a thread's 8 rows: 2 groups of 4 adjacent (one 16-byte load), 64 apart
V7_ROW = V7_BM + 4                      # tile rows 16-byte aligned; a k step 4 banks on from the last
V7_LOADS = V7_BM * V7_BK // THREADS     # 8 values of each operand staged per thread per tile
V7_KROW = THREADS // V7_BK              # threads sharing a k row of a tile (v8's k-major loads: 16)
V7_PART_TILES = 4                       # k-tiles summed plainly into part before it goes into acc
V7_BLOCKS_PER_SM = 1
_V7_JIT = {} if numba.config.ENABLE_CUDASIM else {"launch_bounds": (THREADS, V7_BLOCKS_PER_SM)}


@device_function
def _v7_slot(t, load, k_major, one_k):
    """(k, r) of the tile element thread t stages in its load-th load. k-major source: a warp takes 32 adjacent
    r of one k (a 128-byte global read, one tile row); with one_k (v8), a thread's 8 loads all from one k, r 16
    apart: a warp's two halves read 64 adjacent bytes of k and of k + 4, whose tile rows start 4 x 132 floats
    apart, 16 banks on, so their stores hit 32 different banks (k and k + 1 would share 12). k contiguous: 8
    adjacent k of 4 rows (32-byte sectors), whose stores into rows of 132 floats hit 32 different banks (v5's
    blocks of 8)."""
    if k_major and one_k:
        warp, half = t // 32, t // V7_KROW % 2
        return warp % 4 + warp // 4 * 8 + half * 4, t % V7_KROW + load * V7_KROW
    if k_major:
        i = t + load * THREADS
        return i // V7_BM, i % V7_BM
    lane, warp = t % 32, t // 32
    return warp % (V7_BK // 8) * 8 + lane % 8, warp // (V7_BK // 8) * 4 + lane // 8 + load * (THREADS // V7_BK)


@device_function
def _v7_read(src, k_major, r, k):
    """A[r, k]: src[r, k], or src[k, r] when k_major. The indices as unsigned: numba then drops its negative-index
    wraparound (3 instructions an index); they are never negative here."""
    return src[uint64(k), uint64(r)] if k_major else src[uint64(r), uint64(k)]


@device_function
def _v7_fetch(regs, src, k_major, r0, R, k0, k_end, one_k):
    """regs[load] = A[r0 + r, k0 + k] at this thread's slots (0 outside R rows or past k_end): A is src (R, K),
    or src (K, R) read transposed when k_major (one_k: _v7_slot's). A tile inside A (every tile but the last row
    and k ones) is read without a test a load: the test is the block's, once (the loader was ~30% of a tile's
    instructions)."""
    tx, ty = _thread_v4()
    t = ty * THREADS_X + tx
    if r0 + V7_BM <= R and k0 + V7_BK <= k_end:
        for load in range(V7_LOADS):
            k, r = _v7_slot(t, load, k_major, one_k)
            regs[load] = _v7_read(src, k_major, r0 + r, k0 + k)
    else:
        for load in range(V7_LOADS):
            k, r = _v7_slot(t, load, k_major, one_k)
            ok = r0 + r < R and k0 + k < k_end
            regs[load] = _v7_read(src, k_major, r0 + r, k0 + k) if ok else float32(0.0)


@device_function
def _v7_stage(tile, buf, regs, k_major, one_k):
    """tile[buf, k, r] = the values _v7_fetch put in regs."""
    tx, ty = _thread_v4()
    t = ty * THREADS_X + tx
    for load in range(V7_LOADS):
        k, r = _v7_slot(t, load, k_major, one_k)
        tile[buf, k, r] = regs[load]


@device_function
def _v7_own(thread, i):
    """The tile row (or column) of a thread's i-th output row (column): 4 adjacent, then 4 more 64 on."""
    return i // V7_QUAD * (V7_BM // 2) + thread * V7_QUAD + i % V7_QUAD


@device_function
def _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, k, tx, ty):
    """One k step of a thread's 8 x 8 outputs: 8 a values and 8 b values (4 vector loads), 64 multiply-adds."""
    for i in range(V7_T):
        a_reg[i] = a_tile[buf, k, _v7_own(ty, i)]
    for j in range(V7_T):
        b_reg[j] = b_tile[buf, k, _v7_own(tx, j)]
    for i in range(V7_T):
        for j in range(V7_T):
            part[i, j] += a_reg[i] * b_reg[j]


@device_function
def _v7_pass(part, a_reg, b_reg, a_tile, b_tile, buf, k, tx, ty):
    """v7's pass of the k loop: two k steps, k and k + 1 (the loop's own instructions count half)."""
    _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, k & (V7_BK - 1), tx, ty)
    _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, (k + 1) & (V7_BK - 1), tx, ty)


@device_function
def _v7_row(out, acc, part, i, m0, n0, M, N, tx, ty, bias, has_bias, accumulate):
    """Row i of a thread's 8 x 8 outputs: out = acc + part (+ bias); part: the last terms, and what acc's roundings
    lost."""
    m = m0 + _v7_own(ty, i)
    for j in range(V7_T):
        _store_output(out, m, n0 + _v7_own(tx, j), M, N, acc[i, j] + part[i, j], bias, has_bias, accumulate)


@device_function
def _v7_epilogue(out, acc, part, m0, n0, M, N, tx, ty, bias, has_bias, accumulate):
    """A thread's 8 x 8 outputs, row by row."""
    for i in range(V7_T):
        _v7_row(out, acc, part, i, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)


# v8: v7's sums in fewer instructions: the same products in the same order, so v7's bits. On an H100 v7 ran at
# 25-28 TFLOP/s where cuBLAS ran at 46-49 (the lm_head's shapes, docs/figures.md). In ptxas's code for v7 (ptxas
# 13.0, sm_90, nvdisasm, counted) a thread spends ~1,540 (forward) to ~1,620 (dinp, dweight) instructions on an
# interior k-tile for its 1,024 multiply-adds (63-67%): the k loop 155 a pass of 2 steps, the next tile's loads
# and stores 186-254, the carry 450 every 4 tiles. v8 changes three things:
#   * the epilogue's rows written out (_v8_epilogue: _v7_row's i a constant at each call). v7's loop over the rows
#     indexes acc and part with a runtime i, so LLVM keeps both in a 512-byte stack frame, stored on the way out.
#     With every index a constant they are registers throughout (stack 0), and ptxas then addresses the tile
#     loads in fewer instructions (the forward's 186 a tile -> 136).
#   * 8 k steps a pass, not 2 (_v8_pass, two calls of four: LLVM does not unroll a loop this size itself), so the
#     loop's index arithmetic and branch come twice a tile, not 8 times: 563 instructions a pass for 512
#     multiply-adds. A whole tile a pass (16 steps) counts ~3% fewer, but its ~19 KB of loop body is past the
#     instruction cache closest to an SM's schedulers (12 KiB on Volta, measured by Jia et al. 2018; Hopper's is
#     not published); 8 steps' is 9 KB.
#   * a k-major operand (dinp's weight, both of dweight's) loaded one k row a thread (_v7_slot's one_k): its 8
#     loads a tile then share one row address and differ by constants, where v7's each computed a 64-bit row
#     offset (~9 instructions a load). A warp reads 64 adjacent bytes of two rows instead of 128 of one; the
#     tiles hold the same values.
# Together 1,336-1,374 instructions an interior tile, 75-77% of them multiply-adds (forward -11%, dinp -16%,
# dweight -18%): that much faster if the kernel is bound by instruction issue, less if by latency. Registers 242-246,
# no spills, no stack. On an H200 (2026-11-27) the products took 5-33% less time than v7's (dinp 13-23%, dweight
# 14-22%), the same bits (docs/figures.md).


@device_function
def _v8_steps4(part, a_reg, b_reg, a_tile, b_tile, buf, k, tx, ty):
    """Four k steps, k .. k + 3."""
    _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, k, tx, ty)
    _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, k + 1, tx, ty)
    _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, k + 2, tx, ty)
    _v7_step(part, a_reg, b_reg, a_tile, b_tile, buf, k + 3, tx, ty)


@device_function
def _v8_pass(part, a_reg, b_reg, a_tile, b_tile, buf, k, tx, ty):
    """v8's pass of the k loop: eight k steps, k .. k + 7 (half a tile)."""
    _v8_steps4(part, a_reg, b_reg, a_tile, b_tile, buf, k & (V7_BK - 1), tx, ty)
    _v8_steps4(part, a_reg, b_reg, a_tile, b_tile, buf, (k + 4) & (V7_BK - 1), tx, ty)


@device_function
def _v8_epilogue(out, acc, part, m0, n0, M, N, tx, ty, bias, has_bias, accumulate):
    """v7's epilogue with its 8 rows written out, so that every index into acc and part is a constant."""
    _v7_row(out, acc, part, 0, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 1, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 2, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 3, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 4, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 5, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 6, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    _v7_row(out, acc, part, 7, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)


# A version's (k steps a pass of its k loop, the pass, the epilogue, k-major tiles loaded one k row a thread).
V7_SCHEDULES = {"v7": (2, _v7_pass, _v7_epilogue, False), "v8": (8, _v8_pass, _v8_epilogue, True)}


def _v7_kernel(name, a_k_major, b_k_major, version="v7"):
    """v7's kernel for one pair of operand layouts: the same arguments and output as v4's (_v4_kernel); v8's
    with version="v8" (V7_SCHEDULES; the comment above _v8_steps4)."""
    steps, k_pass, epilogue, one_k = V7_SCHEDULES[version]

    def kernel(out, a, b, bias, has_bias, accumulate, k_per_split):
        a_tile = cuda.shared.array((2, V7_BK, V7_ROW), float32, alignment=16)
        b_tile = cuda.shared.array((2, V7_BK, V7_ROW), float32, alignment=16)
        acc = cuda.local.array((V7_T, V7_T), float32)
        part = cuda.local.array((V7_T, V7_T), float32)
        a_reg = cuda.local.array(V7_T, float32)
        b_reg = cuda.local.array(V7_T, float32)
        a_next = cuda.local.array(V7_LOADS, float32)
        b_next = cuda.local.array(V7_LOADS, float32)
        tx, ty = _thread_v4()
        M, N, m0, n0, k_begin, k_end = _block_range(out, a, a_k_major, k_per_split, V7_BM, V7_BM)
        for i in range(V7_T):
            for j in range(V7_T):
                acc[i, j] = float32(0.0)
                part[i, j] = float32(0.0)
        _v7_fetch(a_next, a, a_k_major, m0, M, k_begin, k_end, one_k)
        _v7_fetch(b_next, b, b_k_major, n0, N, k_begin, k_end, one_k)
        _v7_stage(a_tile, 0, a_next, a_k_major, one_k)
        _v7_stage(b_tile, 0, b_next, b_k_major, one_k)
        cuda.syncthreads()
        step = 0
        for k0 in range(k_begin, k_end, V7_BK):
            buf = step & 1               # the mask shows the compiler buf >= 0 (no wraparound in the address)
            more = k0 + V7_BK < k_end    # the same for every thread of the block: the barrier below is shared
            if more:                     # the next tile's loads in flight during this tile's multiply-adds
                _v7_fetch(a_next, a, a_k_major, m0, M, k0 + V7_BK, k_end, one_k)
                _v7_fetch(b_next, b, b_k_major, n0, N, k0 + V7_BK, k_end, one_k)
            for k in range(0, V7_BK, steps):
                k_pass(part, a_reg, b_reg, a_tile, b_tile, buf, k, tx, ty)
            step += 1
            if step % V7_PART_TILES == 0:  # part into acc; what acc's rounding lost starts the next part
                for i in range(V7_T):
                    for j in range(V7_T):
                        acc[i, j], part[i, j] = two_sum(acc[i, j], part[i, j])
            if more:
                _v7_stage(a_tile, buf ^ 1, a_next, a_k_major, one_k)
                _v7_stage(b_tile, buf ^ 1, b_next, b_k_major, one_k)
            cuda.syncthreads()
        epilogue(out, acc, part, m0, n0, M, N, tx, ty, bias, has_bias, accumulate)
    kernel.__name__ = kernel.__qualname__ = name
    return cuda_kernel(**_V7_JIT)(kernel)


V7_KERNELS = {layouts: _v7_kernel(kernel.__name__.replace("_v4", "_v7"), *layouts)
              for layouts, kernel in V4_KERNELS.items()}
V8_KERNELS = {layouts: _v7_kernel(kernel.__name__.replace("_v4", "_v8"), *layouts, version="v8")
              for layouts, kernel in V4_KERNELS.items()}
BLOCKED_KERNELS = {"v4": V4_KERNELS, "v5": V5_KERNELS, "v6": V5_KERNELS, "v7": V7_KERNELS,
                   "v8": V8_KERNELS}  # version -> kernels


@cuda_kernel
def matmul_split_sum_kernel_v4(dst, parts):
    """dst[i] += sum_s parts[s, i], the S partial sums of a split product added in split order (compensated)."""
    i = cuda.grid(1)
    if i < dst.shape[0]:
        acc, comp = float32(0.0), float32(0.0)
        for s in range(parts.shape[0]):
            acc, comp = compensated_add(acc, comp, parts[s, i])
        dst[i] += acc + comp


# dbias v4: the column sums split over rows inside a block. Block (BIAS_COLS, BIAS_LANES): a warp reads 32
# adjacent columns of one row (coalesced); lane ty walks row blocks ty, ty + LANES, ... (BK rows each into a
# fresh part, parts compensated), so 16 lanes share the N rows that v3 walked with one thread; the lanes'
# sums meet in a shared-memory tree (fixed order: deterministic).
BIAS_COLS = 32
BIAS_LANES = 16


@cuda_kernel
def matmul_backward_dbias_kernel_v4(dbias, dout):
    lanes = cuda.shared.array((BIAS_LANES, BIAS_COLS), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, OC = dout.shape
    o = cuda.blockIdx.x * BIAS_COLS + tx
    acc, comp = float32(0.0), float32(0.0)
    if o < OC:
        for n0 in range(ty * BK, N, BIAS_LANES * BK):
            part = float32(0.0)
            for n in range(n0, min(n0 + BK, N)):
                part += dout[n, o]
            acc, comp = compensated_add(acc, comp, part)
    lanes[ty, tx] = acc + comp
    cuda.syncthreads()
    stride = BIAS_LANES // 2
    while stride > 0:  # every thread reaches every barrier: the tree's `if` only guards the add
        if ty < stride:
            lanes[ty, tx] += lanes[ty + stride, tx]
        cuda.syncthreads()
        stride //= 2
    if ty == 0 and o < OC:
        dbias[o] += lanes[0, tx]


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
    *((k, f"void(float32[:, :, ::1], {_M}, {_M}, {_V}, boolean, boolean, int64)")
      for k in dict.fromkeys(k for kernels in BLOCKED_KERNELS.values() for k in kernels.values())),  # v6: v5's
    (matmul_split_sum_kernel_v4, f"void({_V}, {_M})"),
    (matmul_backward_dbias_kernel_v4, f"void({_V}, {_M})"),
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


# v4's host side: how many splits of the reduction, and their scratch.
# 2 blocks per SM of an H100 (132 SMs): a backward product with fewer tiles is split. Kept at 2 when v4 went
# to V4_BLOCKS_PER_SM = 3: GPT-2's 144-tile dweight then splits in 2, 288 blocks in one wave (some SMs 3 of
# K/2 rows each), not 3, 432 blocks for 396 places (some SMs 4 of K/3). Which finishes first depends on how
# much blocks sharing an SM slow each other: not measured yet (the H200 runs timed TARGET_BLOCKS = 264 only).
TARGET_BLOCKS = 264
MAX_SPLITS = 16      # and never into more than this many ranges (each at least BK long)


def splits_v4(M, N, K):
    """(S, k_per_split) for a backward product out (M, N) summing over K: S ranges of k_per_split (a multiple
    of BK), enough blocks to fill the GPU (TARGET_BLOCKS) where the output alone has too few tiles."""
    tiles = ceil_div(M, BM) * ceil_div(N, BN)
    S = max(1, min(ceil_div(TARGET_BLOCKS, tiles), K // BK, MAX_SPLITS))
    k_per_split = ceil_div(ceil_div(K, S), BK) * BK
    return (ceil_div(K, k_per_split), k_per_split) if K else (1, BK)


# v6: v5's kernels, the reduction split for whole waves. On an H200 the default 124M step's dweight kernels took
# 103 ms against the forward's 55 for the same arithmetic (docs/figures.md). One cause the numbers allow: a GPU
# runs SMs x V4_BLOCKS_PER_SM blocks at once (396 on an H100 or H200), and dweight's outputs are small with long
# reductions, so its blocks come in few waves whose last is part-empty. c_attn's (2304, 768) is 432 tiles: a
# wave of 396 blocks of all K = 4096, then one of 36 of the same length, the GPU 9% busy. v4's split count
# only asked for TARGET_BLOCKS. v6 models a product's time as waves x k-tiles a block (ceil(tiles S / slots) x
# ceil(K / (S BK))) and takes the smallest S within SPLIT_SLACK of the best: c_attn's dweight in 8 (9 waves of
# 16 k-tiles: 144, against 2 x 128 = 256 unsplit), attn.c_proj's in 8 (v4/v5: 2), c_fc's and mlp.c_proj's in
# 2 (v5: 1); at B*T = 4096 dinp and the lm_head are as v5's (at B*T = 512 v6 splits some dinp in 4 where v5
# took 3). The model ignores that blocks sharing an SM slow each other (a part-empty wave runs faster than a
# full one) and the split's cost (S partial outputs written, read back and added in order by one more kernel:
# ~127 MB moved for c_attn's S = 8, ~26 us on an H200, ~2% of that product). On an H100 v6 made dweight faster
# than v5's (c_attn's 2.05 -> 1.30 ms) and nothing else; v7 is faster at all three.
# The sums stay deterministic and compensated, in another grouping than v5's (other bits, as accurate). A range
# is never shorter than SPLIT_MIN_TILES k-tiles, so a short reduction (K = B*T = 512 at T = 64) is not cut into
# slivers whose partial outputs cost more to write and add than they save.
SPLIT_SLACK = 0.05
SPLIT_MIN_TILES = 4


@functools.cache
def resident_blocks(per_sm=V4_BLOCKS_PER_SM) -> int:
    """Blocks of a blocked kernel a GPU runs at once: its SMs x per_sm; an H100's 132 SMs where no GPU
    answers (the simulator, a machine without one)."""
    try:
        return cuda.get_current_device().MULTIPROCESSOR_COUNT * per_sm
    except Exception:  # noqa: BLE001 -- no driver, no device, or the simulator's device without the attribute
        return 132 * per_sm


@functools.cache   # a step asks for the same few shapes every time: the search runs once per shape
def splits_v6(M, N, K, slots=None, tile=(BM, BN, BK)):
    """(S, k_per_split) for v6 (the comment above): the fewest ranges of K whose waves x k-tiles a block is
    within SPLIT_SLACK of the best split's; slots: blocks the GPU runs at once (resident_blocks()); tile: the
    kernel's (rows, columns, k) per block."""
    bm, bn, bk = tile
    steps = ceil_div(K, bk)
    if not steps:
        return 1, bk
    slots, tiles = slots or resident_blocks(), ceil_div(M, bm) * ceil_div(N, bn)
    costs = {}
    for asked in range(1, max(1, min(MAX_SPLITS, steps // SPLIT_MIN_TILES)) + 1):
        per = ceil_div(steps, asked)
        S = ceil_div(steps, per)   # the ranges of `per` k-tiles that cover K: none empty
        costs.setdefault(S, (ceil_div(tiles * S, slots) * per, per))
    best = min(cost for cost, _ in costs.values())
    S, per = next((S, per) for S, (cost, per) in sorted(costs.items()) if cost <= best * (1 + SPLIT_SLACK))
    return S, per * bk


def splits_v7(M, N, K, slots=None):
    """(S, k_per_split) for v7: v6's wave model with v7's tiles and its 1 block an SM."""
    return splits_v6(M, N, K, slots or resident_blocks(V7_BLOCKS_PER_SM), (V7_BM, V7_BM, V7_BK))


SPLITS = {"v4": splits_v4, "v5": splits_v4, "v6": splits_v6, **dict.fromkeys(V7_SCHEDULES, splits_v7)}  # split counts
TILES = dict.fromkeys(V7_SCHEDULES, (V7_BM, V7_BM))  # a version's (rows, columns) a block where not v4's (BM, BN)


def _split_scratch(S, M, N):
    """The (S, M, N) partial sums of a split product: allocated once per shape, then reused (_cuda.scratch)."""
    return scratch("matmul.split", (S, M, N))


def gemm_v4(out, a, a_k_major, b, b_k_major, bias=None, accumulate=False, split=False, version="v4"):
    """out (M, N) = (accumulate: +=) A @ B^T (+ bias (N,)) with v4's kernel (v5, v6, v7: the same launch; v7's
    blocks own 128 x 128 outputs, TILES); A is a (M, K), or a (K, M) read transposed when a_k_major (B likewise,
    N rows). split: cut K into ranges when there are few tiles (backward only: the partial sums are added into
    out, so it needs accumulate and no bias)."""
    M, N = out.shape
    K = a.shape[0] if a_k_major else a.shape[1]
    if split and (not accumulate or bias is not None):
        raise ValueError("gemm_v4: split=True adds partial sums into out: it needs accumulate=True and no bias")
    S, k_per_split = SPLITS[version](M, N, K) if split else (1, max(K, 1))
    bm, bn = TILES.get(version, (BM, BN))
    grid, block = (ceil_div(N, bn), ceil_div(M, bm), S), (THREADS_X, THREADS_Y)
    has_bias = bias is not None
    bias = bias if has_bias else _no_bias()
    kernel = BLOCKED_KERNELS[version][(a_k_major, b_k_major)]
    if S == 1:
        kernel[grid, block](view(out, 1, M, N), a, b, bias, has_bias, accumulate, k_per_split)
        return
    parts = _split_scratch(S, M, N)
    kernel[grid, block](parts, a, b, bias, False, False, k_per_split)
    matmul_split_sum_kernel_v4[ceil_div(M * N, 256), 256](view(out, M * N), view(parts, S, M * N))


def _forward_cuda(version, out, inp, weight, bias):
    """out (N, OC) = inp (N, C) @ weight^T (+ bias) on the GPU with one CUDA version."""
    if version in BLOCKED_KERNELS:
        gemm_v4(out, inp, False, weight, False, bias, version=version)
    elif version == "cublas":
        _cublas.forward(out, inp, weight, bias)
    else:
        N, OC = out.shape
        grid, block = _grid_2d(N, OC)
        has_bias = bias is not None
        FORWARD_KERNELS[version][grid, block](out, inp, weight, bias if has_bias else _no_bias(), has_bias)


def backward_launchers(version):
    """(dinp(dinp, dout, weight), dweight(dweight, dout, inp), dbias(dbias, dout)): one CUDA version's three
    backward products on 2-D (N, .) device arrays, each accumulating; kernels/accuracy.py runs them one by one."""
    if version in BLOCKED_KERNELS:
        def dinp(dinp, dout, weight):       # dinp (N, C) += dout (N, OC) @ weight (OC, C): weight read k-major
            gemm_v4(dinp, dout, False, weight, True, accumulate=True, split=True, version=version)

        def dweight(dweight, dout, inp):    # dweight (OC, C) += dout^T @ inp: both summed down their N rows
            gemm_v4(dweight, dout, True, inp, True, accumulate=True, split=True, version=version)

        def dbias(dbias, dout):
            matmul_backward_dbias_kernel_v4[ceil_div(dbias.shape[0], BIAS_COLS), (BIAS_COLS, BIAS_LANES)](dbias, dout)
        return dinp, dweight, dbias
    if version == "cublas":
        return (lambda dinp, dout, weight: _cublas.backward(dinp, None, None, dout, None, weight),
                lambda dweight, dout, inp: _cublas.backward(None, dweight, None, dout, inp, None),
                lambda dbias, dout: _cublas.backward(None, None, dbias, dout, None, None))
    dinp_kernel, dweight_kernel, dbias_kernel = BACKWARD_KERNELS[version]
    return (lambda dinp, dout, weight: dinp_kernel[_grid_2d(*dinp.shape)](dinp, dout, weight),
            lambda dweight, dout, inp: dweight_kernel[_grid_2d(*dweight.shape)](dweight, dout, inp),
            lambda dbias, dout: dbias_kernel[ceil_div(dbias.shape[0], 256), 256](dbias, dout))


# ---------------------------------------------------------------- public entry points
CPU_VERSIONS = ("loops", "blas")
CUDA_VERSIONS = (*FORWARD_KERNELS, *BLOCKED_KERNELS, "cublas")
# v3-v8 and cublas are all as accurate as PyTorch's float32 (v8: v7's bits, checked bit for bit on an H200); v8 is
# the fastest of ours timed (1.12-1.33x v7 at GPT-2's shapes on an H200, 2026-11-27; v7 1.4-1.9x v5 on an H100),
# so the default (the rule: docs/kernels.md; the figures: docs/figures.md). In numba's simulator v5
# (_validate.pick_version): v7's and v8's 128 x 128 tiles at the simulator's small shapes are mostly padding, ~4x
# v5's simulated work (a simulated fused step of the micro model took 53 s, not 13).
DEFAULT_VERSION = {"cpu": "blas", "cuda": "v8", "cudasim": "v5"}


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
        _forward_cuda(version, view(out, N, OC), view(inp, N, C), weight, bias)
    elif version == "loops":
        matmul_forward_loops(view(out, N, OC), view(inp, N, C), weight, bias)
    else:
        matmul_forward_blas(view(out, N, OC), view(inp, N, C), weight, bias, _n_slices(), xxgemm,
                            set_blas_threads)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight, version=None):
    """dinp += dout @ weight; dweight += dout^T @ inp; dbias += dout summed over B*T (dbias may be None).

    dinp (B, T, C), dweight (OC, C), dbias (OC,) or None, dout (B, T, OC), inp (B, T, C), weight (OC, C).
    """
    B, T, C, OC = _check_shapes(
        "matmul_backward", inp, weight, dinp=(dinp, "B,T,C"), dweight=(dweight, "OC,C"), dbias=(dbias, "OC"),
        dout=(dout, "B,T,OC"))
    N = B * T
    dinp2, dout2, inp2 = view(dinp, N, C), view(dout, N, OC), view(inp, N, C)
    on_device = check_same_device("matmul_backward", dinp=dinp, dweight=dweight, dbias=dbias, dout=dout,
                                  inp=inp, weight=weight)
    version = pick_version("matmul_backward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device and version == "cublas":
        _cublas.backward(dinp2, dweight, dbias, dout2, inp2, weight)  # one ordering/precision scope for all three
    elif on_device:
        dinp_fn, dweight_fn, dbias_fn = backward_launchers(version)
        dinp_fn(dinp2, dout2, weight)
        dweight_fn(dweight, dout2, inp2)
        if dbias is not None:
            dbias_fn(dbias, dout2)
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
              "cuda": {v: functools.partial(_run, version=v) for v in CUDA_VERSIONS
                       if not (v == "cublas" and numba.config.ENABLE_CUDASIM)}},  # no cuBLAS in the simulator
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
