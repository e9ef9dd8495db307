"""The encoder: token embedding plus position embedding, GPT-2's first layer.

Forward, for token id inp[b, t] in [0, V) at position t < maxT:

    out[b, t, :] = wte[inp[b, t], :] + wpe[t, :]

A lookup, not a matmul: the same as one_hot(inp) @ wte, without the (B, T, V) one-hot matrix.

Backward. Each output row is a sum of one row of wte and one row of wpe, so the gradient of that row is
copied back to both: a *scatter-add*,

    dwte[inp[b, t], :] += dout[b, t, :]
    dwpe[t, :]         += dout[b, t, :]      (for every b)

It must add, not assign: a token that appears twice (" the" in any sentence) used the same row of wte
twice, and its gradient is the sum of the two positions' gradients; likewise dwpe[t] sums over the batch.
Nothing is cached beyond the token ids. inp has no gradient (it is an integer index).

On a GPU, threads handling two positions with the same token write the same dwte row at once: a race,
and a plain `+=` loses updates. v1 uses cuda.atomic.add (correct, one thread per element, but the order
of the float additions, and so the last bits, change from run to run). v2 is deterministic: one thread per
channel loops over the positions in order, so it owns its column of dwte and dwpe outright; the price is
parallelism (only C threads, each doing B*T sequential steps). Both add a token's gradients into one
float32 running sum, whose rounding error grows with the count; v3 (the default) groups the positions by
token first and gives each (token, channel) one thread with a compensated sum: deterministic, parallel
over tokens and channels, and accurate to ~1 rounding.

Shapes: inp (B, T) int32; wte, dwte (V, C); wpe, dwpe (maxT, C); out, dout (B, T, C). float32,
C-contiguous. T <= maxT.

Versions (`version=` of encoder_backward; DEFAULT_VERSION below, chosen by the rule in docs/kernels.md):

    CPU  "loops"  the scatter-add, parallel over channels (default)
    CUDA "v1"     one thread per element, cuda.atomic.add
         "v2"     deterministic: one thread per channel, positions in order
         "v3"     positions grouped by token, one thread per (token, channel), compensated sums (default)
The forward is one lookup kernel for every version.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, njit, prange

from ._cuda import ceil_div, compensated_add, grid_stride, run_on_device
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_same_device, on_host, pick_version
from .check import OpSpec


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp, wte, wpe, dout):
    """PyTorch: wte[inp] + wpe[:T] (embedding lookups) and the autograd gradients of wte and wpe."""
    T = inp.shape[1]
    return autograd(lambda inp, wte, wpe: {"out": wte[inp] + wpe[:T]}, {"inp": inp, "wte": wte, "wpe": wpe},
                    ("wte", "wpe"), {"out": dout})


# ---------------------------------------------------------------- CPU (numba @njit)
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def encoder_forward_cpu(out, inp, wte, wpe):
    """The CPU kernel: out (B, T, C), inp (B, T) int32, wte (V, C), wpe (maxT, C). No checks."""
    B, T, C = out.shape
    for bt in prange(B * T):
        b, t = bt // T, bt % T
        token = inp[b, t]
        for i in range(C):
            out[b, t, i] = wte[token, i] + wpe[t, i]


CHANNEL_CHUNK = 64  # 256 bytes of a row per chunk: a few cache lines, long enough to vectorise


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def encoder_backward_cpu(dwte, dwpe, dout, inp):
    """The CPU kernel; accumulates. Threads split the channels, never the positions.

    Two positions with the same token add into the same dwte row, so splitting positions across threads
    would race. Splitting channels instead gives each thread its own columns of dwte and dwpe: no race,
    and the positions are visited in order, so the result is deterministic.
    """
    B, T, C = dout.shape
    for chunk in prange((C + CHANNEL_CHUNK - 1) // CHANNEL_CHUNK):
        lo, hi = chunk * CHANNEL_CHUNK, min(C, (chunk + 1) * CHANNEL_CHUNK)
        for b in range(B):
            for t in range(T):
                token = inp[b, t]
                for i in range(lo, hi):
                    dwte[token, i] += dout[b, t, i]
                    dwpe[t, i] += dout[b, t, i]


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Forward: one thread per output element, grid-stride. Element e = (b*T + t)*C + i; neighbouring threads
# read neighbouring channels of a wte row and a wpe row, so the loads are coalesced.
@cuda_kernel
def encoder_forward_kernel(out, inp, wte, wpe):
    B, T, C = out.shape
    n = B * T * C
    e = cuda.grid(1)
    while e < n:
        bt, i = e // C, e % C
        b, t = bt // T, bt % T
        out[b, t, i] = wte[inp[b, t], i] + wpe[t, i]
        e += cuda.gridsize(1)


# Backward v1: one thread per element of dout, atomics because repeated tokens (and every b for dwpe)
# add into the same address. Fully parallel; float atomics make the summation order run-dependent.
# Accuracy (v1 and v2): each dwte and dwpe element is one float32 running sum over its k terms; simulator
# (python -m gpt2lab.kernels.accuracy), 2 tokens x 2048 repeats and B = 2048: v2 had 20x (dwte) and 6.3x
# (dwpe) the error of a float32 cascade sum (PyTorch's CPU embedding backward is a running sum too). v3
# fixes it.
@cuda_kernel
def encoder_backward_kernel_v1(dwte, dwpe, dout, inp):
    B, T, C = dout.shape
    n = B * T * C
    e = cuda.grid(1)
    while e < n:
        bt, i = e // C, e % C
        b, t = bt // T, bt % T
        dy = dout[b, t, i]
        cuda.atomic.add(dwte, (inp[b, t], i), dy)
        cuda.atomic.add(dwpe, (t, i), dy)
        e += cuda.gridsize(1)


# Backward v2: deterministic. One thread per channel walks every position in order: it alone writes its
# column of dwte and dwpe, so plain += is safe and the sum is the same every run. Each step is coalesced
# (the warp reads 32 neighbouring channels of one dout row), but only C threads run: at C=768 that is a
# sliver of a GPU, and the B*T steps are sequential.
@cuda_kernel
def encoder_backward_kernel_v2(dwte, dwpe, dout, inp):
    B, T, C = dout.shape
    i = cuda.grid(1)
    if i >= C:
        return
    for b in range(B):
        for t in range(T):
            dy = dout[b, t, i]
            dwte[inp[b, t], i] += dy
            dwpe[t, i] += dy


# Backward v3: deterministic and accurate. v1 and v2 add a token's k gradients (and dwpe's B) one by one
# into a float32 running sum, whose error grows with k. v3 first groups the positions by token on the host
# (a stable argsort of the B*T ids: `order`, and `starts` where each token's run begins), then one thread
# per (token, channel) walks that token's positions with a compensated sum (_cuda.compensated_add) and
# adds the total to dwte once: no two threads share an address, so no atomics, and the result is the same
# every run. dwpe: one thread per (t, channel) sums over the batch, also compensated. The price: the ids
# are copied to the host each call (B*T ints) for the argsort. Simulator: 0.75x (dwte) and 0.09x (dwpe)
# the error of a float32 cascade sum (v2: 20x and 6.3x).
@cuda_kernel
def encoder_backward_dwte_kernel_v3(dwte, dout, inp, order, starts):
    B, T, C = dout.shape
    run = cuda.blockIdx.x  # one token's run of positions
    i = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
    if i >= C:
        return
    acc, comp = float32(0.0), float32(0.0)
    for j in range(starts[run], starts[run + 1]):
        bt = order[j]
        acc, comp = compensated_add(acc, comp, dout[bt // T, bt % T, i])
    first = order[starts[run]]
    dwte[inp[first // T, first % T], i] += acc + comp


@cuda_kernel
def encoder_backward_dwpe_kernel_v3(dwpe, dout):
    B, T, C = dout.shape
    e = cuda.grid(1)
    if e >= T * C:
        return
    t, i = e // C, e % C
    acc, comp = float32(0.0), float32(0.0)
    for b in range(B):
        acc, comp = compensated_add(acc, comp, dout[b, t, i])
    dwpe[t, i] += acc + comp


def token_runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts), int32 numpy, of host ids (B, T): positions b*T + t sorted by token id (stable), and
    the index in `order` where each distinct token's run begins, plus len(order) at the end."""
    ids = np.asarray(ids).reshape(-1)
    order = np.argsort(ids, kind="stable").astype(np.int32)
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1], True]).astype(np.int32)
    return order, starts


