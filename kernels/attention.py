"""Causal multi-head self-attention, from the fused qkv activations (llm.c layout).

Layout. inp (B, T, 3C) holds q = inp[..., 0:C], k = inp[..., C:2C], v = inp[..., 2C:3C]; head h uses
channels h*hs:(h+1)*hs of each, with hs = C / NH. Per (batch b, head h) write Q, K, V for the (T, hs)
matrices; the heads are independent, so everything below is per (b, h).

Forward, with the causal mask (query t1 may only look at keys t2 <= t1):

    preatt[t1, t2] = q[t1] . k[t2] / sqrt(hs)                      (t2 <= t1; masked otherwise)
    att[t1, :]     = softmax(preatt[t1, :])    (masked keys get weight 0, i.e. score -inf)
    out[t1]        = sum_t2 att[t1, t2] v[t2]           -> out[b, t1, h*hs:(h+1)*hs]

The softmax subtracts the row max before exp: exp(s - m) / sum exp(s - m) is the same number and never
overflows. The 1/sqrt(hs) keeps the scores' variance ~1 when q, k have unit-variance entries.

Backward. Given dout = dL/dout, in matrix form per (b, h), with P = att, S = preatt, O = out:

    dv     = P^T dout                      (O = P V is linear in V)
    datt   = dout V^T                      (and in P)
    dpreatt[t1, t2] = att[t1, t2] (datt[t1, t2] - sum_j att[t1, j] datt[t1, j])      (softmax backward)
    dq     = dpreatt K / sqrt(hs)          (S = Q K^T / sqrt(hs))
    dk     = dpreatt^T Q / sqrt(hs)

The softmax line is the Jacobian d att_j / d s_i = att_j (delta_ij - att_i) applied to datt. Masked
positions have att = 0, so their dpreatt is 0 and they pass no gradient: the loops simply stop at
t2 = t1. All of dq, dk, dv land in dinp (B, T, 3C) at the q, k, v channels, accumulated (+=) like llm.c.

What is cached, and why: att (B, NH, T, T). Both dv = att^T dout and the softmax backward need the
softmax *output*; the softmax Jacobian is written in att alone, so the pre-softmax scores preatt are not
needed and are not kept (llm.c keeps both; we keep one T x T tensor, not two).

Online softmax (the flash-attention trick). One pass over the keys, keeping for query t1 a running max m,
running sum l = sum exp(s - m) and running unnormalised output acc = sum exp(s - m) v. A new key with
score s updates

    m' = max(m, s);   c = exp(m - m');   l' = c l + exp(s - m');   acc' = c acc + exp(s - m') v

Multiplying by c = exp(m - m') re-expresses everything summed so far relative to the new max, since
exp(s_j - m) exp(m - m') = exp(s_j - m'). At the end out = acc / l and the log-sum-exp lse = m + log l.
No full score row is ever stored (one number per key is consumed and dropped), and nothing is
approximated: every term ends up exactly exp(s_j - m_final) as in the two-pass softmax, only rounding
differs. With lse saved, att[t1, t2] = exp(preatt[t1, t2] - lse[t1]) can be recomputed on demand;
`attention_forward_online` writes out and lse (B, NH, T) only, never the T x T matrix.
Because a key is consumed and dropped, keys can also be taken a tile at a time from fast shared memory,
each tile loaded once for a whole block of queries: that is the other half of flash attention (CUDA v3).

Flash attention (CUDA v4, FlashAttention-2's scheme): the whole pass, forward and backward, without a
T x T array. The forward runs the online softmax a key *tile* at a time (the tile's scores, their max, one
rescale of the running l and acc per tile) and saves out and lse only. The backward rebuilds each att
entry where it is used, att[t1, t2] = exp(preatt[t1, t2] - lse[t1]), tile by tile from q, k and lse, and
replaces the softmax backward's row term by a short sum: since out[t1] = sum_t2 att[t1, t2] v[t2],

    D[t1] = sum_t2 att[t1, t2] datt[t1, t2] = sum_t2 att[t1, t2] (dout[t1] . v[t2]) = dout[t1] . out[t1]

(hs terms instead of T), and then, per tile, dS = P (dP - D) / sqrt(hs), dv += P^T dout, dk += dS^T Q,
dq += dS K. It needs the forward's out (which the model keeps anyway, it is the attention projection's
input) and lse (B, NH, T): 4 bytes per query row instead of 4T. How it fits the model: the existing entry
points write and read att (B, NH, T, T), which the lessons draw and the parity check compares, so flash
has its own pair with its own buffer, `attention_forward_flash(out, lse, inp, n_head)` and
`attention_backward_flash(dinp, dout, inp, out, lse, n_head)`; att for a lesson or a parity check is
`att_from_lse(inp, lse, n_head)`. In gpt2/kernel_model.py the swap would be an activation "lse"
(L, B, NH, T) in place of "att" (L, B, NH, T, T), the two entry points in its Kernels, and

    k.attention_forward_flash(a["atty"][l], a["lse"][l], a["qkv"][l], NH)
    k.attention_backward_flash(ga["qkv"][l], ga["atty"][l], a["qkv"][l], a["atty"][l], a["lse"][l], NH)

for the two attention lines: that is KernelGPT2(fused=True)'s forward_fused / backward_fused (`gpt2lab train`'s
default on a GPU, with v6; live parity compares att_from_lse's att there).
tests/test_attention_flash.py runs a tiny model with its attention lines swapped this way by hand.

Shapes: inp, dinp (B, T, 3C); out, dout (B, T, C); att (B, NH, T, T); lse (B, NH, T); float32,
C-contiguous. n_head must divide C.

Versions (`version=` of the entry points; DEFAULT_VERSION below, chosen by the rule in docs/kernels.md):

    CPU  "rows"  the readable per-query loops (llm.c's)
         "blas"  the same math as whole-head matrix products, the way PyTorch does it (default)
    CUDA "v1"    naive: one thread per query row, three passes; backward with atomics for dk, dv
         "v2"    online softmax, one pass over the keys (default forward); backward without atomics
         "v3"    online softmax over shared-memory key tiles; backward v2 with blocked sums (default backward)
         "v4"    flash attention: v3's tiles with one rescale per tile, out and lse only; backward recomputing
                 att from lse tile by tile, D = dout . out, no atomics, no scratch. Its own entry points
                 (attention_forward_flash, attention_backward_flash; CPU: the online loops and "flash"
                 loops of the same math). KernelGPT2(fused=True) calls them.
         "v5"    flash attention in registers: v4's math, four threads a row, kernels compiled per head size
                 (on an H200, 8-28x faster than v4 and 0.3x PyTorch eager's attention at B=4, T=64-256:
                 docs/figures.md)
         "v6"    v5 with a lean loader for the tiles inside the head (no test or clamp a load where hs is a power
                 of two >= 16; other head sizes keep v5's loads): v5's results bit for bit, ~12% fewer
                 instructions a tile (SASS). The flash entry points' CUDA default: on an H100 its three kernels
                 took 32.6 ms of a 124M step at T = 1024, v5's 34.5 (docs/figures.md)
         "cublas" q k^T and att v as cuBLAS's batched GEMMs through PyTorch on the same device memory, torch's
                 softmax and its backward between them (kernels/_cublas.py; TF32 off): llm.c's choice, and
                 `gpt2lab train --matmul cublas`'s, with matmul's "cublas"
`attention_forward_online` (out and lse, no T x T att) has one kernel per device.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda, float32, njit, prange, uint64

from . import _cublas
from ._blas import gemm, set_blas_threads, xxgemm
from ._cuda import ceil_div, compensated_add, device_function, lanes_sum, run_on_device, scratch
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_same_device, pick_version
from .check import OpSpec

# The CUDA v2 and online kernels keep a running row (out, or dq/dk/dv) in a per-thread local array, and the
# tiled ones (v3, flash) a tile of TILE rows in shared memory, whose sizes must be compile-time constants:
# head sizes up to HS_MAX. Every GPT-2 (124M to 1.5B) has 64-float heads, and so do the presets here (tiny:
# 32). 64 rather than a roomier 128 because the size is paid whatever the head: at 128 the flash kernels'
# tiles took 32 KiB of shared memory a block, which let only 6 blocks of 32 threads share an SM (ptxas, sm_90;
# docs/figures.md). A config with larger heads is refused on the GPU in one line (_check_hs); the CPU
# versions take any head size.
HS_MAX = 64


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp, dout, n_head):
    """PyTorch, written out: scores, masked_fill(-inf), softmax, att @ v; autograd for dinp."""
    import torch

    def attention(inp):
        B, T, C3 = inp.shape
        C = C3 // 3
        q, k, v = (x.view(B, T, n_head, C // n_head).transpose(1, 2) for x in inp.split(C, dim=2))
        preatt = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # key t2 > query t1
        att = torch.softmax(preatt.masked_fill(mask, float("-inf")), dim=-1)
        return {"out": (att @ v).transpose(1, 2).reshape(B, T, C), "att": att}
    return autograd(attention, {"inp": inp}, ("inp",), {"out": dout})


# ---------------------------------------------------------------- CPU (numba @njit)
# Small helpers, inlined by LLVM. Rows are views of contiguous channels, so the inner loops over hs
# vectorise. No -inf anywhere: with fastmath, LLVM may assume there are no infinities, so the max
# starts at the first key's score (key 0 is visible to every query).
@njit(error_model="numpy", fastmath=True, cache=True)
def _dot(x, y):
    s = np.float32(0.0)
    for i in range(x.size):
        s += x[i] * y[i]
    return s


@njit(error_model="numpy", fastmath=True, cache=True)
def _head_views(x, b, h, hs, C):
    """q, k, v (or dq, dk, dv) of head h in batch b: three (T, hs) views of x (B, T, 3C)."""
    o = h * hs
    return x[b, :, o:o + hs], x[b, :, C + o:C + o + hs], x[b, :, 2 * C + o:2 * C + o + hs]


@njit(error_model="numpy", fastmath=True, cache=True)
def _head_rows(inp, b, t, h, hs, C):
    """Views of q, k, v of head h at (b, t): three (hs,) rows.

    Sliced from inp directly, not as _head_views(...)[t]: going through the 2-D view made the loops over
    these rows several times slower (docs/figures.md), as LLVM then no longer vectorised them."""
    o = h * hs
    return inp[b, t, o:o + hs], inp[b, t, C + o:C + o + hs], inp[b, t, 2 * C + o:2 * C + o + hs]


@njit(error_model="numpy", fastmath=True, cache=True)
def _softmax_prefix(row, n, scale):
    """row[:n] = softmax(row[:n] * scale) (keys 0..t1 of a query, n = t1 + 1); row[n:] = 0 (masked keys)."""
    maxval = row[0]
    for t2 in range(1, n):
        maxval = max(maxval, row[t2])
    expsum = np.float32(0.0)
    for t2 in range(n):  # exp shifted by the max, so it cannot overflow (scale > 0 keeps the max the max)
        e = math.exp((row[t2] - maxval) * scale)
        row[t2] = e
        expsum += e
    inv = np.float32(1.0) / expsum
    for t2 in range(n):
        row[t2] *= inv
    row[n:] = 0.0  # masked keys: weight exactly 0


@njit(error_model="numpy", fastmath=True, cache=True)
def _causal_softmax_row(att_row, inp, b, t1, h, hs, C, scale):
    """att_row[:t1+1] = softmax(q[t1] . k[:t1+1] * scale), att_row[t1+1:] = 0."""
    q = _head_rows(inp, b, t1, h, hs, C)[0]
    for t2 in range(t1 + 1):
        att_row[t2] = _dot(q, _head_rows(inp, b, t2, h, hs, C)[1])
    _softmax_prefix(att_row, t1 + 1, scale)


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _attention_forward_cpu(out, att, inp, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bht in prange(B * n_head * T):  # every (b, h, t1) query row is independent
        b, h, t1 = bht // (n_head * T), (bht // T) % n_head, bht % T
        att_row = att[b, h, t1]
        _causal_softmax_row(att_row, inp, b, t1, h, hs, C, scale)
        o = out[b, t1, h * hs:(h + 1) * hs]
        o[:] = 0.0
        for t2 in range(t1 + 1):  # out = att @ v
            v = _head_rows(inp, b, t2, h, hs, C)[2]
            a = att_row[t2]
            for i in range(hs):
                o[i] += a * v[i]


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _attention_backward_cpu(dinp, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    # Parallel over (b, h): key t2's dk, dv collect from every query t1 >= t2, so one worker owning a
    # whole (b, h) needs no atomics (and each (b, h) writes disjoint channels of dinp).
    for bh in prange(B * n_head):
        b, h = bh // n_head, bh % n_head
        datt = np.empty(T, np.float32)
        for t1 in range(T):
            att_row = att[b, h, t1]
            do = dout[b, t1, h * hs:(h + 1) * hs]
            q, dq = _head_rows(inp, b, t1, h, hs, C)[0], _head_rows(dinp, b, t1, h, hs, C)[0]
            att_datt = np.float32(0.0)
            for t2 in range(t1 + 1):  # datt = dout v^T, and dv += att^T dout
                v, dv = _head_rows(inp, b, t2, h, hs, C)[2], _head_rows(dinp, b, t2, h, hs, C)[2]
                datt[t2] = _dot(do, v)
                att_datt += att_row[t2] * datt[t2]
                a = att_row[t2]
                for i in range(hs):
                    dv[i] += a * do[i]
            for t2 in range(t1 + 1):  # softmax backward, then through preatt = q k^T * scale
                dpreatt = att_row[t2] * (datt[t2] - att_datt) * scale
                k, dk = _head_rows(inp, b, t2, h, hs, C)[1], _head_rows(dinp, b, t2, h, hs, C)[1]
                for i in range(hs):
                    dq[i] += dpreatt * k[i]
                    dk[i] += dpreatt * q[i]


# "blas": the same math as whole-head matrix products, the way PyTorch does it. Per (b, h) the rows version's
# loops become two BLAS calls forward (S = Q K^T and O = P V, the row softmax between them) and four backward.
# The masked upper triangle of S is computed and thrown away, twice the multiply-adds of the loops, but
# BLAS runs them many times faster than scalar dot products. q, k, v and their gradients are strided views
# of inp and dinp (row stride 3C): no copies. One single-threaded BLAS call per numba thread, as in matmul.
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _attention_forward_blas(out, att, inp, n_head, xxgemm, set_blas_threads):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bh in prange(B * n_head):
        set_blas_threads(1)
        b, h = bh // n_head, bh % n_head
        q, k, v = _head_views(inp, b, h, hs, C)
        P = att[b, h]
        gemm(P, q, k, False, True, 0.0, xxgemm)                         # S = Q K^T (unscaled)
        for t1 in range(T):
            _softmax_prefix(P[t1], t1 + 1, scale)                         # P = softmax(S / sqrt(hs)), masked
        gemm(out[b, :, h * hs:(h + 1) * hs], P, v, False, False, 0.0, xxgemm)  # O = P V


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _attention_backward_blas(dinp, dout, inp, att, n_head, xxgemm, set_blas_threads):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bh in prange(B * n_head):  # (b, h) pairs own disjoint channels of dinp: no races
        set_blas_threads(1)
        b, h = bh // n_head, bh % n_head
        q, k, v = _head_views(inp, b, h, hs, C)
        dq, dk, dv = _head_views(dinp, b, h, hs, C)
        do = dout[b, :, h * hs:(h + 1) * hs]
        P = att[b, h]
        dS = np.empty((T, T), np.float32)
        gemm(dS, do, v, False, True, 0.0, xxgemm)                        # dP = dout V^T
        gemm(dv, P, do, True, False, 1.0, xxgemm)                        # dv += P^T dout
        for t1 in range(T):  # softmax backward, in place: dS = P (dP - rowsum(P dP)) / sqrt(hs)
            att_datt = np.float32(0.0)
            for t2 in range(t1 + 1):
                att_datt += P[t1, t2] * dS[t1, t2]
            for t2 in range(t1 + 1):
                dS[t1, t2] = P[t1, t2] * (dS[t1, t2] - att_datt) * scale
            dS[t1, t1 + 1:] = 0.0  # masked keys pass no gradient
        gemm(dq, dS, k, False, False, 1.0, xxgemm)                       # dq += dS K
        gemm(dk, dS, q, True, False, 1.0, xxgemm)                        # dk += dS^T Q


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _attention_forward_online_cpu(out, lse, inp, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bht in prange(B * n_head * T):
        b, h, t1 = bht // (n_head * T), (bht // T) % n_head, bht % T
        q = _head_rows(inp, b, t1, h, hs, C)[0]
        acc = out[b, t1, h * hs:(h + 1) * hs]  # the running sum lives in the output row itself
        # key 0 starts the running state: m = s0, l = exp(0) = 1, acc = v0
        m = _dot(q, _head_rows(inp, b, 0, h, hs, C)[1]) * scale
        l = np.float32(1.0)
        acc[:] = _head_rows(inp, b, 0, h, hs, C)[2]
        for t2 in range(1, t1 + 1):  # one pass over the keys; no score row is kept
            k, v = _head_rows(inp, b, t2, h, hs, C)[1:]
            s = _dot(q, k) * scale
            m_new = max(m, s)
            c = math.exp(m - m_new)  # rescale the old sums to the new max (1 when it did not move)
            p = math.exp(s - m_new)
            l = c * l + p
            for i in range(hs):
                acc[i] = c * acc[i] + p * v[i]
            m = m_new
        inv = np.float32(1.0) / l
        for i in range(hs):
            acc[i] *= inv
        lse[b, h, t1] = m + math.log(l)


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _attention_backward_flash_cpu(dinp, dout, inp, out, lse, n_head):
    """The flash backward's math, readable: att[t1, t2] = exp(preatt - lse[t1]) recomputed where it is
    used, and the softmax backward's row term D[t1] = dout[t1] . out[t1] (see the module docstring)."""
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = np.float32(1.0 / math.sqrt(hs))
    for bh in prange(B * n_head):  # one worker owns a whole (b, h): dk, dv need no atomics
        b, h = bh // n_head, bh % n_head
        for t1 in range(T):
            q, dq = _head_rows(inp, b, t1, h, hs, C)[0], _head_rows(dinp, b, t1, h, hs, C)[0]
            do = dout[b, t1, h * hs:(h + 1) * hs]
            D = _dot(do, out[b, t1, h * hs:(h + 1) * hs])  # = sum_t2 att datt: hs terms, not T
            for t2 in range(t1 + 1):
                k, v = _head_rows(inp, b, t2, h, hs, C)[1:]
                dk, dv = _head_rows(dinp, b, t2, h, hs, C)[1:]
                p = math.exp(_dot(q, k) * scale - lse[b, h, t1])   # att, rebuilt
                ds = p * (_dot(do, v) - D) * scale                  # dpreatt, through the 1/sqrt(hs)
                for i in range(hs):
                    dv[i] += p * do[i]
                    dq[i] += ds * k[i]
                    dk[i] += ds * q[i]


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Every kernel here runs one thread per (b, h, t) row; neighbouring threads of a warp are neighbouring
# t of the same head, so they read the same k, v rows at the same time (served by the cache).
# The helpers are `device_function`s (_cuda.py), inlined by NVVM: the code reads as small functions, and the
# kernels compile as if written in one piece.
@device_function
def _row_index(idx, T, n_head):
    return idx // (n_head * T), (idx // T) % n_head, idx % T


