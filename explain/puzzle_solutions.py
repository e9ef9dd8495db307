"""One solution to each kernel puzzle (explain/puzzles.py), revealed on request: `show_solution("softmax_kernel")`.

They live here, not in the learner's notebook. The names above the kernels are exactly what a puzzle cell gets
for free (puzzles.HEADER): the tests run every solution through the puzzle's own check, in the simulator.
"""
import math

import numpy as np
from numba import cuda, float32, njit, prange

from gpt2lab.kernels.layernorm import EPS as LN_EPS, block_sum

GELU_SCALE = float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = float32(0.044715)
EPS = float32(LN_EPS)
BLOCK = 256        # the size of a block's shared scratch: at least blockDim.x
TILE = 4           # the matmul tile: blocks of TILE x TILE threads, shared tiles of TILE x TILE floats


@cuda.jit
def gelu_forward_kernel(out, inp, n):
    i = cuda.grid(1)
    if i < n:                                   # the last block has threads past the end: they do nothing
        x = inp[i]
        u = GELU_SCALE * (x + GELU_CUBIC * x * x * x)
        out[i] = float32(0.5) * x * (float32(1.0) + math.tanh(u))


@njit(parallel=True)
def residual_forward(out, inp1, inp2):
    for i in prange(out.size):                  # numba gives each core a chunk of i
        out[i] = inp1[i] + inp2[i]


@cuda.jit
def softmax_kernel(out, inp):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x                         # one block per row
    tid = cuda.threadIdx.x
    C = inp.shape[1]
    # 1. the row's max, so that exp never overflows: each thread's max over its strided channels, then a tree
    m = float32(-math.inf)                      # float32 constants: a Python float makes it float64 math
    for i in range(tid, C, cuda.blockDim.x):
        m = max(m, inp[r, i])
    scratch[tid] = m
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] = max(scratch[tid], scratch[tid + stride])
        cuda.syncthreads()
        stride //= 2
    m = scratch[0]
    cuda.syncthreads()                          # all have read the max before scratch is reused
    # 2. the sum of exp(x - max), the same tree
    s = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        s += math.exp(inp[r, i] - m)
    scratch[tid] = s
    cuda.syncthreads()
    stride = cuda.blockDim.x // 2
    while stride > 0:
        if tid < stride:
            scratch[tid] += scratch[tid + stride]
        cuda.syncthreads()
        stride //= 2
    s = scratch[0]
    # 3. normalise
    for i in range(tid, C, cuda.blockDim.x):
        out[r, i] = math.exp(inp[r, i] - m) / s


@cuda.jit
def layernorm_forward_kernel(out, mean, rstd, inp, weight, bias):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x                         # one block per row
    tid = cuda.threadIdx.x
    C = inp.shape[1]
    acc = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        acc += inp[r, i]
    m = block_sum(scratch, acc) / float32(C)   # float32(C): an int would promote the math to float64
    acc = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        d = inp[r, i] - m
        acc += d * d
    s = float32(1.0) / math.sqrt(block_sum(scratch, acc) / float32(C) + EPS)
    for i in range(tid, C, cuda.blockDim.x):
        out[r, i] = (inp[r, i] - m) * s * weight[i] + bias[i]
    if tid == 0:                                # one thread writes the row's cache
        mean[r] = m
        rstd[r] = s


@cuda.jit
def matmul_tiled_kernel(out, inp, weight, bias):
    inp_tile = cuda.shared.array((TILE, TILE), float32)
    w_tile = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = inp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty             # this thread's output row ...
    o = cuda.blockIdx.x * TILE + tx             # ... and column
    w_row = cuda.blockIdx.x * TILE + ty         # the weight row this thread loads
    acc = float32(0.0)
    for k0 in range(0, C, TILE):
        # every thread loads one element of each tile (zero past the edges), then all wait
        inp_tile[ty, tx] = inp[n, k0 + tx] if n < N and k0 + tx < C else float32(0.0)
        w_tile[ty, tx] = weight[w_row, k0 + tx] if w_row < OC and k0 + tx < C else float32(0.0)
        cuda.syncthreads()
        for k in range(TILE):
            acc += inp_tile[ty, k] * w_tile[tx, k]
        cuda.syncthreads()                      # all have used the tiles before the next loads overwrite them
    if n < N and o < OC:
        out[n, o] = acc + bias[o]


@cuda.jit
def encoder_backward_kernel(dwte, dwpe, dout, inp):
    B, T, C = dout.shape
    e = cuda.grid(1)                            # one thread per (b, t, c)
    if e < B * T * C:
        c = e % C
        t = (e // C) % T
        b = e // (T * C)
        d = dout[b, t, c]
        # a token that occurs twice, and the same position in every sequence: several threads add to one
        # element, so each add must be atomic
        cuda.atomic.add(dwte, (inp[b, t], c), d)
        cuda.atomic.add(dwpe, (t, c), d)


PUZZLE_SOLUTIONS = {getattr(k, "py_func", k).__name__: k for k in (
    gelu_forward_kernel, residual_forward, softmax_kernel, layernorm_forward_kernel, matmul_tiled_kernel,
    encoder_backward_kernel)}