def _token_runs(inp):
    """token_runs of inp, on the device (inp copied back to the host for the sort)."""
    order, starts = token_runs(on_host(inp))
    return cuda.to_device(order), cuda.to_device(starts)


_ACT = "float32[:, :, ::1]"
_MAT = "float32[:, ::1]"
_IDS = "int32[:, ::1]"
# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
CUDA_KERNELS = (
    (encoder_forward_kernel, f"void({_ACT}, {_IDS}, {_MAT}, {_MAT})"),
    (encoder_backward_kernel_v1, f"void({_MAT}, {_MAT}, {_ACT}, {_IDS})"),
    (encoder_backward_kernel_v2, f"void({_MAT}, {_MAT}, {_ACT}, {_IDS})"),
    (encoder_backward_dwte_kernel_v3, f"void({_MAT}, {_ACT}, {_IDS}, int32[::1], int32[::1])"),
    (encoder_backward_dwpe_kernel_v3, f"void({_MAT}, {_ACT})"),
)
CPU_VERSIONS = ("loops",)
CUDA_VERSIONS = ("v1", "v2", "v3")  # of the backward; the forward has one kernel
DEFAULT_VERSION = {"cpu": "loops", "cuda": "v3"}  # v3: deterministic, and as accurate as PyTorch's float32
RUN_THREADS = 32  # v3: threads per (token run, channel block)
BLOCK = 256


