"""LayerNorm over the channels of each token, eps = 1e-5 (GPT-2's ln_1, ln_2, ln_f).

Forward, for one row x = inp[b, t, :] of C channels, with weight w and bias b of shape (C,):

    mean = (1/C) sum_i x_i
    var  = (1/C) sum_i (x_i - mean)^2          (biased, as PyTorch)
    rstd = 1 / sqrt(var + eps)
    norm_i = (x_i - mean) * rstd
    out_i  = norm_i * w_i + b_i

What is cached for the backward: `mean` and `rstd`, one float each per row (B, T). The backward needs the
normalised input norm = (x - mean) * rstd and the scale 1/sigma = rstd; with the two cached numbers it
rebuilds norm from x in one pass instead of storing a second (B, T, C) tensor or re-reducing the row.

Backward. With dout = dL/dout, the parameters collect over every row (b, t):

    dbias_i   += dout_i
    dweight_i += norm_i * dout_i

and through the affine map, dnorm_i = dout_i * w_i. Then norm depends on x directly and through mean and
rstd; the chain rule, using d mean / dx_j = 1/C and d rstd / dx_j = -rstd^3 (x_j - mean) / C, gives

    dinp_j += rstd * (dnorm_j - mean_i(dnorm_i) - norm_j * mean_i(dnorm_i * norm_i))

The first mean term is the gradient flowing back through `mean` (shifting every x shifts nothing after
normalising); the second is the one through `rstd` (scaling every x scales nothing after normalising).
So a row needs two reductions, sum(dnorm) and sum(dnorm * norm), before it can write dinp. Like llm.c the
backward *accumulates* (dinp += ..., dweight += ..., dbias += ...). kernels/residual_layernorm.py fuses the
residual add before a LayerNorm into its forward, and the residual's backward into this one (v4's kernels).

Shapes: inp, out, dout, dinp: (B, T, C) float32; mean, rstd: (B, T) float32; weight, bias, dweight,
dbias: (C,) float32. All C-contiguous.

Versions (`version=` of the entry points; DEFAULT_VERSION below, chosen by the rule in docs/kernels.md):

    CPU  "loops"  one row per parallel loop iteration, two passes for the variance (default)
    CUDA "v1"     one thread per row (the CPU loop); backward: a second kernel, one thread per channel
         "v2"     one block per row, shared-memory tree reductions; backward with atomics for dweight, dbias
         "v3"     one warp per row, register shuffles instead of shared memory
         "v4"     backward only (its forward is v2's): deterministic, blocked dweight and dbias sums (default)
"""
from __future__ import annotations

import math
from functools import partial

import numba
import numpy as np
from numba import cuda, float32, njit, prange

from ._cuda import block_sum, ceil_div, compensated_add, device_function, lanes_sum, run_on_device, view
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_same_device, pick_version
from .check import OpSpec

EPS = 1e-5  # GPT-2's layer_norm_epsilon; the one definition (the model, the lessons and the probes import it)


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp, weight, bias, dout):
    """PyTorch: F.layer_norm and its autograd gradients; mean and rstd computed the same way."""
    import torch
    import torch.nn.functional as F

    def forward(inp, weight, bias):
        var = inp.var(-1, unbiased=False)
        return {"out": F.layer_norm(inp, (inp.shape[-1],), weight, bias, eps=EPS),
                "mean": inp.mean(-1), "rstd": torch.rsqrt(var + EPS)}
    return autograd(forward, {"inp": inp, "weight": weight, "bias": bias}, ("inp", "weight", "bias"),
                    {"out": dout})


# ---------------------------------------------------------------- CPU (numba @njit)
# Rows are independent: one prange iteration per row. A row of 768 floats (3 KB) stays in L1 across the
# three passes (mean, variance, write), and fastmath lets numba vectorise each pass.
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def layernorm_forward_cpu(out, mean, rstd, inp, weight, bias):
    """The CPU kernel on (N, C) views: out, inp (N, C); mean, rstd (N,); weight, bias (C,). No checks."""
    N, C = inp.shape
    inv_c = np.float32(1.0 / C)  # float32 math throughout: it vectorises twice as wide
    for r in prange(N):
        x = inp[r]
        m = np.float32(0.0)
        for i in range(C):
            m += x[i]
        m *= inv_c
        mean[r] = m
        rstd[r] = normalise_row(out[r], x, m, inv_c, weight, bias)


