"""BLAS from inside @njit: sgemm with accumulation, and one BLAS thread per numba thread.

Used by the CPU kernels whose work is matrix products (matmul, attention). Each numba thread (prange)
calls BLAS single-threaded on its own piece: OpenBLAS's own thread pool ran GPT-2's shapes several times
slower (docs/figures.md), its threads spinning and waiting on each other while the numba pieces are
independent. openblas_set_num_threads_local(1) makes just
the calling thread's BLAS calls single-threaded; where there is no such call (another BLAS), SPLIT is False
and callers make one call and let BLAS thread itself.
"""
from __future__ import annotations

import ctypes
import glob
import os

import numba._helperlib
import numpy as np
from numba import cfunc, njit

# The products go to BLAS's sgemm (blocked for the caches: no hand-written loop nest gets near it).
# sgemm computes c = alpha op(a) op(b) + beta c. np.dot inside @njit calls it with beta = 0 only, so
# `dweight += np.dot(dout.T, inp)` would build a temporary (154 MB for the lm_head) and add it in a second
# pass. Calling sgemm with beta = 1 accumulates in place, llm.c's `+=`, and on an `out` pre-filled with the
# bias it adds the bias for free (torch's addmm does the same). We reach sgemm the way numba's own np.dot
# does: through numba's helper numba_xxgemm, which calls scipy's BLAS.
_c = ctypes
xxgemm = _c.CFUNCTYPE(_c.c_int, _c.c_byte, _c.c_byte, _c.c_byte,           # kind, transa, transb
                      _c.c_ssize_t, _c.c_ssize_t, _c.c_ssize_t,            # m, n, k
                      _c.c_void_p, _c.c_void_p, _c.c_ssize_t,              # alpha, a, lda
                      _c.c_void_p, _c.c_ssize_t,                           # b, ldb
                      _c.c_void_p, _c.c_void_p, _c.c_ssize_t)(             # beta, c, ldc
    numba._helperlib.c_helpers["xxgemm"])


def _blas_threads_local():
    """scipy's OpenBLAS's per-thread `openblas_set_num_threads_local`, or None where there is none."""
    try:
        import scipy  # the CPU path needs it (numba's BLAS); a GPU-only machine may lack it
    except ImportError:
        return None
    for path in glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs", "libscipy_openblas*")):
        fn = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
        if fn is not None:
            return _c.CFUNCTYPE(_c.c_int, _c.c_int)(_c.cast(fn, _c.c_void_p).value)
    return None


@cfunc("int32(int32)", cache=True)
def _keep_blas_threads(n):
    return n


set_blas_threads = _blas_threads_local()
SPLIT = set_blas_threads is not None  # False: one BLAS call, threaded by BLAS itself
if not SPLIT:
    set_blas_threads = _keep_blas_threads.ctypes


@njit(error_model="numpy", cache=True)
def gemm(c, a, b, trans_a, trans_b, beta, xxgemm):
    """c (M, N) = op(a) @ op(b) + beta * c, float32 row-major views (unit inner stride); op(x) = x.T if trans_x.

    BLAS is column-major: to it our row-major (M, N) array c is the N x M matrix c^T. So we ask it for
    c^T = op(b)^T op(a)^T: b first, then a, each with its own transpose flag, and M, N swapped. The leading
    dimensions are the row strides, so column slices like weight[:, lo:hi] work without a copy.
    xxgemm (the ctypes function) comes in as an argument, not a global, so numba can cache this function.
    """
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    alpha_beta = np.empty(2, dtype=np.float32)
    alpha_beta[0], alpha_beta[1] = 1.0, beta
    flag_a = ord("T") if trans_a else ord("N")
    flag_b = ord("T") if trans_b else ord("N")
    xxgemm(ord("s"), flag_b, flag_a, N, M, K, alpha_beta.ctypes.data, b.ctypes.data, b.strides[0] // 4,
           a.ctypes.data, a.strides[0] // 4, alpha_beta[1:].ctypes.data, c.ctypes.data, c.strides[0] // 4)