def _launch_elementwise(kernel, n, *args):
    kernel[grid_stride(n, BLOCK)](*args)


# ---------------------------------------------------------------- public entry points
def _check_ids(op, inp, V, maxT):
    """inp: (B, T) int32 with T <= maxT; on the CPU also every id in [0, V) (on the GPU that check would
    copy inp back to the host; an out-of-range id there reads or writes out of bounds)."""
    B, T = check_array(op, "inp", inp, (None, None), dtype=np.int32, dims="B,T").shape
    if T > maxT:
        raise ValueError(f"{op}: T={T} positions but wpe has only maxT={maxT} rows (T must be <= maxT)")
    if isinstance(inp, np.ndarray) and inp.size:
        lo, hi = int(inp.min()), int(inp.max())
        if lo < 0 or hi >= V:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: token id {bad} in inp is outside the vocabulary [0, {V}) of wte")
    return B, T


def encoder_forward(out, inp, wte, wpe):
    """out[b, t] = wte[inp[b, t]] + wpe[t].

    out (B, T, C) float32; inp (B, T) int32 in [0, V); wte (V, C) float32; wpe (maxT, C) float32, T <= maxT.
    Numpy arrays run on the CPU, CUDA device arrays on the GPU.
    """
    op = "encoder_forward"
    V, C = check_array(op, "wte", wte, (None, None), dims="V,C").shape
    maxT = check_array(op, "wpe", wpe, (None, C), dims="maxT,C").shape[0]
    B, T = _check_ids(op, inp, V, maxT)
    check_array(op, "out", out, (B, T, C), dims="B,T,C")
    if check_same_device(op, out=out, inp=inp, wte=wte, wpe=wpe):
        _launch_elementwise(encoder_forward_kernel, B * T * C, out, inp, wte, wpe)
    else:
        encoder_forward_cpu(out, inp, wte, wpe)


