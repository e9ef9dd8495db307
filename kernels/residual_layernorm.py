"""The residual add and the LayerNorm that reads its result, fused (llm.c's fused_residual_forward).

Every GPT-2 block ends in a residual add whose result goes straight into a LayerNorm: residual2 = x + attn
feeds ln_2, residual3 = residual2 + mlp feeds the next block's ln_1 (the last one ln_f). Run as two
kernels, the add writes the stream and the LayerNorm reads it back; fused, one kernel reads inp1 and inp2
once, writes the stream and normalises it in the same pass.

Forward, for one row (b, t) of C channels, with weight w and bias b (C,) and LayerNorm's math
(kernels/layernorm.py, eps = 1e-5):

    residual = inp1 + inp2
    mean, rstd = the mean and 1/sqrt(var + eps) of the residual row
    out = (residual - mean) * rstd * w + b

Backward. The stream `residual` has two consumers: the LayerNorm and whatever comes next on the stream (the
next residual add). Its gradient is the sum of both, and an add passes its gradient unchanged to each
summand, so

    dinp1 = dinp2 = dresidual + dinp_ln,   dinp_ln = rstd (dnorm - mean(dnorm) - norm mean(dnorm norm))

with dnorm = dout * w, dweight += sum over rows of norm * dout, dbias += sum of dout (LayerNorm's
backward). The fused backward accumulates dinp += dresidual + dinp_ln in the LayerNorm's own pass: the
separate residual backward (dinp1 += dout; dinp2 += dout, five passes over a (B, T, C) tensor) disappears.
One buffer serves both summands: dinp1 and dinp2 are the same numbers, so the caller passes that buffer
as the gradient of each (the branch's matmul backward reads it as its dout).

How the model calls them (gpt2/kernel_model.py, KernelGPT2(fused=True)'s forward_fused / backward_fused: the
path `gpt2lab train` takes on a GPU; the CPU keeps the per-op path). Forward, for block l, with ln1 of block 0 still
a plain layernorm_forward of `encoded`:

    k.residual_layernorm_forward(a["residual2"][l], a["ln2"][l], a["ln2_mean"][l], a["ln2_rstd"][l],
                                 residual, a["attproj"][l], p["ln2w"][l], p["ln2b"][l])
        replaces residual_forward(residual2 <- residual + attproj) and layernorm_forward(ln2 <- residual2);
    k.residual_layernorm_forward(a["residual3"][l], ln, mean, rstd, a["residual2"][l], a["fcproj"][l], w, b)
        replaces residual_forward(residual3 <- ...) and the next LayerNorm: block l+1's ln1 (ln, mean,
        rstd, w, b = a["ln1"][l+1], a["ln1_mean"][l+1], a["ln1_rstd"][l+1], p["ln1w"][l+1], p["ln1b"][l+1]),
        or after the last block ln_f (a["lnf"], a["lnf_mean"], a["lnf_rstd"], p["lnfw"], p["lnfb"]).
Backward, for block l (ln_f's layernorm_backward into ga["residual3"][L-1] stays as it is):

    k.matmul_backward(..., ga["residual3"][l], a["fch_gelu"][l], ...)   dout of the MLP projection: the
        stream's gradient itself (d fcproj = d residual3); the residual_backward before it disappears
    k.residual_layernorm_backward(ga["residual2"][l], g["ln2w"][l], g["ln2b"][l], ga["ln2"][l],
                                  ga["residual3"][l], a["residual2"][l], p["ln2w"][l], a["ln2_mean"][l],
                                  a["ln2_rstd"][l])                      replaces ln_2's layernorm_backward
    k.matmul_backward(..., ga["residual2"][l], a["atty"][l], ...)       dout of the attention projection
        (d attproj = d residual2); the second residual_backward disappears
    k.residual_layernorm_backward(dresidual, g["ln1w"][l], g["ln1b"][l], ga["ln1"][l], ga["residual2"][l],
                                  residual, p["ln1w"][l], a["ln1_mean"][l], a["ln1_rstd"][l])
                                                                         replaces ln_1's layernorm_backward
ga["attproj"] and ga["fcproj"] are then never written (the parity check reads residual2's and residual3's
gradients in their place). tests/test_residual_layernorm_model.py runs exactly these lines by hand on a tiny
model; tests/test_fused_model.py checks the model's own fused path.

Shapes: inp1, inp2, residual, out, dout, dresidual, dinp (B, T, C); mean, rstd (B, T); weight, bias,
dweight, dbias (C,). float32, C-contiguous.

Versions (one per device, so the entry points take no `version=`; DEFAULT_VERSION below):

    CPU  "loops"  one row per parallel loop iteration (default)
    CUDA "v1"     forward: one block per row, the add in the first pass, LayerNorm v2's tree sums;
                  backward: LayerNorm v4's dinp kernel adding dresidual, and its accurate dweight, dbias
                  kernel (default; the model calls it on its fused path only)
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda, float32, njit, prange

from ._cuda import block_sum, ceil_div, run_on_device, view
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_same_device
from .check import OpSpec
from .layernorm import (BLOCK, EPS, PARAM_COLS, PARAM_LANES, block_threads, layernorm_backward_cpu, normalise_row,
                        layernorm_backward_params_kernel_v4)

EPS32 = np.float32(EPS)


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp1, inp2, weight, bias, dout, dresidual):
    """PyTorch, the composition: residual = inp1 + inp2, F.layer_norm(residual); autograd with the gradients
    of both outputs (dout of the LayerNorm, dresidual of the stream from its other consumers)."""
    import torch
    import torch.nn.functional as F

    def forward(inp1, inp2, weight, bias):
        residual = inp1 + inp2
        var = residual.var(-1, unbiased=False)
        return {"residual": residual, "out": F.layer_norm(residual, (residual.shape[-1],), weight, bias, eps=EPS),
                "mean": residual.mean(-1), "rstd": torch.rsqrt(var + EPS)}
    return autograd(forward, {"inp1": inp1, "inp2": inp2, "weight": weight, "bias": bias},
                    ("inp1", "inp2", "weight", "bias"), {"out": dout, "residual": dresidual})


# ---------------------------------------------------------------- CPU (numba @njit)
# LayerNorm's CPU loops (kernels/layernorm.py) with the add in the first pass over the row.
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def residual_layernorm_forward_cpu(residual, out, mean, rstd, inp1, inp2, weight, bias):
    """The CPU kernel on (N, C) views. No checks."""
    N, C = inp1.shape
    inv_c = np.float32(1.0 / C)
    for r in prange(N):
        x = residual[r]
        m = np.float32(0.0)
        for i in range(C):
            x[i] = inp1[r, i] + inp2[r, i]  # the stream, written once
            m += x[i]
        m *= inv_c
        mean[r] = m
        rstd[r] = normalise_row(out[r], x, m, inv_c, weight, bias)  # LayerNorm's own row pass


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _add_rows(dinp, dresidual):
    for r in prange(dinp.shape[0]):
        for i in range(dinp.shape[1]):
            dinp[r, i] += dresidual[r, i]


def residual_layernorm_backward_cpu(dinp, dweight, dbias, dout, dresidual, residual, weight, mean, rstd):
    """On (N, C) views; accumulates. On the CPU a row stays in L1 between two loops, so the add is a loop of
    its own before LayerNorm's backward (whose float64 dweight, dbias partials it reuses), not fused."""
    _add_rows(dinp, dresidual)
    layernorm_backward_cpu(dinp, dweight, dbias, dout, residual, weight, mean, rstd, numba.get_num_threads())


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Forward v1: LayerNorm v2's block per row (coalesced strided channels, _cuda.block_sum trees for the mean
# and the variance), with the add in the first pass: inp1 and inp2 are read once, the stream is written once,
# and the two later passes read it back (each thread reads only what it wrote itself, from the cache).
# Against residual_forward + layernorm_forward: one launch instead of two, and 4 (B, T, C) passes over
# memory (read inp1 and inp2, write residual and out; the re-reads hit the cache) instead of 5 (the
# LayerNorm reads the stream back from memory).
@cuda_kernel
def residual_layernorm_forward_kernel_v1(residual, out, mean, rstd, inp1, inp2, weight, bias):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    C = inp1.shape[1]
    inv_c = float32(1.0) / float32(C)
    acc = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        x = inp1[r, i] + inp2[r, i]
        residual[r, i] = x
        acc += x
    m = block_sum(scratch, acc) * inv_c
    acc = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        d = residual[r, i] - m
        acc += d * d
    s = float32(1.0) / math.sqrt(block_sum(scratch, acc) * inv_c + EPS32)
    for i in range(tid, C, cuda.blockDim.x):
        out[r, i] = (residual[r, i] - m) * s * weight[i] + bias[i]
    if tid == 0:
        mean[r] = m
        rstd[r] = s