@device_function
def _score(inp, b, t1, t2, qo, ko, hs, scale):
    """preatt = q[t1] . k[t2] * scale; qo, ko: the channel offsets of this head's q and k."""
    s = float32(0.0)
    for i in range(hs):
        s += inp[b, t1, qo + i] * inp[b, t2, ko + i]
    return s * scale


@device_function
def _online_row(acc, inp, b, t1, h, hs, C, scale):
    """The online softmax over keys 0..t1 of query t1: fills acc[:hs] = sum exp(s - m) v, returns (m, l).

    One pass, three running numbers per row (m, l and the acc vector): the full score row is never
    stored. Exact: each old term is rescaled by exp(m_old - m_new), so at the end every term is
    exp(s_j - m_final), precisely what the two-pass softmax computes.
    """
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    m = _score(inp, b, t1, 0, qo, ko, hs, scale)  # key 0 starts the state: l = exp(0) = 1, acc = v0
    l = float32(1.0)
    for i in range(hs):
        acc[i] = inp[b, 0, vo + i]
    for t2 in range(1, t1 + 1):
        s = _score(inp, b, t1, t2, qo, ko, hs, scale)
        m_new = max(m, s)
        c = math.exp(m - m_new)  # re-express the old sums relative to the new max
        p = math.exp(s - m_new)
        l = c * l + p
        for i in range(hs):
            acc[i] = c * acc[i] + p * inp[b, t2, vo + i]
        m = m_new
    return m, l