def encoder_backward(dwte, dwpe, dout, inp, version=None, runs=None):
    """dwte[inp[b, t]] += dout[b, t]; dwpe[t] += dout[b, t] (scatter-add, accumulates).

    dwte (V, C), dwpe (maxT, C), dout (B, T, C) float32; inp (B, T) int32 in [0, V), T <= maxT.
    Numpy runs on the CPU, device arrays on the GPU; `version` one of the module docstring's (None:
    DEFAULT_VERSION). runs (CUDA v3 only): `token_runs(ids)` of the same ids, already on the device (the model
    uploads them with the batch), so v3 need not copy inp back and upload its sort in the middle of a step.
    """
    op = "encoder_backward"
    V, C = check_array(op, "dwte", dwte, (None, None), dims="V,C").shape
    maxT = check_array(op, "dwpe", dwpe, (None, C), dims="maxT,C").shape[0]
    B, T = _check_ids(op, inp, V, maxT)
    check_array(op, "dout", dout, (B, T, C), dims="B,T,C")
    on_device = check_same_device(op, dwte=dwte, dwpe=dwpe, dout=dout, inp=inp)
    version = pick_version(op, version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if version == "loops":
        encoder_backward_cpu(dwte, dwpe, dout, inp)
    elif version == "v1":
        _launch_elementwise(encoder_backward_kernel_v1, B * T * C, dwte, dwpe, dout, inp)
    elif version == "v2":
        encoder_backward_kernel_v2[ceil_div(C, BLOCK), BLOCK](dwte, dwpe, dout, inp)
    elif B * T:  # v3
        order, starts = runs if runs is not None else _token_runs(inp)
        encoder_backward_dwte_kernel_v3[(starts.size - 1, ceil_div(C, RUN_THREADS)), RUN_THREADS](
            dwte, dout, inp, order, starts)
        encoder_backward_dwpe_kernel_v3[ceil_div(T * C, BLOCK), BLOCK](dwpe, dout)


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    B, T, C, V, maxT = shape["B"], shape["T"], shape["C"], shape["V"], shape["maxT"]
    inp = rng.integers(0, V, (B, T), dtype=np.int32)
    # repeated tokens guaranteed: the scatter-add must sum them (B*T >= 2 in every shape)
    inp.flat[-1] = inp.flat[0]
    inp.flat[inp.size // 2] = inp.flat[0]
    return {"inp": inp,
            "wte": rng.standard_normal((V, C)).astype(np.float32),
            "wpe": rng.standard_normal((maxT, C)).astype(np.float32),
            "dout": rng.standard_normal((B, T, C)).astype(np.float32)}


def _run(inputs, version="loops"):
    wte, wpe, dout, inp = inputs["wte"], inputs["wpe"], inputs["dout"], inputs["inp"]
    fwd = {"out": np.zeros(dout.shape, np.float32), "inp": inp, "wte": wte, "wpe": wpe}
    bwd = {"dwte": np.zeros_like(wte), "dwpe": np.zeros_like(wpe), "dout": dout, "inp": inp}
    if version in CPU_VERSIONS:
        encoder_forward(**fwd)
        encoder_backward(**bwd, version=version)
        return {"out": fwd["out"], "dwte": bwd["dwte"], "dwpe": bwd["dwpe"]}
    return (run_on_device(encoder_forward, fwd, ["out"])
            | run_on_device(lambda **a: encoder_backward(**a, version=version), bwd, ["dwte", "dwpe"]))


SPEC = OpSpec(
    name="encoder",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp"], i["wte"], i["wpe"], i["dout"]),
    versions={"cpu": {v: (lambda i, v=v: _run(i, v)) for v in CPU_VERSIONS},
              "cuda": {v: (lambda i, v=v: _run(i, v)) for v in CUDA_VERSIONS}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 768, "V": 50257, "maxT": 1024},
                {"B": 3, "T": 1, "C": 37, "V": 11, "maxT": 5},
                {"B": 2, "T": 7, "C": 65, "V": 5, "maxT": 9}],
        "cudasim": [{"B": 2, "T": 3, "C": 37, "V": 4, "maxT": 5}, {"B": 1, "T": 5, "C": 40, "V": 7, "maxT": 5}],
        "cuda": [{"B": 8, "T": 1024, "C": 768, "V": 50257, "maxT": 1024},
                 {"B": 3, "T": 1, "C": 37, "V": 11, "maxT": 5}, {"B": 2, "T": 7, "C": 65, "V": 5, "maxT": 9}],
    },
    backward=("dwte", "dwpe"),
    teaching=("v1", "v2"),  # less accurate than PyTorch on long sums: see kernels/accuracy.py
)