# Backward v1: LayerNorm v4's dinp kernel (block per row, the two means as tree sums) that also adds the
# stream's gradient from above, dinp += dresidual + dinp_ln, in the same write; dweight and dbias by
# LayerNorm v4's own accurate kernel (compensated sums in row lanes, no atomics). Against residual_backward +
# layernorm_backward: one launch and one read-modify-write of a (B, T, C) tensor fewer, and no second buffer
# to write (the branch reads dinp itself as its gradient).
@cuda_kernel
def residual_layernorm_backward_dinp_kernel_v1(dinp, dout, dresidual, residual, weight, mean, rstd):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    C = residual.shape[1]
    m, s = mean[r], rstd[r]
    acc = float32(0.0)
    acc_norm = float32(0.0)
    for i in range(tid, C, cuda.blockDim.x):
        dnorm = dout[r, i] * weight[i]
        acc += dnorm
        acc_norm += dnorm * (residual[r, i] - m) * s
    inv_c = float32(1.0) / float32(C)
    dnorm_mean = block_sum(scratch, acc) * inv_c
    dnorm_norm_mean = block_sum(scratch, acc_norm) * inv_c
    for i in range(tid, C, cuda.blockDim.x):
        norm = (residual[r, i] - m) * s
        dinp[r, i] += dresidual[r, i] + s * (dout[r, i] * weight[i] - dnorm_mean - norm * dnorm_norm_mean)