# v1, naive: three passes over the keys, using the att row itself as scratch for the scores.
@cuda_kernel
def attention_forward_kernel_v1(out, att, inp, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t1 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    maxval = _score(inp, b, t1, 0, qo, ko, hs, scale)
    for t2 in range(t1 + 1):  # pass 1: scores and their max
        s = _score(inp, b, t1, t2, qo, ko, hs, scale)
        att[b, h, t1, t2] = s
        maxval = max(maxval, s)
    expsum = float32(0.0)
    for t2 in range(t1 + 1):  # pass 2: exp and their sum
        e = math.exp(att[b, h, t1, t2] - maxval)
        att[b, h, t1, t2] = e
        expsum += e
    inv = float32(1.0) / expsum
    for i in range(hs):
        out[b, t1, qo + i] = 0.0
    for t2 in range(T):  # pass 3: normalise, zero the masked keys, out = att @ v
        if t2 > t1:
            att[b, h, t1, t2] = 0.0
            continue
        a = att[b, h, t1, t2] * inv
        att[b, h, t1, t2] = a
        for i in range(hs):
            out[b, t1, qo + i] += a * inp[b, t2, vo + i]


# v2, online softmax: one pass over the keys for out (the running m, l and acc live in registers and
# local memory), then one more pass writing att = exp(s - m) / l for the backward. Better than v1: v1
# writes its T-long score row to global memory and reads it back twice, and read-modify-writes out in
# global memory per key; v2 touches att once, a pure store, and pays for it by computing each score twice
# (arithmetic on k rows that the cache already holds).
@cuda_kernel
def attention_forward_kernel_v2(out, att, inp, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t1 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    acc = cuda.local.array(HS_MAX, float32)
    m, l = _online_row(acc, inp, b, t1, h, hs, C, scale)
    inv = float32(1.0) / l
    for i in range(hs):
        out[b, t1, h * hs + i] = acc[i] * inv
    for t2 in range(T):  # the cache for the backward, from the final m and l
        if t2 <= t1:
            att[b, h, t1, t2] = math.exp(_score(inp, b, t1, t2, h * hs, C + h * hs, hs, scale) - m) * inv
        else:
            att[b, h, t1, t2] = 0.0


# v3, online softmax over shared-memory tiles (flash attention's loop): a block of TILE threads owns TILE
# consecutive queries of one (b, h); it walks the key tiles 0..its own, loading each tile of k and v rows
# into shared memory once, cooperatively and coalesced, and every thread runs its online update from
# there. Better than v2: each k, v row is read from global memory once per TILE queries, not once per
# query, and key tiles wholly after the block's queries (the masked triangle) are never loaded. The
# online softmax is what makes the tiling possible: a tile's keys are consumed and dropped, and only
# m, l and acc carry over. att is written by a second sweep over the tiles with the final m and l.
TILE = 32


@device_function
def _load_tile(tile, inp, b, t0, off, hs, T):
    """tile[j, :hs] = inp[b, t0 + j, off:off + hs]; consecutive threads read consecutive channels."""
    for e in range(cuda.threadIdx.x, TILE * hs, TILE):
        j, i = e // hs, e % hs
        if t0 + j < T:
            tile[j, i] = inp[b, t0 + j, off + i]


@cuda_kernel
def attention_forward_kernel_v3(out, att, inp, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    b, h = cuda.blockIdx.y // n_head, cuda.blockIdx.y % n_head
    t1 = cuda.blockIdx.x * TILE + cuda.threadIdx.x  # may be >= T: such threads still join the barriers
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    k_tile = cuda.shared.array((TILE, HS_MAX), float32)
    v_tile = cuda.shared.array((TILE, HS_MAX), float32)
    q = cuda.local.array(HS_MAX, float32)
    acc = cuda.local.array(HS_MAX, float32)
    for i in range(hs):
        q[i] = inp[b, t1, qo + i] * scale if t1 < T else float32(0.0)
        acc[i] = 0.0
    m = float32(-math.inf)  # no fastmath in CUDA kernels: exp(-inf) = 0 makes the first rescale a no-op
    l = float32(0.0)
    for kt in range(cuda.blockIdx.x + 1):  # key tiles up to the diagonal one
        cuda.syncthreads()  # everyone is done with the previous tile
        _load_tile(k_tile, inp, b, kt * TILE, ko, hs, T)
        _load_tile(v_tile, inp, b, kt * TILE, vo, hs, T)
        cuda.syncthreads()
        n_keys = min(TILE, t1 - kt * TILE + 1) if t1 < T else 0  # keys t2 = kt*TILE + j <= t1
        for j in range(n_keys):
            s = float32(0.0)
            for i in range(hs):
                s += q[i] * k_tile[j, i]
            m_new = max(m, s)
            c = math.exp(m - m_new)
            p = math.exp(s - m_new)
            l = c * l + p
            for i in range(hs):
                acc[i] = c * acc[i] + p * v_tile[j, i]
            m = m_new
    inv = float32(1.0) / l if t1 < T else float32(0.0)
    if t1 < T:
        for i in range(hs):
            out[b, t1, qo + i] = acc[i] * inv
    for kt in range(cuda.blockIdx.x + 1):  # second sweep: att = exp(s - m) / l from the final m, l
        cuda.syncthreads()
        _load_tile(k_tile, inp, b, kt * TILE, ko, hs, T)
        cuda.syncthreads()
        for j in range(TILE):
            t2 = kt * TILE + j
            if t1 < T and t2 < T:
                s = float32(0.0)
                for i in range(hs):
                    s += q[i] * k_tile[j, i]
                att[b, h, t1, t2] = math.exp(s - m) * inv if t2 <= t1 else float32(0.0)
    if t1 < T:
        for t2 in range((cuda.blockIdx.x + 1) * TILE, T):  # key tiles past the diagonal: masked
            att[b, h, t1, t2] = 0.0


# The memory-light forward: out and lse (B, NH, T) only. att is never materialised: 4 bytes per query
# row instead of 4 T (at T=1024, NH=12, B=8: 0.4 MB instead of 400 MB).
@cuda_kernel
def attention_forward_online_kernel(out, lse, inp, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t1 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    acc = cuda.local.array(HS_MAX, float32)
    m, l = _online_row(acc, inp, b, t1, h, hs, C, scale)
    inv = float32(1.0) / l
    for i in range(hs):
        out[b, t1, h * hs + i] = acc[i] * inv
    lse[b, h, t1] = m + math.log(l)


@device_function
def _datt(dout, inp, b, t1, t2, ho, vo, hs):
    """datt[t1, t2] = dout[t1] . v[t2] (ho: this head's channel offset in dout, vo: in inp)."""
    s = float32(0.0)
    for i in range(hs):
        s += dout[b, t1, ho + i] * inp[b, t2, vo + i]
    return s


@device_function
def _att_datt(att, dout, inp, b, h, t1, hs, C):
    """sum_t2 att[t1, t2] datt[t1, t2], the softmax backward's row term."""
    s = float32(0.0)
    for t2 in range(t1 + 1):
        s += att[b, h, t1, t2] * _datt(dout, inp, b, t1, t2, h * hs, 2 * C + h * hs, hs)
    return s


# Backward v1: one thread per query row t1. dq[t1] is this thread's own; dk[t2], dv[t2] receive from
# every query t1 >= t2, i.e. from many threads, so they are added with atomics. datt is recomputed in
# the second pass instead of stored: no T x T scratch.
@cuda_kernel
def attention_backward_kernel_v1(dinp, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t1 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    att_datt = _att_datt(att, dout, inp, b, h, t1, hs, C)
    for t2 in range(t1 + 1):
        a = att[b, h, t1, t2]
        dpreatt = a * (_datt(dout, inp, b, t1, t2, qo, vo, hs) - att_datt) * scale
        for i in range(hs):
            dinp[b, t1, qo + i] += dpreatt * inp[b, t2, ko + i]
            cuda.atomic.add(dinp, (b, t2, ko + i), dpreatt * inp[b, t1, qo + i])
            cuda.atomic.add(dinp, (b, t2, vo + i), a * dout[b, t1, qo + i])


# Backward v2, no atomics (deterministic, and no contention on hot key rows), in two kernels that share
# one small scratch, the softmax backward's row term D[t1] = sum_t2 att[t1, t2] datt[t1, t2] (B, NH, T):
# with it, any dpreatt[t1, t2] = att (datt - D[t1]) / sqrt(hs) is recomputed where it is needed, so no
# T x T dpreatt is ever written (the flash-attention backward keeps the same per-row D). Gradients are
# summed in per-thread local arrays and written once, not read-modify-written in global memory per key.
# (a) one thread per query row t1: D[t1] and dq[t1] = sum_t2 dpreatt[t1, t2] k[t2].
@cuda_kernel
def attention_backward_dq_kernel_v2(dinp, att_datt, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t1 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    row = _att_datt(att, dout, inp, b, h, t1, hs, C)
    att_datt[b, h, t1] = row
    dq = cuda.local.array(HS_MAX, float32)
    for i in range(hs):
        dq[i] = 0.0
    for t2 in range(t1 + 1):
        d = att[b, h, t1, t2] * (_datt(dout, inp, b, t1, t2, qo, vo, hs) - row) * scale
        for i in range(hs):
            dq[i] += d * inp[b, t2, ko + i]
    for i in range(hs):
        dinp[b, t1, qo + i] += dq[i]


# (b) one thread per key row t2, gathering down its column over the queries t1 >= t2 that see it:
# dk[t2] = sum_t1 dpreatt[t1, t2] q[t1] and dv[t2] = sum_t1 att[t1, t2] dout[t1]. Runs after (a).
@cuda_kernel
def attention_backward_dkv_kernel_v2(dinp, att_datt, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t2 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    dk = cuda.local.array(HS_MAX, float32)
    dv = cuda.local.array(HS_MAX, float32)
    for i in range(hs):
        dk[i] = 0.0
        dv[i] = 0.0
    for t1 in range(t2, T):
        a = att[b, h, t1, t2]
        d = a * (_datt(dout, inp, b, t1, t2, qo, vo, hs) - att_datt[b, h, t1]) * scale
        for i in range(hs):
            dk[i] += d * inp[b, t1, qo + i]
            dv[i] += a * dout[b, t1, qo + i]
    for i in range(hs):
        dinp[b, t2, ko + i] += dk[i]
        dinp[b, t2, vo + i] += dv[i]


# Backward v3: v2 with blocked sums. v2 adds up to T terms (keys for D and dq, queries for dk and dv) one
# by one into one float32 per channel, and its error grows with T: in the simulator at T = 512, 3.3x
# (dq) and 2.6x (dv) PyTorch float32's error (python -m gpt2lab.kernels.accuracy), rising with T. v3 sums
# each block of ATT_BLOCK terms into a fresh partial (`part`), then adds the partials: ~ATT_BLOCK + T /
# ATT_BLOCK roundings instead of T. D's blocks are joined by a compensated sum (one scalar per row, and
# every dpreatt of the row inherits D's error). Cost: one more local array per gradient row.
ATT_BLOCK = 32


@device_function
def _att_datt_blocked(att, dout, inp, b, h, t1, hs, C):
    """_att_datt summed in blocks of ATT_BLOCK keys, the blocks joined by a compensated sum."""
    total, comp = float32(0.0), float32(0.0)
    for t0 in range(0, t1 + 1, ATT_BLOCK):
        part = float32(0.0)
        for t2 in range(t0, min(t0 + ATT_BLOCK, t1 + 1)):
            part += att[b, h, t1, t2] * _datt(dout, inp, b, t1, t2, h * hs, 2 * C + h * hs, hs)
        total, comp = compensated_add(total, comp, part)
    return total + comp


@cuda_kernel
def attention_backward_dq_kernel_v3(dinp, att_datt, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t1 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    row = _att_datt_blocked(att, dout, inp, b, h, t1, hs, C)
    att_datt[b, h, t1] = row
    dq = cuda.local.array(HS_MAX, float32)
    part = cuda.local.array(HS_MAX, float32)
    for i in range(hs):
        dq[i] = 0.0
    for t0 in range(0, t1 + 1, ATT_BLOCK):
        for i in range(hs):
            part[i] = 0.0
        for t2 in range(t0, min(t0 + ATT_BLOCK, t1 + 1)):
            d = att[b, h, t1, t2] * (_datt(dout, inp, b, t1, t2, qo, vo, hs) - row) * scale
            for i in range(hs):
                part[i] += d * inp[b, t2, ko + i]
        for i in range(hs):
            dq[i] += part[i]
    for i in range(hs):
        dinp[b, t1, qo + i] += dq[i]


@cuda_kernel
def attention_backward_dkv_kernel_v3(dinp, att_datt, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    idx = cuda.grid(1)
    if idx >= B * n_head * T:
        return
    b, h, t2 = _row_index(idx, T, n_head)
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    dk = cuda.local.array(HS_MAX, float32)
    dv = cuda.local.array(HS_MAX, float32)
    dk_part = cuda.local.array(HS_MAX, float32)
    dv_part = cuda.local.array(HS_MAX, float32)
    for i in range(hs):
        dk[i] = 0.0
        dv[i] = 0.0
    for t0 in range(t2, T, ATT_BLOCK):
        for i in range(hs):
            dk_part[i] = 0.0
            dv_part[i] = 0.0
        for t1 in range(t0, min(t0 + ATT_BLOCK, T)):
            a = att[b, h, t1, t2]
            d = a * (_datt(dout, inp, b, t1, t2, qo, vo, hs) - att_datt[b, h, t1]) * scale
            for i in range(hs):
                dk_part[i] += d * inp[b, t1, qo + i]
                dv_part[i] += a * dout[b, t1, qo + i]
        for i in range(hs):
            dk[i] += dk_part[i]
            dv[i] += dv_part[i]
    for i in range(hs):
        dinp[b, t2, ko + i] += dk[i]
        dinp[b, t2, vo + i] += dv[i]


# v4, flash attention (FlashAttention-2's scheme): out and the per-row lse (B, NH, T) forward, and a
# backward that recomputes att from q, k and lse tile by tile. No T x T array is ever stored, in either
# direction: memory O(T) per head instead of O(T^2) (at GPT-2's T = 1024, NH = 12, B = 8: 0.4 MB of lse
# instead of 400 MB of att), and the backward reads q, k, v, out, dout, lse instead of att (B, NH, T, T).
# Its own entry points (attention_forward_flash, attention_backward_flash): they need the lse buffer and the
# forward's out, not att.
#
# Forward: v3's grid and tiles (a block of TILE threads = TILE queries of one (b, h), key tiles in shared
# memory), but the online softmax is taken a tile at a time, as flash attention does, not a key at a time:
# a thread first computes its TILE scores of the tile into registers and their max, rescales its running
# (l, acc) once to the new max, then sums the tile's exp(s - m) and exp(s - m) v into fresh partials. v3
# rescales acc (hs multiplies) and calls exp twice per key; v4 once per tile and once per key. The fresh
# per-tile partials also bound the rounding: ~TILE + T / TILE additions into each running number, not T.
@cuda_kernel
def attention_forward_flash_kernel(out, lse, inp, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    b, h = cuda.blockIdx.y // n_head, cuda.blockIdx.y % n_head
    t1 = cuda.blockIdx.x * TILE + cuda.threadIdx.x  # may be >= T: such threads still join the barriers
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    k_tile = cuda.shared.array((TILE, HS_MAX), float32)
    v_tile = cuda.shared.array((TILE, HS_MAX), float32)
    q = cuda.local.array(HS_MAX, float32)
    acc = cuda.local.array(HS_MAX, float32)
    part = cuda.local.array(HS_MAX, float32)
    s_tile = cuda.local.array(TILE, float32)
    for i in range(hs):
        q[i] = inp[b, t1, qo + i] * scale if t1 < T else float32(0.0)
        acc[i] = 0.0
    m = float32(-math.inf)
    l = float32(0.0)
    for kt in range(cuda.blockIdx.x + 1):  # key tiles up to the diagonal one
        cuda.syncthreads()  # everyone is done with the previous tile
        _load_tile(k_tile, inp, b, kt * TILE, ko, hs, T)
        _load_tile(v_tile, inp, b, kt * TILE, vo, hs, T)
        cuda.syncthreads()
        n_keys = min(TILE, t1 - kt * TILE + 1) if t1 < T else 0  # keys t2 = kt*TILE + j <= t1
        if n_keys > 0:
            m_new = m
            for j in range(n_keys):  # the tile's scores, and their max
                s = float32(0.0)
                for i in range(hs):
                    s += q[i] * k_tile[j, i]
                s_tile[j] = s
                m_new = max(m_new, s)
            c = float32(math.exp(m - m_new))  # rescale the old sums once per tile (0 at the first tile)
            l_part = float32(0.0)
            for i in range(hs):
                part[i] = 0.0
            for j in range(n_keys):
                p = float32(math.exp(s_tile[j] - m_new))
                l_part += p
                for i in range(hs):
                    part[i] += p * v_tile[j, i]
            l = c * l + l_part
            for i in range(hs):
                acc[i] = c * acc[i] + part[i]
            m = m_new
    if t1 < T:
        inv = float32(1.0) / l
        for i in range(hs):
            out[b, t1, qo + i] = acc[i] * inv
        lse[b, h, t1] = m + math.log(l)


# Backward (FlashAttention-2's): with P = att = exp(S - lse) rebuilt on the fly and the row term
# D[t1] = sum_t2 att datt = dout[t1] . out[t1] (the same number: out[t1] = sum_t2 att v[t2], so
# dout . out = sum_t2 att (dout . v) = sum_t2 att datt), a sum over hs channels instead of over T keys,
#     dP = dout V^T,  dS = P (dP - D) / sqrt(hs),  dv = P^T dout,  dk = dS^T Q,  dq = dS K.
# Two kernels, no atomics (deterministic) and no scratch: (a) one thread per key row t2, TILE keys per block,
# walking the query tiles from the diagonal one down, each tile of q (scaled), dout, lse and D loaded once
# into shared memory for the whole block: dk, dv. (b) one thread per query row t1, TILE queries per block,
# walking the key tiles up to the diagonal (the forward's loop): dq. Both recompute the scores exactly as
# the forward did (q * scale, then the same dot in the same order), so exp(s - lse) is the forward's att.
# Accuracy: dk, dv sum over T queries and dq over T keys; each tile's TILE terms go into a fresh partial,
# the partials into the running sum (~TILE + T / TILE roundings), as v3's blocked sums.
@cuda_kernel
def attention_backward_flash_dkv_kernel(dinp, dout, inp, out, lse, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    b, h = cuda.blockIdx.y // n_head, cuda.blockIdx.y % n_head
    tid = cuda.threadIdx.x
    t2 = cuda.blockIdx.x * TILE + tid  # this thread's key; may be >= T (it still joins the barriers)
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    q_tile = cuda.shared.array((TILE, HS_MAX), float32)
    do_tile = cuda.shared.array((TILE, HS_MAX), float32)
    lse_tile = cuda.shared.array(TILE, float32)
    d_tile = cuda.shared.array(TILE, float32)
    k = cuda.local.array(HS_MAX, float32)
    v = cuda.local.array(HS_MAX, float32)
    dk = cuda.local.array(HS_MAX, float32)
    dv = cuda.local.array(HS_MAX, float32)
    dk_part = cuda.local.array(HS_MAX, float32)
    dv_part = cuda.local.array(HS_MAX, float32)
    for i in range(hs):
        k[i] = inp[b, t2, ko + i] if t2 < T else float32(0.0)
        v[i] = inp[b, t2, vo + i] if t2 < T else float32(0.0)
        dk[i] = 0.0
        dv[i] = 0.0
    for qt in range(cuda.blockIdx.x, (T + TILE - 1) // TILE):  # query tiles from the diagonal one on
        cuda.syncthreads()  # everyone is done with the previous tile
        for e in range(tid, TILE * hs, TILE):  # coalesced: consecutive threads, consecutive channels
            j, i = e // hs, e % hs
            if qt * TILE + j < T:
                q_tile[j, i] = inp[b, qt * TILE + j, qo + i] * scale
                do_tile[j, i] = dout[b, qt * TILE + j, qo + i]
        t1 = qt * TILE + tid  # thread tid brings query row t1's lse and D
        if t1 < T:
            lse_tile[tid] = lse[b, h, t1]
            d = float32(0.0)
            for i in range(hs):
                d += dout[b, t1, qo + i] * out[b, t1, qo + i]
            d_tile[tid] = d
        cuda.syncthreads()
        if t2 < T:
            for i in range(hs):
                dk_part[i] = 0.0
                dv_part[i] = 0.0
            for j in range(max(0, t2 - qt * TILE), min(TILE, T - qt * TILE)):  # queries t1 >= t2, t1 < T
                s = float32(0.0)
                dp = float32(0.0)
                for i in range(hs):
                    s += q_tile[j, i] * k[i]
                    dp += do_tile[j, i] * v[i]
                p = float32(math.exp(s - lse_tile[j]))
                ds = p * (dp - d_tile[j])
                for i in range(hs):
                    dv_part[i] += p * do_tile[j, i]
                    dk_part[i] += ds * q_tile[j, i]  # q is scaled: this is dS^T Q / sqrt(hs)
            for i in range(hs):
                dk[i] += dk_part[i]
                dv[i] += dv_part[i]
    if t2 < T:
        for i in range(hs):
            dinp[b, t2, ko + i] += dk[i]
            dinp[b, t2, vo + i] += dv[i]


@cuda_kernel
def attention_backward_flash_dq_kernel(dinp, dout, inp, out, lse, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    scale = float32(1.0) / math.sqrt(float32(hs))
    b, h = cuda.blockIdx.y // n_head, cuda.blockIdx.y % n_head
    t1 = cuda.blockIdx.x * TILE + cuda.threadIdx.x
    qo, ko, vo = h * hs, C + h * hs, 2 * C + h * hs
    k_tile = cuda.shared.array((TILE, HS_MAX), float32)
    v_tile = cuda.shared.array((TILE, HS_MAX), float32)
    q = cuda.local.array(HS_MAX, float32)
    do = cuda.local.array(HS_MAX, float32)
    dq = cuda.local.array(HS_MAX, float32)
    part = cuda.local.array(HS_MAX, float32)
    row_lse = lse[b, h, t1] if t1 < T else float32(0.0)
    d = float32(0.0)
    for i in range(hs):
        q[i] = inp[b, t1, qo + i] * scale if t1 < T else float32(0.0)
        do[i] = dout[b, t1, qo + i] if t1 < T else float32(0.0)
        d += do[i] * out[b, t1, qo + i] if t1 < T else float32(0.0)
        dq[i] = 0.0
    for kt in range(cuda.blockIdx.x + 1):  # key tiles up to the diagonal one
        cuda.syncthreads()
        _load_tile(k_tile, inp, b, kt * TILE, ko, hs, T)
        _load_tile(v_tile, inp, b, kt * TILE, vo, hs, T)
        cuda.syncthreads()
        n_keys = min(TILE, t1 - kt * TILE + 1) if t1 < T else 0
        for i in range(hs):
            part[i] = 0.0
        for j in range(n_keys):
            s = float32(0.0)
            dp = float32(0.0)
            for i in range(hs):
                s += q[i] * k_tile[j, i]
                dp += do[i] * v_tile[j, i]
            ds = float32(math.exp(s - row_lse)) * (dp - d)
            for i in range(hs):
                part[i] += ds * k_tile[j, i]
        for i in range(hs):
            dq[i] += part[i]
    if t1 < T:
        for i in range(hs):
            dinp[b, t1, qo + i] += dq[i] * scale


# v5, flash attention in registers: v4's math and loops, with each row's vectors in registers. v4 keeps a
# thread's q, acc and partials (hs floats each) in cuda.local arrays indexed up to the runtime head size, so
# they live in local memory (ptxas: stack frames of 896 to 1536 bytes a thread), and most multiply-adds of
# the inner loops also load or store there. Registers need two things: loop counts known when the kernel
# compiles (the loops unroll, every index becomes a constant), and few enough floats a thread (v4's dk/dv
# kernel holds six hs-long rows, 384 floats at hs = 64, past the 255 registers a thread may have). So:
#   * one set of kernels per head size (flash_v5_kernels(hs), compiled on first use; GPT-2's hs is 64);
#   * LANES = 4 threads share a row, each owning a quarter of its channels (96 floats a thread in the dk/dv
#     kernel at hs = 64). A dot product over the row is the four lanes' partial sums, added with two warp
#     shuffles (_cuda.lanes_sum); every lane ends with the same bits (a + b = b + a), so the four agree on every
#     score, max and exp without talking again.
#   * lane l owns the runs of CHUNK = 4 channels l, l + 4, l + 8, ... (channels 4l..4l+3, 16 + 4l.., ...), and
#     the tiles are 16-byte aligned: each run is one 128-bit shared load, 4 multiply-adds a load where one
#     channel a lane would need a load each (a review of the first draft found that; ptxas's shared-load rate
#     would have capped it near a quarter of the FP32 peak). A row's four lanes read 64 adjacent bytes and a
#     warp's eight rows the same key (a broadcast): no bank conflict.
#   * every thread runs every key of a tile (the shuffles need the whole warp); a key outside the causal
#     mask or past T is skipped by a predicate, not by a shorter loop. Tiles are loaded with zeros past T
#     and past hs, so no stale shared memory ever enters the arithmetic (0 * NaN would be NaN); the tile
#     loads read a clamped address and select the zero after (_clamped_load), so none waits behind a branch.
#   * the query-tile kernels (forward, dq) take the last tile first (_last_first): the longest blocks start
#     first.
# Blocks of FLASH_ROWS = TILE rows x LANES = 128 threads on v4's grid (in the simulator 8 rows, one warp:
# the simulator runs each thread in Python). Scores are made the same way in all three kernels
# (the same products in the same order, then the same two shuffles), so exp(s - lse) in the backward is
# exactly the forward's att, as in v4; the sums keep v4's per-tile partials, and the dk/dv kernel takes D
# from the tile's dout (one read of dout, not two). Launch bounds (FLASH_BLOCKS_PER_SM) cap the registers
# where ptxas spills nothing: at hs = 64, 96 (forward; its tile of 32 scores is in local memory: 64 accesses a
# tile against 1024 multiply-adds), 254 (dk, dv) and 128 (dq) registers a thread, so 5, 2 and 4 blocks of 128
# threads share an SM. The dk/dv kernel at 3 blocks spilled 80-390 bytes whatever its loads' order. (ptxas
# 13.0, sm_90.) On an H200 at B=4, NH=12, T=64 and 256 (forward + backward): 0.45 and 0.54 ms, v4's 3.8 and
# 15.0, PyTorch eager's attention 1.6 (docs/figures.md). v6, the flash pair's CUDA default, is v5 with a leaner
# tile loader (below, LEAN).
LANES_SHIFT = 2
LANES = 1 << LANES_SHIFT            # threads a row (a power of two: a row's lanes are adjacent, in one warp)
CHUNK = 4                           # floats a lane reads from a tile row at once: one 16-byte shared load
FLASH_ROWS = TILE                   # rows (queries or keys) a block on a GPU: v4's grid
FLASH_ROWS_SIMULATED = 8            # in numba's simulator: 32 simulated threads a block, not 128 (8-key tiles)
FLASH_THREADS = FLASH_ROWS * LANES
FLASH_BLOCKS_PER_SM = {"forward": 5, "backward_dkv": 2, "backward_dq": 4}  # the launch bounds above


@device_function
def _row_lane():
    """(row, lane) of this thread: LANES adjacent threads share a row. A shift and a mask, not // and %: the
    compiler then knows both are >= 0, and drops the negative-index wraparound from every array index (with
    it, the dk/dv kernel took 243 registers a thread; ptxas 13.0, sm_90)."""
    return cuda.threadIdx.x >> LANES_SHIFT, cuda.threadIdx.x & (LANES - 1)


@device_function
def _clamped_load(src, b, t, off, c, T, hs):
    """src[b, t, off + c], or 0 where t >= T or c >= hs. The load itself is never skipped: it reads a clamped,
    in-bounds address and the zero is selected after. A load behind a branch waits alone for its memory;
    unconditional loads can all be in flight at once. cuda.selp with `&`, not `x if ... and ... else 0`: numba
    lowers that expression to branches, and LLVM then moved the load into one (a review found every tile load
    behind a branch in the PTX; with selp none is, and the forward's 8 spilled bytes went too)."""
    x = src[b, min(t, T - 1), off + min(c, hs - 1)]
    return cuda.selp((t < T) & (c < hs), x, float32(0.0))


@device_function
def _last_first():
    """The query tile of this block, the last one first: a query tile's block walks every key tile up to its
    own, so the last tiles take longest. Blocks start roughly in blockIdx order; the long ones starting first
    leave the short ones to fill the end, not one long block running on alone (FlashAttention-2 does this)."""
    return (cuda.gridDim.x - 1 - cuda.blockIdx.x) & 0x7FFFFFFF  # the mask: the compiler then knows it is >= 0


def flash_v5_kernels(hs, rows=FLASH_ROWS):
    """v5's (forward, backward dk dv, backward dq) kernels for head size hs, in blocks of `rows` rows (queries or
    keys) x LANES threads: one compiled set per (hs, rows). The tiles are rows long too."""
    return _flash_kernels("v5", hs, rows)


def flash_v6_kernels(hs, rows=FLASH_ROWS):
    """v6's kernels: v5's, with the lean tile loader (the comment above _flash_kernels)."""
    return _flash_kernels("v6", hs, rows)


# v6: v5 with a lean tile loader. In v5's SASS (ptxas 13.0, sm_90; nvdisasm) the key-tile loop of the forward
# kernel is 860 instructions for 32 global loads and 32 shared stores: every element's load clamps its row and
# channel, selects the zero after, and indexes with signed numbers (numba's negative-index wraparound, three
# times a load); its 32 keys' inner loops are 32 x 103 instructions, so the loader is ~20% of a tile's
# instructions (the backward's: 1242 of ~5200 and 808 of ~4000). A tile that lies inside the head (its R rows
# below T, and hs a power of two >= 16: no padding channels) needs none of that: v6 loads it with unsigned
# indices at constant steps and no test, as matmul v7 loads its interior tiles; the edge tiles keep v5's clamped
# loads. On a build with the edge path taken out the tile loop is 333 / 694 / 308 instructions; in the kernel
# as built, which holds both paths, the forward's interior path is ~378 (~12% fewer a tile in all). Registers:
# 96 / 244 / 128 (v5: 96 / 254 / 128), no spills. The values loaded are the same, so v6's results are v5's, bit
# for bit (tests/test_attention_flash.py).
@functools.cache
def _flash_kernels(version, hs, rows):
    if rows & (rows - 1) or not 32 <= rows * LANES <= 1024:
        raise ValueError(f"flash_{version}_kernels: rows must be a power of two from {32 // LANES} to "
                         f"{1024 // LANES} (whole warps: the shuffles name all 32 lanes; the tile loads mask the "
                         f"thread index), got {rows!r}")
    R, THREADS = rows, rows * LANES
    W = ceil_div(hs, LANES * CHUNK) * LANES * CHUNK  # a shared tile row: hs rounded up (the padding holds zeros)
    HSL = W // LANES                                 # channels a lane owns, CHUNK at a time
    scale = float32(1.0 / math.sqrt(hs))
    # v6's interior tiles without a test: no padding channels, and W a power of two, so that a tile's W-long rows
    # and its THREADS threads divide one another and tile_slot's split is exact (at hs = 48 it was not: some
    # elements loaded twice, others never; a review found it). Any other hs loads every tile as v5 does.
    LEAN = version == "v6" and W == hs and W & (W - 1) == 0

    @device_function
    def channel(lane, i):
        """The channel of a lane's i-th number: lane l owns the CHUNK-float runs l, l + LANES, l + 2 LANES, ..."""
        return CHUNK * (lane + LANES * (i // CHUNK)) + i % CHUNK

    @device_function
    def head(inp, n_head):
        """(T, b, h, and the channel offsets of head h's q, k and v in inp) of this block's (b, h)."""
        T, C = inp.shape[1], inp.shape[2] // 3
        b, h = cuda.blockIdx.y // n_head, cuda.blockIdx.y % n_head
        return T, b, h, h * hs, C + h * hs, 2 * C + h * hs

    @device_function
    def load_own(x, src, b, t, off, T, lane, factor):
        """x[i] = src[b, t, off + channel(lane, i)] * factor: this lane's channels of row t (0 past T or hs)."""
        for i in range(HSL):
            c = channel(lane, i)
            x[i] = src[b, t, off + c] * factor if t < T and c < hs else float32(0.0)

    @device_function
    def tile_slot(tid, n):
        """(j, c) of the n-th tile element thread tid loads: element tid + n THREADS of the R x W tile, split so
        that the compiler sees j - j0 and c - c0 as constants (THREADS and W are powers of two)."""
        if THREADS >= W:
            return tid // W + n * (THREADS // W), tid % W
        return n // (W // THREADS), tid + THREADS * (n % (W // THREADS))

    @device_function
    def load_tile(tile, src, b, t0, off, T, factor):
        """tile[j, c] = src[b, t0 + j, off + c] * factor for R rows (0 past T or hs); all threads, coalesced:
        HSL loads a thread (R x W = THREADS x HSL), a fixed count the compiler unrolls."""
        tid = cuda.threadIdx.x & (THREADS - 1)
        if LEAN and t0 + R <= T:   # the same for every thread of the block
            j0, c0 = tile_slot(tid, 0)
            t, o = uint64(t0 + j0), uint64(off + c0)   # this thread's first element; the others at constant steps
            for n in range(HSL):
                j, c = tile_slot(tid, n)
                tile[j, c] = src[uint64(b), t + uint64(j - j0), o + uint64(c - c0)] * factor
        else:
            for n in range(HSL):
                e = tid + n * THREADS
                j, c = e // W, e % W
                tile[j, c] = _clamped_load(src, b, t0 + j, off, c, T, hs) * factor

    @device_function
    def key_tile(k_tile, v_tile, inp, b, kt, ko, vo, T, t1):
        """Key tile kt's k and v rows into shared memory (all threads, between two barriers: nobody still reads
        the previous tile, everybody sees this one whole); returns how many of its keys query t1 sees."""
        cuda.syncthreads()
        load_tile(k_tile, inp, b, kt * R, ko, T, float32(1.0))
        load_tile(v_tile, inp, b, kt * R, vo, T, float32(1.0))
        cuda.syncthreads()
        return min(R, t1 - kt * R + 1) if t1 < T else 0  # keys kt*R + j <= t1

    @device_function
    def row_dot(x, tile, j, lane):
        """x . tile[j]: this lane's channels, then the row's four lanes added (the same bits in each). A run of
        CHUNK floats is one 16-byte shared load (the tiles are 16-byte aligned)."""
        s = float32(0.0)
        for i in range(HSL):
            s += x[i] * tile[j, channel(lane, i)]
        return lanes_sum(s, LANES)

    @device_function
    def row_term(dout_row, out, b, t, off, T, lane):
        """D = dout[t] . out[t] (0 past T), in every lane of the row; dout_row: this lane's numbers of dout[t]
        (its HSL channels, in registers or a tile row). The same products in the same order in both kernels."""
        d = float32(0.0)
        for i in range(HSL):
            c = channel(lane, i)
            if t < T and c < hs:
                d += dout_row[i] * out[b, t, off + c]
        return lanes_sum(d, LANES)

    def forward(out, lse, inp, n_head):
        T, b, h, qo, ko, vo = head(inp, n_head)
        r, lane = _row_lane()
        qb = _last_first()
        t1 = qb * R + r  # this row's query; may be >= T (it still shuffles and syncs)
        k_tile = cuda.shared.array((R, W), float32, alignment=16)
        v_tile = cuda.shared.array((R, W), float32, alignment=16)
        q = cuda.local.array(HSL, float32)
        acc = cuda.local.array(HSL, float32)
        part = cuda.local.array(HSL, float32)
        s_tile = cuda.local.array(R, float32)
        load_own(q, inp, b, t1, qo, T, lane, scale)
        for i in range(HSL):
            acc[i] = float32(0.0)
        m = float32(-math.inf)
        l = float32(0.0)
        for kt in range(qb + 1):  # key tiles up to the diagonal one
            n_keys = key_tile(k_tile, v_tile, inp, b, kt, ko, vo, T, t1)
            m_new = m
            for j in range(R):
                s_tile[j] = row_dot(q, k_tile, j, lane)
                if j < n_keys:
                    m_new = max(m_new, s_tile[j])
            if n_keys > 0:
                c = float32(math.exp(m - m_new))  # rescale the old sums once per tile (0 at the first)
                l_part = float32(0.0)
                for i in range(HSL):
                    part[i] = float32(0.0)
                for j in range(R):
                    if j < n_keys:
                        p = float32(math.exp(s_tile[j] - m_new))
                        l_part += p
                        for i in range(HSL):
                            part[i] += p * v_tile[j, channel(lane, i)]
                l = c * l + l_part
                for i in range(HSL):
                    acc[i] = c * acc[i] + part[i]
                m = m_new
        if t1 < T:
            inv = float32(1.0) / l
            for i in range(HSL):
                if channel(lane, i) < hs:
                    out[b, t1, qo + channel(lane, i)] = acc[i] * inv
            if lane == 0:
                lse[b, h, t1] = m + math.log(l)

    def backward_dkv(dinp, dout, inp, out, lse, n_head):
        T, b, h, qo, ko, vo = head(inp, n_head)
        r, lane = _row_lane()
        t2 = cuda.blockIdx.x * R + r  # this row's key; may be >= T
        q_tile = cuda.shared.array((R, W), float32, alignment=16)
        do_tile = cuda.shared.array((R, W), float32, alignment=16)
        lse_tile = cuda.shared.array(R, float32)
        d_tile = cuda.shared.array(R, float32)
        k = cuda.local.array(HSL, float32)
        v = cuda.local.array(HSL, float32)
        dk = cuda.local.array(HSL, float32)
        dv = cuda.local.array(HSL, float32)
        dk_part = cuda.local.array(HSL, float32)
        dv_part = cuda.local.array(HSL, float32)
        load_own(k, inp, b, t2, ko, T, lane, float32(1.0))
        load_own(v, inp, b, t2, vo, T, lane, float32(1.0))
        for i in range(HSL):
            dk[i] = float32(0.0)
            dv[i] = float32(0.0)
        for qt in range(cuda.blockIdx.x, (T + R - 1) // R):  # query tiles from the diagonal one on
            cuda.syncthreads()  # everyone is done with the previous tile
            load_tile(q_tile, inp, b, qt * R, qo, T, scale)
            load_tile(do_tile, dout, b, qt * R, qo, T, float32(1.0))
            t1 = qt * R + r  # row r brings query t1's lse and D
            if lane == 0:
                lse_tile[r] = lse[b, h, t1] if t1 < T else float32(0.0)
            cuda.syncthreads()
            # D from the tile's dout row (not a second read of dout from global memory, and not while the tile
            # loads are in flight: fewer registers). dv_part is borrowed for the row; it is zeroed before use.
            dout_row = dv_part
            for i in range(HSL):
                dout_row[i] = do_tile[r, channel(lane, i)]
            d = row_term(dout_row, out, b, t1, qo, T, lane)
            if lane == 0:
                d_tile[r] = d
            cuda.syncthreads()
            first = t2 - qt * R      # the tile's queries j >= first see key t2
            n_q = min(R, T - qt * R) if t2 < T else 0
            for i in range(HSL):
                dk_part[i] = float32(0.0)
                dv_part[i] = float32(0.0)
            for j in range(R):
                s = row_dot(k, q_tile, j, lane)   # q is scaled: the forward's score, bit for bit
                dp = row_dot(v, do_tile, j, lane)
                if j >= first and j < n_q:
                    p = float32(math.exp(s - lse_tile[j]))
                    ds = p * (dp - d_tile[j])
                    for i in range(HSL):
                        dv_part[i] += p * do_tile[j, channel(lane, i)]
                        dk_part[i] += ds * q_tile[j, channel(lane, i)]  # dS^T Q / sqrt(hs)
            for i in range(HSL):
                dk[i] += dk_part[i]
                dv[i] += dv_part[i]
        if t2 < T:
            for i in range(HSL):
                c = channel(lane, i)
                if c < hs:
                    dinp[b, t2, ko + c] += dk[i]
                    dinp[b, t2, vo + c] += dv[i]

    def backward_dq(dinp, dout, inp, out, lse, n_head):
        T, b, h, qo, ko, vo = head(inp, n_head)
        r, lane = _row_lane()
        qb = _last_first()
        t1 = qb * R + r
        k_tile = cuda.shared.array((R, W), float32, alignment=16)
        v_tile = cuda.shared.array((R, W), float32, alignment=16)
        q = cuda.local.array(HSL, float32)
        do = cuda.local.array(HSL, float32)
        dq = cuda.local.array(HSL, float32)
        part = cuda.local.array(HSL, float32)
        load_own(q, inp, b, t1, qo, T, lane, scale)
        load_own(do, dout, b, t1, qo, T, lane, float32(1.0))
        d = row_term(do, out, b, t1, qo, T, lane)
        row_lse = lse[b, h, t1] if t1 < T else float32(0.0)
        for i in range(HSL):
            dq[i] = float32(0.0)
        for kt in range(qb + 1):  # key tiles up to the diagonal one
            n_keys = key_tile(k_tile, v_tile, inp, b, kt, ko, vo, T, t1)
            for i in range(HSL):
                part[i] = float32(0.0)
            for j in range(R):
                s = row_dot(q, k_tile, j, lane)
                dp = row_dot(do, v_tile, j, lane)
                if j < n_keys:
                    ds = float32(math.exp(s - row_lse)) * (dp - d)
                    for i in range(HSL):
                        part[i] += ds * k_tile[j, channel(lane, i)]
            for i in range(HSL):
                dq[i] += part[i]
        if t1 < T:
            for i in range(HSL):
                if channel(lane, i) < hs:
                    dinp[b, t1, qo + channel(lane, i)] += dq[i] * scale

    made = []
    for name, fn in ((f"attention_forward_flash_kernel_{version}", forward),
                     (f"attention_backward_flash_dkv_kernel_{version}", backward_dkv),
                     (f"attention_backward_flash_dq_kernel_{version}", backward_dq)):
        # the same registers a thread at any rows (the simulator has no bounds)
        bounds = {} if numba.config.ENABLE_CUDASIM else {
            "launch_bounds": (THREADS, FLASH_BLOCKS_PER_SM[fn.__name__] * FLASH_ROWS // rows)}
        fn.__name__ = fn.__qualname__ = name  # one name for every (hs, rows): the profile's and resources' key
        made.append(cuda_kernel(fn, **bounds))
    return tuple(made)


# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
_F3, _F4 = "float32[:,:,::1]", "float32[:,:,:,::1]"
CUDA_KERNELS = (
    (attention_forward_kernel_v1, f"void({_F3}, {_F4}, {_F3}, int64)"),
    (attention_forward_kernel_v2, f"void({_F3}, {_F4}, {_F3}, int64)"),
    (attention_forward_kernel_v3, f"void({_F3}, {_F4}, {_F3}, int64)"),
    (attention_forward_online_kernel, f"void({_F3}, {_F3}, {_F3}, int64)"),
    (attention_backward_kernel_v1, f"void({_F3}, {_F3}, {_F3}, {_F4}, int64)"),
    (attention_backward_dq_kernel_v2, f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F4}, int64)"),
    (attention_backward_dkv_kernel_v2, f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F4}, int64)"),
    (attention_backward_dq_kernel_v3, f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F4}, int64)"),
    (attention_backward_dkv_kernel_v3, f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F4}, int64)"),
    (attention_forward_flash_kernel, f"void({_F3}, {_F3}, {_F3}, int64)"),
    (attention_backward_flash_dkv_kernel, f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F3}, int64)"),
    (attention_backward_flash_dq_kernel, f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F3}, int64)"),
    *zip(flash_v5_kernels(HS_MAX), (f"void({_F3}, {_F3}, {_F3}, int64)",
                                    *[f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F3}, int64)"] * 2)),  # GPT-2's hs
    *zip(flash_v6_kernels(HS_MAX), (f"void({_F3}, {_F3}, {_F3}, int64)",
                                    *[f"void({_F3}, {_F3}, {_F3}, {_F3}, {_F3}, int64)"] * 2)),
)
BLOCK = 64  # small blocks: B*NH*T rows is only 12288 at GPT-2 T=256, spread them over all the SMs
CPU_VERSIONS = ("rows", "blas")
# The flash pair's own versions: the CPU loops, and the CUDA v4, v5 and v6 (v6 the default: v5's results bit for
# bit, and its three kernels 32.6 ms of a 124M step at T=1024 against v5's 34.5 on an H100, 2026-11-27).
FLASH_CPU_VERSIONS = ("flash",)
FLASH_CUDA_VERSIONS = ("v4", "v5", "v6")
DEFAULT_FLASH = {"cpu": "flash", "cuda": "v6"}
CUDA_VERSIONS = ("v1", "v2", "v3", "cublas")
# Backward v3: as accurate as PyTorch's float32. The forward stays v2 until v3 has been timed on a real GPU
# (v3 was written without one; both are online softmax, equally accurate).
DEFAULT_VERSION = {"cpu": "blas", "cuda": {"attention_forward": "v2", "attention_backward": "v3"}}
BACKWARD_KERNELS = {"v2": (attention_backward_dq_kernel_v2, attention_backward_dkv_kernel_v2),
                    "v3": (attention_backward_dq_kernel_v3, attention_backward_dkv_kernel_v3)}


def _launch_rows(kernel, n_rows, *args):
    kernel[ceil_div(n_rows, BLOCK), BLOCK](*args)


# ---------------------------------------------------------------- public entry points
def _check_qkv(op, inp, n_head):
    """Validate inp (B, T, 3C) and n_head; returns (B, T, C)."""
    check_array(op, "inp", inp, (None, None, None), dims="B,T,3C")
    B, T, C3 = inp.shape
    if C3 % 3:
        raise ValueError(f"{op}: inp must be (B,T,3C) = q,k,v side by side, got last dim {C3} (not a multiple of 3)")
    if not isinstance(n_head, (int, np.integer)) or n_head < 1 or (C3 // 3) % n_head:
        raise ValueError(f"{op}: n_head must be a positive int dividing C = {C3 // 3}, got {n_head!r}")
    return B, T, C3 // 3


def _check_hs(op, C, n_head):
    if C // n_head > HS_MAX:
        raise ValueError(f"{op}: the CUDA kernels after v1 support head size <= {HS_MAX}, got {C // n_head}")


def attention_forward(out, att, inp, n_head, version=None):
    """Causal self-attention forward; writes out (B, T, C) and the softmax cache att (B, NH, T, T).

    inp: (B, T, 3C) float32, the qkv activations (q | k | v, head h at channels h*hs:(h+1)*hs).
    version: one of the module docstring's (None: DEFAULT_VERSION).
    """
    B, T, C = _check_qkv("attention_forward", inp, n_head)
    check_array("attention_forward", "out", out, (B, T, C), dims="B,T,C")
    check_array("attention_forward", "att", att, (B, n_head, T, T), dims="B,NH,T,T")
    on_device = check_same_device("attention_forward", out=out, att=att, inp=inp)
    version = pick_version("attention_forward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS,
                           DEFAULT_VERSION)
    if version == "rows":
        _attention_forward_cpu(out, att, inp, n_head)
    elif version == "blas":
        _attention_forward_blas(out, att, inp, n_head, xxgemm, set_blas_threads)
    elif version == "cublas":
        _cublas.attention_forward(out, att, inp, n_head)
    elif version == "v1":
        _launch_rows(attention_forward_kernel_v1, B * n_head * T, out, att, inp, n_head)
    elif version == "v2":
        _check_hs("attention_forward", C, n_head)
        _launch_rows(attention_forward_kernel_v2, B * n_head * T, out, att, inp, n_head)
    else:
        _check_hs("attention_forward", C, n_head)
        attention_forward_kernel_v3[(ceil_div(T, TILE), B * n_head), TILE](out, att, inp, n_head)


def attention_forward_online(out, lse, inp, n_head):
    """Online-softmax forward writing out (B, T, C) and lse (B, NH, T) = log sum_t2 exp(preatt): no T x T att.

    att can be recomputed from lse as exp(preatt - lse) (see `att_from_lse`), which is what a
    flash-attention backward does instead of keeping att.
    """
    B, T, C = _check_qkv("attention_forward_online", inp, n_head)
    check_array("attention_forward_online", "out", out, (B, T, C), dims="B,T,C")
    check_array("attention_forward_online", "lse", lse, (B, n_head, T), dims="B,NH,T")
    if check_same_device("attention_forward_online", out=out, lse=lse, inp=inp):
        _check_hs("attention_forward_online", C, n_head)
        _launch_rows(attention_forward_online_kernel, B * n_head * T, out, lse, inp, n_head)
    else:
        _attention_forward_online_cpu(out, lse, inp, n_head)


def attention_backward(dinp, dout, inp, att, n_head, version=None):
    """dinp (B, T, 3C) += the gradient w.r.t. q, k, v, given dout (B, T, C) and the forward's att cache.

    version: one of the module docstring's (None: DEFAULT_VERSION). CUDA "v2" and "v3" run a query-row
    kernel for dq then a key-row kernel for dk, dv; their (B, NH, T) scratch is allocated here.
    """
    B, T, C = _check_qkv("attention_backward", inp, n_head)
    check_array("attention_backward", "dinp", dinp, (B, T, 3 * C), dims="B,T,3C")
    check_array("attention_backward", "dout", dout, (B, T, C), dims="B,T,C")
    check_array("attention_backward", "att", att, (B, n_head, T, T), dims="B,NH,T,T")
    on_device = check_same_device("attention_backward", dinp=dinp, dout=dout, inp=inp, att=att)
    version = pick_version("attention_backward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS,
                           DEFAULT_VERSION)
    n_rows = B * n_head * T
    if version == "rows":
        _attention_backward_cpu(dinp, dout, inp, att, n_head)
    elif version == "blas":
        _attention_backward_blas(dinp, dout, inp, att, n_head, xxgemm, set_blas_threads)
    elif version == "cublas":
        _cublas.attention_backward(dinp, dout, inp, att, n_head)
    elif version == "v1":
        _launch_rows(attention_backward_kernel_v1, n_rows, dinp, dout, inp, att, n_head)
    else:
        _check_hs("attention_backward", C, n_head)
        att_datt = datt_scratch(B, n_head, T)  # D: written by (a), read by (b)
        dq_kernel, dkv_kernel = BACKWARD_KERNELS[version]
        _launch_rows(dq_kernel, n_rows, dinp, att_datt, dout, inp, att, n_head)
        _launch_rows(dkv_kernel, n_rows, dinp, att_datt, dout, inp, att, n_head)


def datt_scratch(B, n_head, T):
    """v2/v3 backward's D = sum_t2 att datt per row, (B, NH, T): made once per shape, then reused (_cuda.scratch)."""
    return scratch("attention.datt", (B, n_head, T))


def _flash_launch(version, B, T, C, n_head, rows=None):
    """A flash version's (forward, backward dk dv, backward dq) kernels and their launch: a block per TILE rows
    (queries or keys) of one (b, h), of TILE threads (v4) or rows x LANES (v5 and v6, compiled for this head size;
    rows None: FLASH_ROWS, or FLASH_ROWS_SIMULATED in the simulator)."""
    if version in ("v5", "v6"):
        rows = rows or (FLASH_ROWS_SIMULATED if numba.config.ENABLE_CUDASIM else FLASH_ROWS)
        return _flash_kernels(version, C // n_head, rows), ((ceil_div(T, rows), B * n_head), rows * LANES)
    grid = (ceil_div(T, TILE), B * n_head)
    return (attention_forward_flash_kernel, attention_backward_flash_dkv_kernel,
            attention_backward_flash_dq_kernel), (grid, TILE)


def attention_forward_flash(out, lse, inp, n_head, version=None):
    """Flash-attention forward: writes out (B, T, C) and lse (B, NH, T) = log sum_t2 exp(preatt); no T x T att.

    The pair of attention_backward_flash, which needs out and lse (not att). The contract of
    attention_forward_online (same arguments, same results); on the GPU the tiled kernels (version: "v4", "v5"
    or "v6", the default), on the CPU the online-softmax loops ("flash"). att, where wanted (lessons, parity), is
    exp(preatt - lse): `att_from_lse`.
    """
    op = "attention_forward_flash"
    B, T, C = _check_qkv(op, inp, n_head)
    check_array(op, "out", out, (B, T, C), dims="B,T,C")
    check_array(op, "lse", lse, (B, n_head, T), dims="B,NH,T")
    on_device = check_same_device(op, out=out, lse=lse, inp=inp)
    version = pick_version(op, version, on_device, FLASH_CPU_VERSIONS, FLASH_CUDA_VERSIONS, DEFAULT_FLASH)
    if on_device:
        _check_hs(op, C, n_head)
        kernels, launch = _flash_launch(version, B, T, C, n_head)
        kernels[0][launch](out, lse, inp, n_head)
    else:
        _attention_forward_online_cpu(out, lse, inp, n_head)


def attention_backward_flash(dinp, dout, inp, out, lse, n_head, version=None):
    """dinp (B, T, 3C) += the gradient w.r.t. q, k, v, from attention_forward_flash's out and lse.

    out (B, T, C) and lse (B, NH, T) are the flash forward's (D = dout . out needs the same out the model
    kept); att is rebuilt from lse where it is used and never stored. On the GPU two kernels of the version
    (dk and dv, then dq), no scratch; on the CPU the same math in loops. version: as attention_forward_flash's.
    """
    op = "attention_backward_flash"
    B, T, C = _check_qkv(op, inp, n_head)
    check_array(op, "dinp", dinp, (B, T, 3 * C), dims="B,T,3C")
    for name, a in (("dout", dout), ("out", out)):
        check_array(op, name, a, (B, T, C), dims="B,T,C")
    check_array(op, "lse", lse, (B, n_head, T), dims="B,NH,T")
    on_device = check_same_device(op, dinp=dinp, dout=dout, inp=inp, out=out, lse=lse)
    version = pick_version(op, version, on_device, FLASH_CPU_VERSIONS, FLASH_CUDA_VERSIONS, DEFAULT_FLASH)
    if on_device:
        _check_hs(op, C, n_head)
        (_, dkv, dq), launch = _flash_launch(version, B, T, C, n_head)
        dkv[launch](dinp, dout, inp, out, lse, n_head)
        dq[launch](dinp, dout, inp, out, lse, n_head)
    else:
        _attention_backward_flash_cpu(dinp, dout, inp, out, lse, n_head)


# ---------------------------------------------------------------- numpy: the lesson's pieces
def split_heads(inp, n_head):
    """q, k, v as (B, NH, T, hs) float64 views' copies, from inp (B, T, 3C)."""
    B, T, C3 = inp.shape
    C = C3 // 3
    qkv = np.asarray(inp, np.float64).reshape(B, T, 3, n_head, C // n_head)
    return tuple(qkv[:, :, j].transpose(0, 2, 1, 3) for j in range(3))


def att_from_lse(inp, lse, n_head):
    """att (B, NH, T, T) = exp(preatt - lse) under the causal mask: how a flash backward rebuilds att."""
    q, k, _ = split_heads(inp, n_head)
    T, hs = q.shape[2], q.shape[3]
    preatt = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
    att = np.exp(preatt - np.asarray(lse, np.float64)[..., None])
    return np.where(np.tril(np.ones((T, T), bool)), att, 0.0).astype(np.float32)


def online_softmax_step(m, l, acc, s, v):
    """One step of the online softmax over a block of keys, for one query.

    m, l: the running max and sum of exp(score - m); acc (hs,): the running sum of exp(score - m) v.
    s (n,): the block's scores; v (n, hs): its values. Returns the new (m, l, acc). Start from
    m = -inf, l = 0, acc = 0; at the end out = acc / l, lse = m + log l.
    """
    m_new = max(m, float(np.max(s)))
    c = math.exp(m - m_new)  # rescale what was summed relative to the old max (0 at the start)
    p = np.exp(s - m_new)
    return m_new, c * l + p.sum(), c * acc + p @ v


def online_softmax_attend(s, v, block):
    """out = softmax(s) @ v computed block by block with `online_softmax_step`; returns (out, lse)."""
    m, l, acc = -math.inf, 0.0, np.zeros(v.shape[1])
    for j in range(0, len(s), block):
        m, l, acc = online_softmax_step(m, l, acc, s[j:j + block], v[j:j + block])
    return acc / l, m + math.log(l)


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    B, T, C = shape["B"], shape["T"], shape["C"]
    # scale 2: scores with std ~4, so the softmax is peaked and the max subtraction matters
    return {"inp": (rng.standard_normal((B, T, 3 * C)) * 2).astype(np.float32),
            "dout": rng.standard_normal((B, T, C)).astype(np.float32),
            "n_head": np.array(shape["NH"])}


def _buffers(inputs):
    inp, nh = inputs["inp"], int(inputs["n_head"])
    B, T, C3 = inp.shape
    return inp, inputs["dout"], nh, np.zeros((B, T, C3 // 3), np.float32), np.zeros((B, nh, T, T), np.float32)


def _run(inputs, fwd=None, bwd=None):
    """Forward then backward; fwd/bwd None or a CPU version run on numpy, else CUDA versions (numpy in and out)."""
    inp, dout, nh, out, att = _buffers(inputs)
    dinp = np.zeros_like(inp)
    if fwd is None or fwd in CPU_VERSIONS:
        attention_forward(out, att, inp, nh, version=fwd)
        attention_backward(dinp, dout, inp, att, nh, version=bwd)
        return {"out": out, "att": att, "dinp": dinp}
    res = run_on_device(lambda **a: attention_forward(**a, version=fwd),
                        {"out": out, "att": att, "inp": inp, "n_head": nh}, ["out", "att"])
    res.update(run_on_device(lambda **a: attention_backward(**a, version=bwd),
                             {"dinp": dinp, "dout": dout, "inp": inp, "att": res["att"], "n_head": nh}, ["dinp"]))
    return res


def _run_online(inputs, device=False):
    """attention_forward_online, then att rebuilt from lse in numpy; dinp as below.

    The att row checks lse completely (every entry of exp(preatt - lse) must match torch's softmax). On the CPU
    dinp comes from the flash backward's loops, which read this forward's out and lse in the CPU's fused path
    and rebuild att from the same float32 scores, so a score's rounding cancels. The CPU's flash forward is this
    forward, so there the row equals the "flash" row bit for bit; it stays because lesson 3 names it. The
    att-reading backward fed att rebuilt with exact scores (att_from_lse) adds that rounding instead: lse is ~20
    at these inputs, so a float32 lse is off by 1-4e-6 (1-2 of its ulps), 8-30 ulps of an att near 1, and that
    composite's dinp measured 2-17x PyTorch's error by seed, 17x at seed 0 on an AMD EPYC (2026-11-27), over the
    bar for no kernel's fault. On CUDA and in the simulator the composite is kept: the device's online forward
    and its flash backwards compute scores in different orders, so taking dinp from one of them would not
    cancel the rounding either. It passes there at the harness's seed (6.5 on an H200); at other seeds the same
    composite reached 23x once in 30 (T=7, measured with the CPU forward's lse).
    """
    inp, dout, nh, out, _ = _buffers(inputs)
    B, T, _ = inp.shape
    args = {"out": out, "lse": np.zeros((B, nh, T), np.float32), "inp": inp, "n_head": nh}
    if device:
        res = run_on_device(attention_forward_online, args, ["out", "lse"])
    else:
        attention_forward_online(**args)
        res = {"out": out, "lse": args["lse"]}
    att = att_from_lse(inp, res["lse"], nh)
    if device:
        bargs = {"dinp": np.zeros_like(inp), "dout": dout, "inp": inp, "att": att, "n_head": nh}
        return {"out": res["out"], "att": att, "dinp": run_on_device(attention_backward, bargs, ["dinp"])["dinp"]}
    dinp = np.zeros_like(inp)
    attention_backward_flash(dinp, dout, inp, res["out"], res["lse"], nh)
    return {"out": res["out"], "att": att, "dinp": dinp}


def _run_flash(inputs, device=False, version=None):
    """attention_forward_flash then attention_backward_flash (`version` on the device, loops on the CPU).

    The att row is rebuilt from lse in numpy (float64, rounded): it checks every entry of exp(preatt - lse),
    so a wrong lse fails there as well as in dinp.
    """
    inp, dout, nh, out, _ = _buffers(inputs)
    B, T, _ = inp.shape
    args = {"out": out, "lse": np.zeros((B, nh, T), np.float32), "inp": inp, "n_head": nh}
    bargs = {"dinp": np.zeros_like(inp), "dout": dout, "inp": inp, "n_head": nh}
    if device:
        res = run_on_device(functools.partial(attention_forward_flash, version=version), args, ["out", "lse"])
        bargs.update(out=res["out"], lse=res["lse"])
        dinp = run_on_device(functools.partial(attention_backward_flash, version=version), bargs, ["dinp"])["dinp"]
    else:
        attention_forward_flash(**args)
        res = {"out": out, "lse": args["lse"]}
        bargs.update(out=out, lse=args["lse"])
        attention_backward_flash(**bargs)
        dinp = bargs["dinp"]
    return {"out": res["out"], "att": att_from_lse(inp, res["lse"], nh), "dinp": dinp}


SPEC = OpSpec(
    name="attention",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp"], i["dout"], int(i["n_head"])),
    versions={
        "cpu": {"blas": _run, "rows": lambda i: _run(i, "rows", "rows"), "online": _run_online,
                "flash": _run_flash},
        "cuda": {"v1": lambda i: _run(i, "v1", "v1"), "v2": lambda i: _run(i, "v2", "v2"),
                 "v3": lambda i: _run(i, "v3", "v3"),
                 "online": lambda i: _run_online(i, device=True),
                 "v4": lambda i: _run_flash(i, device=True, version="v4"),
                 "v5": lambda i: _run_flash(i, device=True, version="v5"),
                 "v6": lambda i: _run_flash(i, device=True, version="v6"),
                 **({} if numba.config.ENABLE_CUDASIM else {"cublas": lambda i: _run(i, "cublas", "cublas")})},
    },
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 768, "NH": 12}, {"B": 3, "T": 1, "C": 36, "NH": 3},
                {"B": 2, "T": 7, "C": 50, "NH": 5}, {"B": 2, "T": 37, "C": 48, "NH": 4}],
        "cudasim": [{"B": 1, "T": 5, "C": 24, "NH": 3}, {"B": 1, "T": 1, "C": 12, "NH": 2},
                    {"B": 1, "T": 4, "C": 15, "NH": 3},
                    {"B": 2, "T": 40, "C": 8, "NH": 2},  # T > TILE: v3's several key tiles and masked tiles
                    {"B": 1, "T": 11, "C": 40, "NH": 2},   # hs = 20: two 4-channel runs a v5 lane, padding past hs
                    {"B": 1, "T": 19, "C": 32, "NH": 2}],  # hs = 16: v6's interior tiles (2 of 8 rows), and an edge
        "cuda": [{"B": 4, "T": 256, "C": 768, "NH": 12}, {"B": 2, "T": 7, "C": 50, "NH": 5}],
    },
    backward=("dinp",),
    teaching=("v1", "v2"),  # less accurate than PyTorch on long sums: see kernels/accuracy.py
)
