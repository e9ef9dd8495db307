"""Softmax and cross-entropy, fused: GPT-2's classifier head, over the vocabulary (V = 50257).

Forward, per position (b, t) with logits x = logits[b, t, :] (V,) and target token y = targets[b, t]:

    probs[v] = exp(x[v]) / sum_u exp(x[u])          losses[b, t] = -log probs[y]

Numerical stability. exp overflows float32 for arguments above ~88.7, and logits of a trained model can
be large. Softmax does not change when the same constant is subtracted from every logit (the factor
exp(-m) cancels between numerator and denominator), so we subtract the row max m: every exponent is then
<= 0, every exp is in (0, 1], and the largest is exactly 1, so the sum is >= 1 and never 0.
The loss is computed as log-sum-exp rather than -log(probs[y]):

    losses[b, t] = log(sum_u exp(x[u] - m)) - (x[y] - m)

equal in exact arithmetic, but probs[y] may underflow to 0 in float32 (a confidently wrong model) and
-log 0 is inf, while this form stays finite and accurate.

Backward. With p = probs and s = sum_u exp(x[u]): -log p[y] = log s - x[y], and d log s / d x[v] = p[v], so

    d losses[b, t] / d x[v] = p[v] - [v == y]        dlogits[b, t, v] += (probs[b, t, v] - onehot(y)[v]) * dlosses[b, t]

That is why the forward caches probs: the backward needs nothing else (plus the targets). Like llm.c, the
backward accumulates into dlogits. In training dlosses = 1 / (B*T) (the mean over positions).

Shapes: logits, probs, dlogits (B, T, V) float32; losses, dlosses (B, T) float32; targets (B, T) int32,
each in [0, V) (checked on the host; an out-of-range target would read outside the row).

Versions (`version=` of crossentropy_forward; DEFAULT_VERSION below, chosen by the rule in docs/kernels.md):

    CPU  "loops"  one row per parallel loop iteration: max, sum of exp, write (default)
    CUDA "v1"     one thread per row, three serial passes
         "v2"     one block per row, shared-memory tree reductions for the max and the sum
         "v3"     v2 with the one-pass online max-and-sum (default)
The backward is one elementwise kernel for every version.

The fused classifier (`fused_classifier`, CUDA only; llm.c's fused_classifier): the forward and the backward
in one kernel, one block per row. Pass 1 finds the row's max and sum of exp online (v3's pairs, each thread's
sum compensated, then the tree); pass 2 writes dlogits = (p - onehot) * dloss directly, p recomputed from the
logit, so probs (B, T, V) is never written (unless write_probs: the live parity check reads it) and never read
back: the logits are read twice and dlogits written once, where v3 + backward read 3 and write 2 (B, T, V)
tensors, in one launch instead of two. It takes dlosses (B, T) like the backward (1/(B*T) everywhere in
training: the model fills it once per batch shape) and writes dlogits (=, not +=): the model leaves that
region of its gradient buffer out of the per-step zeroing.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, float32, njit, prange

from ._cuda import block_max, block_sum, ceil_div, compensated_add, device_function, grid_stride, run_on_device, view
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._vecmath import exp_neg
from ._validate import check_array, check_block, check_same_device, pick_version
from .check import OpSpec


# ---------------------------------------------------------------- the PyTorch reference
def reference(logits, targets, dlosses):
    """PyTorch (float64): F.softmax and F.cross_entropy(reduction="none"), and the autograd dlogits."""
    import torch.nn.functional as F

    def fn(logits, targets):
        B, T, V = logits.shape
        losses = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), reduction="none")
        return {"losses": losses.reshape(B, T), "probs": F.softmax(logits, dim=-1)}
    return autograd(fn, {"logits": logits, "targets": targets}, ("logits",), {"losses": dlosses})


# ---------------------------------------------------------------- CPU (numba @njit)
# One row (one position) per iteration of a parallel loop: rows are independent, and a row of 50257
# floats is long enough that each thread's inner loops vectorise. x - max <= 0, so exp is _vecmath's
# exp_neg (plain arithmetic LLVM vectorises; libm's expf runs one element at a time: 2.5x the step's
# softmax time on the tiny config's 256 x 50257 logits).
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _crossentropy_forward_cpu(losses, probs, logits, targets):
    """losses (N,), probs (N, V) from logits (N, V) and targets (N,)."""
    N, V = logits.shape
    for n in prange(N):
        x = logits[n]
        m = x.max()
        total = np.float32(0.0)
        for v in range(V):
            e = exp_neg(x[v] - m)
            probs[n, v] = e
            total += e
        inv_total = np.float32(1.0) / total
        for v in range(V):
            probs[n, v] *= inv_total
        losses[n] = np.log(total) - (x[targets[n]] - m)


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _crossentropy_backward_cpu(dlogits, dlosses, probs, targets):
    """dlogits (N, V) += (probs - onehot(targets)) * dlosses[:, None]."""
    N, V = probs.shape
    for n in prange(N):
        d = dlosses[n]
        for v in range(V):
            dlogits[n, v] += probs[n, v] * d
        dlogits[n, targets[n]] -= d


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# v1: one thread per row, three serial passes over its V logits (max; sum of exp; write probs). Simple,
# but with B*T = 256 rows only 256 threads run (a GPU wants tens of thousands), each doing 150k
# loads, and neighbouring threads read addresses V floats apart (no coalescing). Accuracy: the sum of
# V = 50257 exponentials is one float32 running sum; simulator (python -m gpt2lab.kernels.accuracy), one
# row: 34x PyTorch float32's error on the loss, 28x on probs. v2 and v3 sum BLOCK strided parts and join
# them in a tree: v3 measured 0.76x (loss) and 0.05x (probs).
@cuda_kernel
def crossentropy_forward_kernel_v1(losses, probs, logits, targets):
    N, V = logits.shape
    n = cuda.grid(1)
    while n < N:
        m = float32(-math.inf)
        for v in range(V):
            m = max(m, logits[n, v])
        total = float32(0.0)
        for v in range(V):
            total += math.exp(logits[n, v] - m)
        inv_total = float32(1.0) / total
        for v in range(V):
            probs[n, v] = math.exp(logits[n, v] - m) * inv_total
        losses[n] = math.log(total) - (logits[n, targets[n]] - m)
        n += cuda.gridsize(1)


# v2: one block of BLOCK threads per row. Thread i handles elements i, i + BLOCK, i + 2 BLOCK, ... so a
# warp reads 32 neighbouring floats at a time (coalesced), and the per-thread partial max and sum are
# combined by a shared-memory tree reduction (log2 BLOCK steps). B*T*BLOCK threads are in flight.
BLOCK = 256  # a power of two, for the tree reductions


# The helpers are `device_function`s (_cuda.py): inlined by NVVM into the kernels that call them.


@device_function
def _write_probs(losses, probs, logits, targets, n, m, total):
    """The last pass, shared by v2 and v3: probs[n] = exp(x - m) / total; thread 0 writes the loss."""
    V = logits.shape[1]
    inv_total = float32(1.0) / total
    for v in range(cuda.threadIdx.x, V, BLOCK):
        probs[n, v] = math.exp(logits[n, v] - m) * inv_total
    if cuda.threadIdx.x == 0:
        losses[n] = math.log(total) - (logits[n, targets[n]] - m)


@cuda_kernel
def crossentropy_forward_kernel_v2(losses, probs, logits, targets):
    buf = cuda.shared.array(BLOCK, float32)
    n = cuda.blockIdx.x
    V = logits.shape[1]
    thread_max = float32(-math.inf)
    for v in range(cuda.threadIdx.x, V, BLOCK):
        thread_max = max(thread_max, logits[n, v])
    m = block_max(buf, thread_max)
    thread_sum = float32(0.0)
    for v in range(cuda.threadIdx.x, V, BLOCK):
        thread_sum += math.exp(logits[n, v] - m)
    total = block_sum(buf, thread_sum)
    _write_probs(losses, probs, logits, targets, n, m, total)


# v3: the online softmax (Milakov & Gimelshein 2018; the trick inside flash attention). v2 reads the
# row three times; v3 finds the max and the sum in one pass. Each thread keeps a running max m and a sum s
# of exp(x - m); when a larger x arrives the old sum is rescaled by exp(m_old - m_new), so s is always
# relative to the current max. Two (m, s) pairs combine the same way, which makes the block reduction
# work too. Two passes over the logits instead of three: the op is memory-bound, so ~1.5x less traffic.
@device_function
def _combine(m1, s1, m2, s2):
    """(max, sum of exp(x - max)) of two parts given as (m1, s1) and (m2, s2)."""
    m = max(m1, m2)
    if m == float32(-math.inf):  # both parts empty: avoid exp(-inf - -inf) = nan
        return m, float32(0.0)
    return m, s1 * math.exp(m1 - m) + s2 * math.exp(m2 - m)


@cuda_kernel
def crossentropy_forward_kernel_v3(losses, probs, logits, targets):
    buf_m = cuda.shared.array(BLOCK, float32)
    buf_s = cuda.shared.array(BLOCK, float32)
    n = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    V = logits.shape[1]
    m, s = float32(-math.inf), float32(0.0)
    for v in range(tid, V, BLOCK):
        m, s = _combine(m, s, logits[n, v], float32(1.0))  # one element x is the pair (x, exp(0) = 1)
    # _cuda.block_sum's tree and barriers, over (max, sum) pairs combined by _combine
    buf_m[tid], buf_s[tid] = m, s
    cuda.syncthreads()
    stride = BLOCK // 2
    while stride > 0:
        if tid < stride:
            buf_m[tid], buf_s[tid] = _combine(buf_m[tid], buf_s[tid], buf_m[tid + stride], buf_s[tid + stride])
        cuda.syncthreads()
        stride //= 2
    _write_probs(losses, probs, logits, targets, n, buf_m[0], buf_s[0])


# Backward, every version: elementwise over the (N*V) flat arrays, a grid-stride loop.
@cuda_kernel
def crossentropy_backward_kernel(dlogits, dlosses, probs, targets, V):
    i = cuda.grid(1)
    while i < dlogits.size:
        n = i // V
        onehot = float32(1.0) if i - n * V == targets[n] else float32(0.0)
        dlogits[i] += (probs[i] - onehot) * dlosses[n]
        i += cuda.gridsize(1)


# The fused classifier (see the module docstring): forward and backward of a row in one block, probs optional.
@cuda_kernel
def fused_classifier_kernel(losses, dlogits, probs, logits, targets, dlosses, write_probs):
    buf_m = cuda.shared.array(BLOCK, float32)
    buf_s = cuda.shared.array(BLOCK, float32)
    n = cuda.blockIdx.x
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x   # blockDim: a power of two <= BLOCK
    V = logits.shape[1]
    # pass 1: this thread's (max, sum of exp(x - max)); the sum compensated, and rescaled with its compensation
    # whenever the max grows (both parts of total + comp are relative to the same max)
    m, s, comp = float32(-math.inf), float32(0.0), float32(0.0)
    for v in range(tid, V, threads):
        x = logits[n, v]
        if x > m:
            scale = math.exp(m - x)   # exp(-inf) = 0 the first time
            s, comp, m = s * scale, comp * scale, x
        s, comp = compensated_add(s, comp, math.exp(x - m))
    buf_m[tid], buf_s[tid] = m, s + comp
    cuda.syncthreads()
    stride = threads // 2
    while stride > 0:   # the tree of v3 over (max, sum) pairs
        if tid < stride:
            buf_m[tid], buf_s[tid] = _combine(buf_m[tid], buf_s[tid], buf_m[tid + stride], buf_s[tid + stride])
        cuda.syncthreads()
        stride //= 2
    m, total = buf_m[0], buf_s[0]
    y = targets[n]
    if tid == 0:
        losses[n] = math.log(total) - (logits[n, y] - m)
    # pass 2: the gradient straight from the logits
    inv_total = float32(1.0) / total
    dloss = dlosses[n]
    for v in range(tid, V, threads):
        p = math.exp(logits[n, v] - m) * inv_total
        if write_probs:
            probs[n, v] = p
        onehot = float32(1.0) if v == y else float32(0.0)
        dlogits[n, v] = (p - onehot) * dloss


# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
_FWD_SIG = "void(float32[::1], float32[:, ::1], float32[:, ::1], int32[::1])"
CUDA_KERNELS = (
    (crossentropy_forward_kernel_v1, _FWD_SIG),
    (crossentropy_forward_kernel_v2, _FWD_SIG),
    (crossentropy_forward_kernel_v3, _FWD_SIG),
    (crossentropy_backward_kernel, "void(float32[::1], float32[::1], float32[::1], int32[::1], int64)"),
    (fused_classifier_kernel, "void(float32[::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], int32[::1], "
                              "float32[::1], boolean)"),
)
CPU_VERSIONS = ("loops",)
CUDA_VERSIONS = ("v1", "v2", "v3")
DEFAULT_VERSION = {"cpu": "loops", "cuda": "v3"}  # v3: as accurate as PyTorch's float32, in one pass


def _launch_forward(version, losses, probs, logits, targets):
    N = logits.shape[0]
    if version == "v1":
        crossentropy_forward_kernel_v1[ceil_div(N, 128), 128](losses, probs, logits, targets)
    elif version == "v2":
        crossentropy_forward_kernel_v2[N, BLOCK](losses, probs, logits, targets)
    else:
        crossentropy_forward_kernel_v3[N, BLOCK](losses, probs, logits, targets)


# ---------------------------------------------------------------- public entry points
def _check(fn, logits_name, logits, targets, **others):
    """Validate logits-like (B, T, V), targets (B, T) int32 in [0, V), and others (B, T). Returns B, T, V."""
    check_array(fn, logits_name, logits, (None, None, None), dims="B,T,V")
    B, T, V = logits.shape
    check_array(fn, "targets", targets, (B, T), dtype=np.int32, dims="B,T")
    for name, (a, shape, dims) in others.items():
        check_array(fn, name, a, shape(B, T, V), dims=dims)
    # The range is checked on the host only, as encoder's ids are: on the GPU it would copy the targets back
    # at every call (twice per training step); KernelGPT2 checks the batch on the host before uploading it.
    t = targets
    if isinstance(t, np.ndarray) and t.size and (t.min() < 0 or t.max() >= V):
        bad = t[(t < 0) | (t >= V)][0]
        raise ValueError(f"{fn}: targets must be in [0, V) = [0, {V}), got {bad}")
    return B, T, V


def crossentropy_forward(losses, probs, logits, targets, version=None):
    """probs (B, T, V) = softmax(logits (B, T, V)); losses (B, T) = -log probs[b, t, targets[b, t]].

    Numpy arrays run on the CPU, CUDA device arrays on the GPU; `version` one of the module docstring's
    (None: DEFAULT_VERSION).
    """
    B, T, V = _check("crossentropy_forward", "logits", logits, targets,
                     probs=(probs, lambda B, T, V: (B, T, V), "B,T,V"), losses=(losses, lambda B, T, V: (B, T), "B,T"))
    N = B * T
    args = (view(losses, N), view(probs, N, V), view(logits, N, V), view(targets, N))
    on_device = check_same_device("crossentropy_forward", losses=losses, probs=probs, logits=logits,
                                  targets=targets)
    version = pick_version("crossentropy_forward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS,
                           DEFAULT_VERSION)
    if on_device:
        _launch_forward(version, *args)
    else:
        _crossentropy_forward_cpu(*args)


def crossentropy_backward(dlogits, dlosses, probs, targets):
    """dlogits (B, T, V) += (probs - onehot(targets)) * dlosses[..., None]; dlosses (B, T)."""
    B, T, V = _check("crossentropy_backward", "probs", probs, targets,
                     dlogits=(dlogits, lambda B, T, V: (B, T, V), "B,T,V"),
                     dlosses=(dlosses, lambda B, T, V: (B, T), "B,T"))
    N = B * T
    if check_same_device("crossentropy_backward", dlogits=dlogits, dlosses=dlosses, probs=probs, targets=targets):
        n = N * V
        crossentropy_backward_kernel[grid_stride(n)](
            view(dlogits, n), view(dlosses, N), view(probs, n), view(targets, N), V)
    else:
        _crossentropy_backward_cpu(view(dlogits, N, V), view(dlosses, N), view(probs, N, V),
                                   view(targets, N))


def fused_classifier(losses, dlogits, probs, logits, targets, dlosses, write_probs: bool = False,
                     threads: int | None = None):
    """The fused classifier (module docstring), CUDA device arrays only: losses (B, T) = cross-entropy of
    logits (B, T, V) at targets (B, T); dlogits (B, T, V) = (softmax(logits) - onehot(targets)) * dlosses[..., None],
    written (=, not +=); probs (B, T, V) = softmax(logits) only when write_probs (else probs may be None: a
    lean model keeps no probs buffer). threads: a row's block, a power of two <= BLOCK (None: BLOCK on a GPU; 32
    in numba's simulator, which runs every thread in Python; tests/test_gpu_launches_cudasim.py runs
    BLOCK there too)."""
    if probs is None:
        if write_probs:
            raise ValueError("fused_classifier: write_probs=True needs a probs array (B, T, V), got None")
        probs = dlogits   # never touched when write_probs is False; the same type, so the same compiled kernel
    B, T, V = _check("fused_classifier", "logits", logits, targets,
                     dlogits=(dlogits, lambda B, T, V: (B, T, V), "B,T,V"),
                     probs=(probs, lambda B, T, V: (B, T, V), "B,T,V"), losses=(losses, lambda B, T, V: (B, T), "B,T"),
                     dlosses=(dlosses, lambda B, T, V: (B, T), "B,T"))
    if not check_same_device("fused_classifier", losses=losses, dlogits=dlogits, probs=probs, logits=logits,
                             targets=targets, dlosses=dlosses):
        raise TypeError("fused_classifier: a CUDA kernel: pass CUDA device arrays (on the CPU, crossentropy_forward "
                        "then crossentropy_backward)")
    N = B * T
    if threads is None:
        from numba import config
        threads = 32 if config.ENABLE_CUDASIM else BLOCK
    check_block("fused_classifier", "threads", threads, BLOCK)
    fused_classifier_kernel[N, threads](view(losses, N), view(dlogits, N, V), view(probs, N, V),
                                      view(logits, N, V), view(targets, N), view(dlosses, N), bool(write_probs))


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    B, T, V = shape["B"], shape["T"], shape["V"]
    logits = (rng.standard_normal((B, T, V)) * 3).astype(np.float32)
    logits[0, 0] += 100  # exp(100) overflows float32: only the max subtraction survives this row
    return {"logits": logits, "targets": rng.integers(0, V, (B, T)).astype(np.int32),
            "dlosses": rng.standard_normal((B, T)).astype(np.float32)}


def _run(inputs, version="loops"):
    """Forward then backward (from our own probs) on fresh buffers; a CPU version on numpy, a CUDA one on the GPU."""
    logits, targets, dlosses = inputs["logits"], inputs["targets"], inputs["dlosses"]
    args = {"losses": np.zeros(targets.shape, np.float32), "probs": np.zeros_like(logits), "logits": logits,
            "targets": targets}
    if version in CUDA_VERSIONS:
        out = run_on_device(functools.partial(crossentropy_forward, version=version), args, ["losses", "probs"])
        bargs = {"dlogits": np.zeros_like(logits), "dlosses": dlosses, "probs": out["probs"], "targets": targets}
        return {**out, **run_on_device(crossentropy_backward, bargs, ["dlogits"])}
    crossentropy_forward(**args, version=version)
    dlogits = np.zeros_like(logits)
    crossentropy_backward(dlogits, dlosses, args["probs"], targets)
    return {"losses": args["losses"], "probs": args["probs"], "dlogits": dlogits}


def _run_fused(inputs):
    """The fused classifier on the GPU (probs written too, so all three outputs are checked)."""
    logits, targets = inputs["logits"], inputs["targets"]
    args = {"losses": np.zeros(targets.shape, np.float32), "dlogits": np.zeros_like(logits),
            "probs": np.zeros_like(logits), "logits": logits, "targets": targets, "dlosses": inputs["dlosses"]}
    return run_on_device(functools.partial(fused_classifier, write_probs=True), args, ["losses", "probs", "dlogits"])


SPEC = OpSpec(
    name="crossentropy",
    make_inputs=_inputs,
    reference=lambda i: reference(i["logits"], i["targets"], i["dlosses"]),
    versions={"cpu": {v: functools.partial(_run, version=v) for v in CPU_VERSIONS},
              "cuda": {**{v: functools.partial(_run, version=v) for v in CUDA_VERSIONS}, "fused": _run_fused}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "V": 50257}, {"B": 3, "T": 1, "V": 50257}, {"B": 2, "T": 7, "V": 37}],
        "cudasim": [{"B": 2, "T": 2, "V": 37}, {"B": 1, "T": 1, "V": 600}],
        "cuda": [{"B": 4, "T": 256, "V": 50257}, {"B": 3, "T": 1, "V": 37}],
    },
    backward=("dlogits",),
    teaching=("v1",),  # less accurate than PyTorch on long sums: see kernels/accuracy.py
)