_ROWS = "float32[:, ::1]"
_VEC = "float32[::1]"
# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py). The dweight, dbias kernel is
# layernorm's, compiled with layernorm's list.
CUDA_KERNELS = (
    (residual_layernorm_forward_kernel_v1,
     f"void({_ROWS}, {_ROWS}, {_VEC}, {_VEC}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC})"),
    (residual_layernorm_backward_dinp_kernel_v1,
     f"void({_ROWS}, {_ROWS}, {_ROWS}, {_ROWS}, {_VEC}, {_VEC}, {_VEC})"),
)


# ---------------------------------------------------------------- public entry points
CPU_VERSIONS = ("loops",)
CUDA_VERSIONS = ("v1",)
DEFAULT_VERSION = {"cpu": "loops", "cuda": "v1"}  # the only ones


def residual_layernorm_forward(residual, out, mean, rstd, inp1, inp2, weight, bias):
    """residual = inp1 + inp2, and out, mean, rstd = layernorm_forward of that residual, in one pass.

    residual, out, inp1, inp2: (B, T, C) float32; mean, rstd: (B, T); weight, bias: (C,). Numpy arrays run
    on the CPU, CUDA device arrays on the GPU.
    """
    op = "residual_layernorm_forward"
    B, T, C = check_array(op, "inp1", inp1, (None, None, None), dims="B,T,C").shape
    for name, a in (("inp2", inp2), ("residual", residual), ("out", out)):
        check_array(op, name, a, (B, T, C), dims="B,T,C")
    for name, a in (("mean", mean), ("rstd", rstd)):
        check_array(op, name, a, (B, T), dims="B,T")
    for name, a in (("weight", weight), ("bias", bias)):
        check_array(op, name, a, (C,), dims="C")
    N = B * T
    args = (view(residual, N, C), view(out, N, C), view(mean, N), view(rstd, N), view(inp1, N, C),
            view(inp2, N, C), weight, bias)
    if check_same_device(op, residual=residual, out=out, mean=mean, rstd=rstd, inp1=inp1, inp2=inp2,
                         weight=weight, bias=bias):
        residual_layernorm_forward_kernel_v1[N, block_threads(C)](*args)
    else:
        residual_layernorm_forward_cpu(*args)