@njit(error_model="numpy", fastmath=True, inline="always", cache=True)
def normalise_row(y, x, m, inv_c, weight, bias):
    """Given a row x and its mean m: y = (x - m) * rstd * weight + bias; returns rstd. Inlined into the
    row loops (this one and kernels/residual_layernorm.py's), so each pass still vectorises.

    Two passes (the mean, then the squared deviations) instead of E[x^2] - mean^2, which cancels
    catastrophically when |mean| >> std."""
    v = np.float32(0.0)
    for i in range(x.shape[0]):
        d = x[i] - m
        v += d * d
    s = np.float32(1.0) / np.sqrt(v * inv_c + np.float32(EPS))
    for i in range(x.shape[0]):
        y[i] = (x[i] - m) * s * weight[i] + bias[i]
    return s


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def layernorm_backward_cpu(dinp, dweight, dbias, dout, inp, weight, mean, rstd, nchunks):
    """The CPU kernel on (N, C) views; accumulates. nchunks: how many row chunks run in parallel.

    dinp is per row, so rows run in parallel. dweight and dbias sum over all rows: each chunk of rows
    accumulates into its own partial row (no race), and the partials are added at the end. The partials are
    float64, as PyTorch's CPU kernel accumulates these sums: late in training dweight is small next to its
    terms (they cancel), and float32 partials measured 18x PyTorch float32's error on dln1w in live parity.
    C float64 numbers per chunk cost nothing next to the row loops.
    """
    N, C = inp.shape
    inv_c = np.float32(1.0 / C)
    rows_per_chunk = (N + nchunks - 1) // nchunks
    dweight_part = np.zeros((nchunks, C), np.float64)
    dbias_part = np.zeros((nchunks, C), np.float64)
    for k in prange(nchunks):
        dw, db = dweight_part[k], dbias_part[k]
        for r in range(k * rows_per_chunk, min(N, (k + 1) * rows_per_chunk)):
            x, dy, dx = inp[r], dout[r], dinp[r]
            m, s = mean[r], rstd[r]
            # the two reductions: mean(dnorm) and mean(dnorm * norm)
            dnorm_mean = np.float32(0.0)
            dnorm_norm_mean = np.float32(0.0)
            for i in range(C):
                dnorm = dy[i] * weight[i]
                dnorm_mean += dnorm
                dnorm_norm_mean += dnorm * (x[i] - m) * s
            dnorm_mean *= inv_c
            dnorm_norm_mean *= inv_c
            for i in range(C):
                norm = (x[i] - m) * s
                db[i] += dy[i]
                dw[i] += np.float64(norm) * dy[i]
                dx[i] += s * (dy[i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean)
    # nchunks * C additions: too few to be worth another parallel region
    for i in range(C):
        dw_sum, db_sum = 0.0, 0.0
        for k in range(nchunks):
            dw_sum += dweight_part[k, i]
            db_sum += dbias_part[k, i]
        dweight[i] += np.float32(dw_sum)
        dbias[i] += np.float32(db_sum)


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Kernels see (N, C) views, N = B*T rows. BLOCK is the most threads a block-per-row kernel uses (and the
# size of its shared scratch); a row of C channels gets the smallest power of two >= C, up to BLOCK.
BLOCK = 256
WARP = 32
WARPS_PER_BLOCK = 4  # v3: rows per block of 128 threads
EPS32 = np.float32(EPS)


# v1: one thread per row. Simple, and each thread does the CPU loop. Poor on a GPU: only N threads (256
# rows of GPT-2 at B=4, T=64 barely fill two SMs), and neighbouring threads read addresses C floats apart,
# so no load is coalesced: each 4-byte read costs a 32-byte memory transaction.
@cuda_kernel
def layernorm_forward_kernel_v1(out, mean, rstd, inp, weight, bias):
    r = cuda.grid(1)
    N, C = inp.shape
    if r >= N:
        return
    m = float32(0.0)
    for i in range(C):
        m += inp[r, i]
    inv_c = float32(1.0) / float32(C)  # float32 throughout: a Python float would promote to f64
    m *= inv_c
    v = float32(0.0)
    for i in range(C):
        d = inp[r, i] - m
        v += d * d
    v *= inv_c
    s = float32(1.0) / math.sqrt(v + EPS32)
    for i in range(C):
        out[r, i] = (inp[r, i] - m) * s * weight[i] + bias[i]
    mean[r] = m
    rstd[r] = s


# v2: one block per row. Thread `tid` takes channels tid, tid + blockDim, ...: neighbouring threads read
# neighbouring floats (coalesced), and the sums over the row are shared-memory tree reductions
# (_cuda.block_sum). N blocks of up to BLOCK threads keep the whole GPU busy.
@cuda_kernel
def layernorm_forward_kernel_v2(out, mean, rstd, inp, weight, bias):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    C = inp.shape[1]
    inv_c = float32(1.0) / float32(C)
    acc = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        acc += inp[r, i]
    m = block_sum(scratch, acc) * inv_c
    acc = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        d = inp[r, i] - m
        acc += d * d
    s = float32(1.0) / math.sqrt(block_sum(scratch, acc) * inv_c + EPS32)
    for i in range(tid, C, cuda.blockDim.x):
        out[r, i] = (inp[r, i] - m) * s * weight[i] + bias[i]
    if tid == 0:
        mean[r] = m
        rstd[r] = s


# v3: one warp per row, WARPS_PER_BLOCK rows per block. The row's sums are warp shuffles (registers)
# instead of v2's shared-memory tree with a barrier per step; loads stay coalesced (lane i reads
# channels i, i + 32, ...). For GPT-2's C = 768 one warp has 24 channels per lane: enough work to hide
# latency, and N/4 blocks of 128 threads fill the GPU.
@cuda_kernel
def layernorm_forward_kernel_v3(out, mean, rstd, inp, weight, bias):
    r = cuda.blockIdx.x * WARPS_PER_BLOCK + cuda.threadIdx.x // WARP
    lane = cuda.threadIdx.x % WARP
    N, C = inp.shape
    if r >= N:
        return  # the whole warp leaves together: the shuffles below still see all 32 lanes
    inv_c = float32(1.0) / float32(C)
    acc = float32(0.0)
    for i in range(lane, C, WARP):
        acc += inp[r, i]
    m = lanes_sum(acc, WARP) * inv_c
    acc = float32(0.0)
    for i in range(lane, C, WARP):
        d = inp[r, i] - m
        acc += d * d
    s = float32(1.0) / math.sqrt(lanes_sum(acc, WARP) * inv_c + EPS32)
    for i in range(lane, C, WARP):
        out[r, i] = (inp[r, i] - m) * s * weight[i] + bias[i]
    if lane == 0:
        mean[r] = m
        rstd[r] = s


# Backward v1: one thread per row for dinp (the CPU loop again), and a second kernel with one thread per
# channel for dweight and dbias: thread i owns column i, sums it over all rows in a fixed order, so
# there is no race and the result is deterministic; neighbouring threads read neighbouring columns of a
# row, so that kernel's loads are coalesced. Accuracy: that column sum is one float32 running sum over
# N = B*T rows; simulator (python -m gpt2lab.kernels.accuracy), N = 16384: 6.2x (dweight) and 43x (dbias)
# the error of a float32 cascade sum. v2's and v3's atomics are running sums too, in arrival order. v4
# fixes it.
@cuda_kernel
def layernorm_backward_dinp_kernel_v1(dinp, dout, inp, weight, mean, rstd):
    r = cuda.grid(1)
    N, C = inp.shape
    if r >= N:
        return
    m, s = mean[r], rstd[r]
    dnorm_mean = float32(0.0)
    dnorm_norm_mean = float32(0.0)
    for i in range(C):
        dnorm = dout[r, i] * weight[i]
        dnorm_mean += dnorm
        dnorm_norm_mean += dnorm * (inp[r, i] - m) * s
    inv_c = float32(1.0) / float32(C)
    dnorm_mean *= inv_c
    dnorm_norm_mean *= inv_c
    for i in range(C):
        norm = (inp[r, i] - m) * s
        dinp[r, i] += s * (dout[r, i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean)


@cuda_kernel
def layernorm_backward_params_kernel_v1(dweight, dbias, dout, inp, mean, rstd):
    i = cuda.grid(1)
    N, C = inp.shape
    if i >= C:
        return
    dw = float32(0.0)
    db = float32(0.0)
    for r in range(N):
        dw += (inp[r, i] - mean[r]) * rstd[r] * dout[r, i]
        db += dout[r, i]
    dweight[i] += dw
    dbias[i] += db


# Backward v2: one block per row, the two means as block reductions, coalesced loads. dweight and dbias
# get one contribution per row and column: cuda.atomic.add, because every block (row) adds into the same
# C floats. The atomics make the order of those float additions, and so the last bits, run-dependent.
@device_function
def _block_dnorm_means(scratch, dout, inp, weight, r, m, s):
    """(mean_i dnorm_i, mean_i dnorm_i * norm_i) of row r: strided partial sums, then block_sum trees."""
    tid = cuda.threadIdx.x
    C = inp.shape[1]
    acc = float32(0.0)
    acc_norm = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        dnorm = dout[r, i] * weight[i]
        acc += dnorm
        acc_norm += dnorm * (inp[r, i] - m) * s
    inv_c = float32(1.0) / float32(C)
    return block_sum(scratch, acc) * inv_c, block_sum(scratch, acc_norm) * inv_c


@cuda_kernel
def layernorm_backward_kernel_v2(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    C = inp.shape[1]
    m, s = mean[r], rstd[r]
    dnorm_mean, dnorm_norm_mean = _block_dnorm_means(scratch, dout, inp, weight, r, m, s)
    for i in range(tid, C, cuda.blockDim.x):
        norm = (inp[r, i] - m) * s
        dy = dout[r, i]
        dinp[r, i] += s * (dy * weight[i] - dnorm_mean - norm * dnorm_norm_mean)
        cuda.atomic.add(dweight, i, norm * dy)
        cuda.atomic.add(dbias, i, dy)


# Backward v3: one warp per row, the two means as warp shuffles, atomics for dweight and dbias as in v2.
@cuda_kernel
def layernorm_backward_kernel_v3(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    r = cuda.blockIdx.x * WARPS_PER_BLOCK + cuda.threadIdx.x // WARP
    lane = cuda.threadIdx.x % WARP
    N, C = inp.shape
    if r >= N:
        return
    m, s = mean[r], rstd[r]
    inv_c = float32(1.0) / float32(C)
    acc = float32(0.0)
    acc_norm = float32(0.0)
    for i in range(lane, C, WARP):
        dnorm = dout[r, i] * weight[i]
        acc += dnorm
        acc_norm += dnorm * (inp[r, i] - m) * s
    dnorm_mean = lanes_sum(acc, WARP) * inv_c
    dnorm_norm_mean = lanes_sum(acc_norm, WARP) * inv_c
    for i in range(lane, C, WARP):
        norm = (inp[r, i] - m) * s
        dy = dout[r, i]
        dinp[r, i] += s * (dy * weight[i] - dnorm_mean - norm * dnorm_norm_mean)
        cuda.atomic.add(dweight, i, norm * dy)
        cuda.atomic.add(dbias, i, dy)


# Backward v4: accurate dweight and dbias. v1 to v3 sum each column over all N = B*T rows as one running
# float32 sum (v1 in row order, v2 and v3 in whatever order the atomics land), so the error grows with N.
# v4 splits the work in two kernels. dinp: v2's block per row, without the atomics. dweight, dbias: a
# block owns PARAM_COLS columns; its PARAM_LANES rows of threads take every PARAM_LANES-th row, each
# keeping a compensated sum (_cuda.compensated_add), and the lanes' sums meet in a shared-memory tree
# (pairwise). Deterministic (no atomics) and accurate to ~1 rounding whatever N. Simulator, N = 16384:
# 0.36x (dweight) and 0.50x (dbias) the error of a float32 cascade sum (v1: 6.2x and 43x).
PARAM_COLS = 32   # x: one warp reads 32 neighbouring channels of a row (coalesced)
PARAM_LANES = 16  # y: row lanes per column; a power of two for the tree


@cuda_kernel
def layernorm_backward_dinp_kernel_v4(dinp, dout, inp, weight, mean, rstd):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x
    C = inp.shape[1]
    m, s = mean[r], rstd[r]
    dnorm_mean, dnorm_norm_mean = _block_dnorm_means(scratch, dout, inp, weight, r, m, s)
    for i in range(cuda.threadIdx.x, C, cuda.blockDim.x):
        norm = (inp[r, i] - m) * s
        dinp[r, i] += s * (dout[r, i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean)


@cuda_kernel
def layernorm_backward_params_kernel_v4(dweight, dbias, dout, inp, mean, rstd):
    dw_lanes = cuda.shared.array((PARAM_LANES, PARAM_COLS), float32)
    db_lanes = cuda.shared.array((PARAM_LANES, PARAM_COLS), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = inp.shape
    i = cuda.blockIdx.x * PARAM_COLS + tx
    dw, dw_comp = float32(0.0), float32(0.0)
    db, db_comp = float32(0.0), float32(0.0)
    if i < C:
        for r in range(ty, N, PARAM_LANES):
            dy = dout[r, i]
            dw, dw_comp = compensated_add(dw, dw_comp, (inp[r, i] - mean[r]) * rstd[r] * dy)
            db, db_comp = compensated_add(db, db_comp, dy)
    # _cuda.block_sum's tree and barriers, down each column of lanes
    dw_lanes[ty, tx] = dw + dw_comp
    db_lanes[ty, tx] = db + db_comp
    cuda.syncthreads()
    stride = PARAM_LANES // 2
    while stride > 0:
        if ty < stride:
            dw_lanes[ty, tx] += dw_lanes[ty + stride, tx]
            db_lanes[ty, tx] += db_lanes[ty + stride, tx]
        cuda.syncthreads()
        stride //= 2
    if ty == 0 and i < C:
        dweight[i] += dw_lanes[0, tx]
        dbias[i] += db_lanes[0, tx]


_ROWS = "float32[:, ::1]"
_VEC = "float32[::1]"
# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
CUDA_KERNELS = (
    (layernorm_forward_kernel_v1, f"void({_ROWS}, {_VEC}, {_VEC}, {_ROWS}, {_VEC}, {_VEC})"),
    (layernorm_forward_kernel_v2, f"void({_ROWS}, {_VEC}, {_VEC}, {_ROWS}, {_VEC}, {_VEC})"),
    (layernorm_backward_dinp_kernel_v1, f"void({_ROWS}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC}, {_VEC})"),
    (layernorm_backward_params_kernel_v1, f"void({_VEC}, {_VEC}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC})"),
    (layernorm_backward_kernel_v2,
     f"void({_ROWS}, {_VEC}, {_VEC}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC}, {_VEC})"),
    (layernorm_forward_kernel_v3, f"void({_ROWS}, {_VEC}, {_VEC}, {_ROWS}, {_VEC}, {_VEC})"),
    (layernorm_backward_kernel_v3,
     f"void({_ROWS}, {_VEC}, {_VEC}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC}, {_VEC})"),
    (layernorm_backward_dinp_kernel_v4, f"void({_ROWS}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC}, {_VEC})"),
    (layernorm_backward_params_kernel_v4, f"void({_VEC}, {_VEC}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC})"),
)
ROW_THREADS = 128  # threads per block for the thread-per-row/column kernels (v1)


def block_threads(C: int) -> int:
    """Threads for a block-per-row kernel: a power of two (the tree reduction halves it) >= C, <= BLOCK."""
    n = WARP
    while n < C and n < BLOCK:
        n *= 2
    return n


def _layernorm_forward_cuda(out, mean, rstd, inp, weight, bias, version):
    N = mean.size
    if version == "v1":
        layernorm_forward_kernel_v1[ceil_div(N, ROW_THREADS), ROW_THREADS](out, mean, rstd, inp, weight, bias)
    elif version in ("v2", "v4"):
        layernorm_forward_kernel_v2[N, block_threads(inp.shape[1])](out, mean, rstd, inp, weight, bias)
    else:
        layernorm_forward_kernel_v3[ceil_div(N, WARPS_PER_BLOCK), WARPS_PER_BLOCK * WARP](
            out, mean, rstd, inp, weight, bias)


def _layernorm_backward_cuda(dinp, dweight, dbias, dout, inp, weight, mean, rstd, version):
    N, C = inp.shape
    if version == "v1":
        layernorm_backward_dinp_kernel_v1[ceil_div(N, ROW_THREADS), ROW_THREADS](
            dinp, dout, inp, weight, mean, rstd)
        layernorm_backward_params_kernel_v1[ceil_div(C, ROW_THREADS), ROW_THREADS](
            dweight, dbias, dout, inp, mean, rstd)
    elif version == "v2":
        layernorm_backward_kernel_v2[N, block_threads(C)](dinp, dweight, dbias, dout, inp, weight, mean, rstd)
    elif version == "v4":
        layernorm_backward_dinp_kernel_v4[N, block_threads(C)](dinp, dout, inp, weight, mean, rstd)
        layernorm_backward_params_kernel_v4[ceil_div(C, PARAM_COLS), (PARAM_COLS, PARAM_LANES)](
            dweight, dbias, dout, inp, mean, rstd)
    else:
        layernorm_backward_kernel_v3[ceil_div(N, WARPS_PER_BLOCK), WARPS_PER_BLOCK * WARP](
            dinp, dweight, dbias, dout, inp, weight, mean, rstd)


# ---------------------------------------------------------------- public entry points
# v4: the forward is v2's, and the backward's dweight, dbias are as accurate as PyTorch's float32 (see v4's
# comment). v3's forward is not the default: its shuffles are checked in the simulator only through an
# emulation (see _cuda.py).
CPU_VERSIONS = ("loops",)
CUDA_VERSIONS = ("v1", "v2", "v3", "v4")  # v4 is a backward version only: its forward is v2's
DEFAULT_VERSION = {"cpu": "loops", "cuda": "v4"}


def layernorm_forward(out, mean, rstd, inp, weight, bias, version=None):
    """out = (inp - mean) * rstd * weight + bias over the last axis; writes the mean and rstd caches.

    out, inp: (B, T, C) float32; mean, rstd: (B, T) float32; weight, bias: (C,) float32.
    Numpy arrays run on the CPU, CUDA device arrays on the GPU; `version` one of the module docstring's
    (None: DEFAULT_VERSION; "v4" runs v2's forward).
    """
    op = "layernorm_forward"
    B, T, C = check_array(op, "inp", inp, (None, None, None), dims="B,T,C").shape
    check_array(op, "out", out, (B, T, C), dims="B,T,C")
    for name, a in (("mean", mean), ("rstd", rstd)):
        check_array(op, name, a, (B, T), dims="B,T")
    for name, a in (("weight", weight), ("bias", bias)):
        check_array(op, name, a, (C,), dims="C")
    rows = (B * T, C)
    args = (view(out, rows), view(mean, B * T), view(rstd, B * T), view(inp, rows), weight, bias)
    on_device = check_same_device(op, out=out, mean=mean, rstd=rstd, inp=inp, weight=weight, bias=bias)
    version = pick_version(op, version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device:
        _layernorm_forward_cuda(*args, version)
    else:
        layernorm_forward_cpu(*args)


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, version=None):
    """dinp, dweight, dbias += the gradients of layernorm_forward given dout (see the module docstring).

    dinp, dout, inp: (B, T, C) float32; dweight, dbias, weight: (C,) float32; mean, rstd: (B, T) float32
    (the forward's caches). Numpy runs on the CPU, device arrays on the GPU; `version` one of the module
    docstring's (None: DEFAULT_VERSION).
    """
    op = "layernorm_backward"
    B, T, C = check_array(op, "inp", inp, (None, None, None), dims="B,T,C").shape
    for name, a in (("dinp", dinp), ("dout", dout)):
        check_array(op, name, a, (B, T, C), dims="B,T,C")
    for name, a in (("dweight", dweight), ("dbias", dbias), ("weight", weight)):
        check_array(op, name, a, (C,), dims="C")
    for name, a in (("mean", mean), ("rstd", rstd)):
        check_array(op, name, a, (B, T), dims="B,T")
    rows = (B * T, C)
    args = (view(dinp, rows), dweight, dbias, view(dout, rows), view(inp, rows), weight,
            view(mean, B * T), view(rstd, B * T))
    on_device = check_same_device(op, dinp=dinp, dweight=dweight, dbias=dbias, dout=dout, inp=inp,
                                  weight=weight, mean=mean, rstd=rstd)
    version = pick_version(op, version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device:
        _layernorm_backward_cuda(*args, version)
    else:
        layernorm_backward_cpu(*args, numba.get_num_threads())


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    B, T, C = shape["B"], shape["T"], shape["C"]
    # rows with a mean and scale of their own: a wrong mean or rstd (or one-pass variance) shows
    loc = rng.uniform(-3, 3, (B, T, 1))
    scale = rng.uniform(0.5, 4, (B, T, 1))
    return {"inp": (loc + scale * rng.standard_normal((B, T, C))).astype(np.float32),
            "weight": (1 + 0.5 * rng.standard_normal(C)).astype(np.float32),
            "bias": (0.5 * rng.standard_normal(C)).astype(np.float32),
            "dout": rng.standard_normal((B, T, C)).astype(np.float32)}


def _run(inputs, version="loops"):
    inp, weight = inputs["inp"], inputs["weight"]
    B, T, C = inp.shape
    fwd = {"out": np.zeros_like(inp), "mean": np.zeros((B, T), np.float32),
           "rstd": np.zeros((B, T), np.float32), "inp": inp, "weight": weight, "bias": inputs["bias"]}
    grads = {"dinp": np.zeros_like(inp), "dweight": np.zeros(C, np.float32), "dbias": np.zeros(C, np.float32)}
    if version in CPU_VERSIONS:
        layernorm_forward(**fwd, version=version)
        layernorm_backward(**grads, dout=inputs["dout"], inp=inp, weight=weight, mean=fwd["mean"],
                           rstd=fwd["rstd"], version=version)
        return {k: fwd[k] for k in ("out", "mean", "rstd")} | grads
    res = run_on_device(partial(layernorm_forward, version=version), fwd, ["out", "mean", "rstd"])
    bwd = {**grads, "dout": inputs["dout"], "inp": inp, "weight": weight, "mean": res["mean"], "rstd": res["rstd"]}
    return res | run_on_device(partial(layernorm_backward, version=version), bwd, list(grads))


SPEC = OpSpec(
    name="layernorm",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp"], i["weight"], i["bias"], i["dout"]),
    versions={"cpu": {v: partial(_run, version=v) for v in CPU_VERSIONS},
              "cuda": {v: partial(_run, version=v) for v in CUDA_VERSIONS}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 768}, {"B": 3, "T": 1, "C": 37}, {"B": 2, "T": 7, "C": 65}],
        "cudasim": [{"B": 1, "T": 3, "C": 37}, {"B": 2, "T": 3, "C": 40}, {"B": 1, "T": 2, "C": 300}],
        "cuda": [{"B": 4, "T": 1024, "C": 768}, {"B": 3, "T": 1, "C": 37}, {"B": 2, "T": 7, "C": 1601}],
    },
    backward=("dinp", "dweight", "dbias"),
    teaching=("v1", "v2", "v3"),  # less accurate than PyTorch on long sums: see kernels/accuracy.py
)
