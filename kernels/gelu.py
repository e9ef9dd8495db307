"""GELU, the tanh approximation GPT-2 uses.

Forward, with s = sqrt(2/pi) and u = s (x + 0.044715 x^3):

    y = 0.5 x (1 + tanh u)

Backward. dy/dx by the product rule, using d tanh(u)/du = 1 - tanh(u)^2 = sech^2 u:

    dy/dx = 0.5 (1 + tanh u) + 0.5 x sech^2(u) s (1 + 3 * 0.044715 x^2)

The CPU's "loops" version computes these two lines as written, with libm's tanh. The faster "vector"
version uses the identity 0.5 (1 + tanh u) = sigmoid(2u) = 1 / (1 + exp(-2u)), with the vectorisable exp
of `_vecmath.exp_neg` (libm's tanhf and expf run one element at a time; docs/figures.md has the timing),
and for the backward 0.5 sech^2(u) = 2 sigmoid(2u) (1 - sigmoid(2u)):

    y = x sig,   dy/dx = sig + x sig (1 - sig) 2s (1 + 3 * 0.044715 x^2),   sig = sigmoid(2u)

exp(-|2u|) never overflows, so the kernel stays correct under fastmath (which assumes no inf or NaN).
All constants are float32: a Python float would silently promote the whole expression to float64.

Nothing needs caching beyond the input x: the backward recomputes tanh u, which is cheaper than
storing another (B, T, 4C) tensor. Like llm.c, the backward *accumulates* into dinp (dinp += ...),
so gradients from several paths add up and the model zeroes its gradient buffer once per step.

Shapes: inp, out, dout, dinp: any shape, float32, C-contiguous (GPT-2: (B, T, 4C)).

Versions (`version=` of the entry points; DEFAULT_VERSION below, chosen by the rule in docs/kernels.md):

    CPU  "loops"   the formula as written, libm's tanh: read this one first
         "vector"  sigmoid(2u) through the vectorisable exp of _vecmath, as accurate and faster (default)
    CUDA "v1"      one thread per element, math.tanh, a grid-stride loop (default)
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, njit, prange

from ._cuda import grid_stride, run_on_device, view
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_same_device, pick_version
from ._vecmath import exp_neg
from .check import OpSpec


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp, dout):
    """PyTorch: F.gelu(approximate="tanh") and its autograd gradient."""
    import torch.nn.functional as F
    return autograd(lambda inp: {"out": F.gelu(inp, approximate="tanh")}, {"inp": inp}, ("inp",),
                    {"out": dout})


# ---------------------------------------------------------------- CPU (numba @njit)
GELU_SCALE = np.float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = np.float32(0.044715)
_TWO_S = np.float32(2.0 * math.sqrt(2.0 / math.pi))
_THREE_C = np.float32(3.0 * 0.044715)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)


# "loops": one element at a time, the module docstring's formulas line for line.
@njit(error_model="numpy", parallel=True, cache=True)
def gelu_forward_loops(out, inp):
    x, y = inp.ravel(), out.ravel()
    for i in prange(x.size):
        u = GELU_SCALE * (x[i] + GELU_CUBIC * x[i] * x[i] * x[i])
        y[i] = _HALF * x[i] * (_ONE + math.tanh(u))


@njit(error_model="numpy", parallel=True, cache=True)
def gelu_backward_loops(dinp, inp, dout):
    x, dx, dy = inp.ravel(), dinp.ravel(), dout.ravel()
    for i in prange(x.size):
        xi = x[i]
        th = math.tanh(GELU_SCALE * (xi + GELU_CUBIC * xi * xi * xi))
        sech2 = _ONE - th * th  # d tanh(u) / du
        dx[i] += (_HALF * (_ONE + th) + _HALF * xi * sech2 * GELU_SCALE * (_ONE + _THREE_C * xi * xi)) * dy[i]


# "vector": the same numbers through sigmoid(2u) and an exp that numba vectorises (see the docstring).
@njit(error_model="numpy", inline="always", fastmath=True)
def _sigmoid_2u(xi):
    """sigmoid(2u) for u = s (x + 0.044715 x^3), through exp(-|2u|) so it never overflows."""
    t = _TWO_S * (xi + GELU_CUBIC * xi * xi * xi)
    e = exp_neg(-abs(t))
    r = _ONE / (_ONE + e)
    return r if t >= 0 else e * r


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def gelu_forward_vector(out, inp):
    x, y = inp.ravel(), out.ravel()
    for i in prange(x.size):
        y[i] = x[i] * _sigmoid_2u(x[i])


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def gelu_backward_vector(dinp, inp, dout):
    x, dx, dy = inp.ravel(), dinp.ravel(), dout.ravel()
    for i in prange(x.size):
        xi = x[i]
        sig = _sigmoid_2u(xi)
        dx[i] += (sig + xi * sig * (_ONE - sig) * _TWO_S * (_ONE + _THREE_C * xi * xi)) * dy[i]


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Elementwise: one thread per element, a grid-stride loop so any grid size covers any n.
@cuda_kernel
def gelu_forward_kernel(out, inp, n):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        xi = inp[i]
        u = GELU_SCALE * (xi + GELU_CUBIC * xi * xi * xi)
        out[i] = _HALF * xi * (_ONE + math.tanh(u))
        i += stride


@cuda_kernel
def gelu_backward_kernel(dinp, inp, dout, n):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        xi = inp[i]
        u = GELU_SCALE * (xi + GELU_CUBIC * xi * xi * xi)
        th = math.tanh(u)
        grad = _HALF * (_ONE + th) + _HALF * xi * (_ONE - th * th) * GELU_SCALE * (_ONE + _THREE_C * xi * xi)
        dinp[i] += grad * dout[i]
        i += stride


# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
CUDA_KERNELS = (
    (gelu_forward_kernel, "void(float32[::1], float32[::1], int64)"),
    (gelu_backward_kernel, "void(float32[::1], float32[::1], float32[::1], int64)"),
)


# ---------------------------------------------------------------- public entry points
CPU_VERSIONS = ("loops", "vector")
CUDA_VERSIONS = ("v1",)
DEFAULT_VERSION = {"cpu": "vector", "cuda": "v1"}


def gelu_forward(out, inp, version=None):
    """out = gelu(inp). out, inp: same shape, float32. Numpy runs on the CPU, device arrays on the GPU;
    `version` one of the module docstring's (None: DEFAULT_VERSION)."""
    check_array("gelu_forward", "inp", inp, inp.shape)
    check_array("gelu_forward", "out", out, tuple(inp.shape))
    on_device = check_same_device("gelu_forward", out=out, inp=inp)
    version = pick_version("gelu_forward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device:
        n = inp.size
        gelu_forward_kernel[grid_stride(n)](view(out, n), view(inp, n), n)
    elif version == "loops":
        gelu_forward_loops(out, inp)
    else:
        gelu_forward_vector(out, inp)


def gelu_backward(dinp, inp, dout, version=None):
    """dinp += gelu'(inp) * dout. All the same shape, float32; `version` as gelu_forward's."""
    check_array("gelu_backward", "inp", inp, inp.shape)
    for name, a in (("dinp", dinp), ("dout", dout)):
        check_array("gelu_backward", name, a, tuple(inp.shape))
    on_device = check_same_device("gelu_backward", dinp=dinp, inp=inp, dout=dout)
    version = pick_version("gelu_backward", version, on_device, CPU_VERSIONS, CUDA_VERSIONS, DEFAULT_VERSION)
    if on_device:
        n = inp.size
        gelu_backward_kernel[grid_stride(n)](view(dinp, n), view(inp, n), view(dout, n), n)
    elif version == "loops":
        gelu_backward_loops(dinp, inp, dout)
    else:
        gelu_backward_vector(dinp, inp, dout)


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    size = (shape["B"], shape["T"], shape["C"])
    # a wide range: the tails (|x| > 3) are where a wrong derivative shows
    return {"inp": (rng.standard_normal(size) * 2).astype(np.float32),
            "dout": rng.standard_normal(size).astype(np.float32)}


def _run(inputs, device_arrays=False, version=None):
    out = np.zeros_like(inputs["inp"])
    dinp = np.zeros_like(inputs["inp"])
    args = {"out": out, "inp": inputs["inp"]}
    bargs = {"dinp": dinp, "inp": inputs["inp"], "dout": inputs["dout"]}
    if device_arrays:
        return {**run_on_device(gelu_forward, args, ["out"]), **run_on_device(gelu_backward, bargs, ["dinp"])}
    gelu_forward(**args, version=version)
    gelu_backward(**bargs, version=version)
    return {"out": out, "dinp": dinp}


SPEC = OpSpec(
    name="gelu",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp"], i["dout"]),
    versions={"cpu": {v: functools.partial(_run, version=v) for v in CPU_VERSIONS},
              "cuda": {"v1": functools.partial(_run, device_arrays=True)}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 3072}, {"B": 3, "T": 1, "C": 37}, {"B": 1, "T": 7, "C": 4 * 37}],
        "cudasim": [{"B": 1, "T": 3, "C": 37}],
        "cuda": [{"B": 4, "T": 256, "C": 3072}, {"B": 3, "T": 1, "C": 37}],
    },
    backward=("dinp",),
)