def residual_layernorm_backward(dinp, dweight, dbias, dout, dresidual, residual, weight, mean, rstd):
    """dinp += dresidual + the LayerNorm's dinp; dweight, dbias += its parameter gradients.

    dinp is the gradient of both summands inp1 and inp2 (an add passes its gradient to each); dout the
    gradient of out, dresidual the gradient the stream `residual` gets from its other consumers.
    dinp, dout, dresidual, residual: (B, T, C) float32; dweight, dbias, weight: (C,); mean, rstd: (B, T),
    the forward's caches.
    """
    op = "residual_layernorm_backward"
    B, T, C = check_array(op, "residual", residual, (None, None, None), dims="B,T,C").shape
    for name, a in (("dinp", dinp), ("dout", dout), ("dresidual", dresidual)):
        check_array(op, name, a, (B, T, C), dims="B,T,C")
    for name, a in (("dweight", dweight), ("dbias", dbias), ("weight", weight)):
        check_array(op, name, a, (C,), dims="C")
    for name, a in (("mean", mean), ("rstd", rstd)):
        check_array(op, name, a, (B, T), dims="B,T")
    N = B * T
    rows = {k: view(a, N, C) for k, a in (("dinp", dinp), ("dout", dout), ("dresidual", dresidual),
                                             ("residual", residual))}
    mean, rstd = view(mean, N), view(rstd, N)
    if check_same_device(op, dinp=dinp, dweight=dweight, dbias=dbias, dout=dout, dresidual=dresidual,
                         residual=residual, weight=weight, mean=mean, rstd=rstd):
        residual_layernorm_backward_dinp_kernel_v1[N, block_threads(C)](
            rows["dinp"], rows["dout"], rows["dresidual"], rows["residual"], weight, mean, rstd)
        layernorm_backward_params_kernel_v4[ceil_div(C, PARAM_COLS), (PARAM_COLS, PARAM_LANES)](
            dweight, dbias, rows["dout"], rows["residual"], mean, rstd)
    else:
        residual_layernorm_backward_cpu(rows["dinp"], dweight, dbias, rows["dout"], rows["dresidual"],
                                        rows["residual"], weight, mean, rstd)


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    B, T, C = shape["B"], shape["T"], shape["C"]
    # the stream with a mean and scale of its own per row (a wrong mean or rstd shows), a branch output
    # of a smaller scale, as in GPT-2
    loc = rng.uniform(-3, 3, (B, T, 1))
    scale = rng.uniform(0.5, 4, (B, T, 1))
    return {"inp1": (loc + scale * rng.standard_normal((B, T, C))).astype(np.float32),
            "inp2": (0.5 * rng.standard_normal((B, T, C))).astype(np.float32),
            "weight": (1 + 0.5 * rng.standard_normal(C)).astype(np.float32),
            "bias": (0.5 * rng.standard_normal(C)).astype(np.float32),
            "dout": rng.standard_normal((B, T, C)).astype(np.float32),
            "dresidual": rng.standard_normal((B, T, C)).astype(np.float32)}


def _run(inputs, device=False):
    """Forward then backward; the dinp buffer starts non-zero and the start is taken off after (the backward
    must add, not overwrite). dinp is returned as both dinp1 and dinp2: one buffer, the gradient of each."""
    inp1, weight = inputs["inp1"], inputs["weight"]
    B, T, C = inp1.shape
    fwd = {"residual": np.zeros_like(inp1), "out": np.zeros_like(inp1), "mean": np.zeros((B, T), np.float32),
           "rstd": np.zeros((B, T), np.float32), "inp1": inp1, "inp2": inputs["inp2"], "weight": weight,
           "bias": inputs["bias"]}
    start = np.linspace(-1, 1, inp1.size, dtype=np.float32).reshape(inp1.shape)
    grads = {"dinp": start.copy(), "dweight": np.zeros(C, np.float32), "dbias": np.zeros(C, np.float32)}
    outs = ("residual", "out", "mean", "rstd")
    if device:
        res = run_on_device(residual_layernorm_forward, fwd, outs)
    else:
        residual_layernorm_forward(**fwd)
        res = {k: fwd[k] for k in outs}
    bwd = {**grads, "dout": inputs["dout"], "dresidual": inputs["dresidual"], "residual": res["residual"],
           "weight": weight, "mean": res["mean"], "rstd": res["rstd"]}
    if device:
        res |= run_on_device(residual_layernorm_backward, bwd, list(grads))
    else:
        residual_layernorm_backward(**bwd)
        res |= {k: bwd[k] for k in grads}
    dinp = res.pop("dinp") - start
    return res | {"dinp1": dinp, "dinp2": dinp}


SPEC = OpSpec(
    name="residual_layernorm",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp1"], i["inp2"], i["weight"], i["bias"], i["dout"], i["dresidual"]),
    versions={"cpu": {"loops": _run}, "cuda": {"v1": lambda i: _run(i, device=True)}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 768}, {"B": 3, "T": 1, "C": 37}, {"B": 2, "T": 7, "C": 65}],
        # C = 300 > 256 threads: a thread takes two channels of the row
        "cudasim": [{"B": 2, "T": 1, "C": 37}, {"B": 1, "T": 2, "C": 300}],
        "cuda": [{"B": 4, "T": 1024, "C": 768}, {"B": 3, "T": 1, "C": 37}, {"B": 2, "T": 7, "C": 1601}],
    },
    backward=("dinp1", "dinp2", "dweight", "dbias"),
)
