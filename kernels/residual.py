"""The residual connection: the skip path around attention and the MLP in every GPT-2 block.

Forward:

    out = inp1 + inp2

Backward. d out / d inp1 = d out / d inp2 = 1 (the identity), so the gradient passes unchanged to both
summands: this is why residual networks train deep, the gradient reaches early layers without being
scaled by every block on the way. Like llm.c the backward *accumulates*, and here that matters most:

    dinp1 += dout
    dinp2 += dout

dinp1 is the gradient of the residual stream, which also collects the gradient of the branch that read
it (e.g. ln_1), so writing `=` would erase a contribution. Nothing is cached.
kernels/residual_layernorm.py fuses this add with the LayerNorm that reads its result (forward) and folds
this backward into that LayerNorm's backward; the model does not call it yet.

Shapes: out, inp1, inp2, dout, dinp1, dinp2: the same shape (GPT-2: (B, T, C)), float32, C-contiguous.

Versions (one per device, so the entry points take no `version=`; DEFAULT_VERSION below):

    CPU  "loops"  one parallel loop over the elements (default)
    CUDA "v1"     one thread per element, a grid-stride loop (default)
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from ._cuda import grid_stride, run_on_device, view
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import autograd
from ._validate import check_array, check_same_device
from .check import OpSpec


# ---------------------------------------------------------------- the PyTorch reference
def reference(inp1, inp2, dout):
    """PyTorch: inp1 + inp2 and its autograd gradients."""
    return autograd(lambda inp1, inp2: {"out": inp1 + inp2}, {"inp1": inp1, "inp2": inp2}, ("inp1", "inp2"),
                    {"out": dout})


# ---------------------------------------------------------------- CPU (numba @njit)
# Flat loops over the elements: memory bound, one prange over all of them, vectorised by fastmath.
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def residual_forward_cpu(out, inp1, inp2):
    """The CPU kernel on flat (n,) views. No checks."""
    for i in prange(out.size):
        out[i] = inp1[i] + inp2[i]


@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def residual_backward_cpu(dinp1, dinp2, dout):
    """The CPU kernel on flat (n,) views; accumulates."""
    for i in prange(dout.size):
        dinp1[i] += dout[i]
        dinp2[i] += dout[i]


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Elementwise: one thread per element, a grid-stride loop so a grid capped at 65535 blocks covers any n.
# Neighbouring threads touch neighbouring floats: every load and store is coalesced.
@cuda_kernel
def residual_forward_kernel(out, inp1, inp2, n):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        out[i] = inp1[i] + inp2[i]
        i += stride


@cuda_kernel
def residual_backward_kernel(dinp1, dinp2, dout, n):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        dy = dout[i]  # read once, used twice
        dinp1[i] += dy
        dinp2[i] += dy
        i += stride


_VEC = "float32[::1]"
# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
CUDA_KERNELS = (
    (residual_forward_kernel, f"void({_VEC}, {_VEC}, {_VEC}, int64)"),
    (residual_backward_kernel, f"void({_VEC}, {_VEC}, {_VEC}, int64)"),
)


# ---------------------------------------------------------------- public entry points
CPU_VERSIONS = ("loops",)
CUDA_VERSIONS = ("v1",)
DEFAULT_VERSION = {"cpu": "loops", "cuda": "v1"}  # the only ones: an add is exact, and memory bound


def _check(op, names_arrays):
    """All arrays float32, C-contiguous, of the first one's shape; returns True when on the GPU."""
    shape = tuple(getattr(names_arrays[0][1], "shape", ()))
    for name, a in names_arrays:
        check_array(op, name, a, shape)
    return check_same_device(op, **dict(names_arrays))


def residual_forward(out, inp1, inp2):
    """out = inp1 + inp2. All the same shape, float32. Numpy runs on the CPU, device arrays on the GPU."""
    on_gpu = _check("residual_forward", [("inp1", inp1), ("inp2", inp2), ("out", out)])
    n = inp1.size
    flat = (view(out, n), view(inp1, n), view(inp2, n))
    if on_gpu:
        residual_forward_kernel[grid_stride(n)](*flat, n)
    else:
        residual_forward_cpu(*flat)


def residual_backward(dinp1, dinp2, dout):
    """dinp1 += dout; dinp2 += dout. All the same shape, float32."""
    on_gpu = _check("residual_backward", [("dout", dout), ("dinp1", dinp1), ("dinp2", dinp2)])
    n = dout.size
    flat = (view(dinp1, n), view(dinp2, n), view(dout, n))
    if on_gpu:
        residual_backward_kernel[grid_stride(n)](*flat, n)
    else:
        residual_backward_cpu(*flat)


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    size = (shape["B"], shape["T"], shape["C"])
    return {"inp1": rng.standard_normal(size).astype(np.float32),
            "inp2": (3 * rng.standard_normal(size)).astype(np.float32),
            "dout": rng.standard_normal(size).astype(np.float32)}


def _run(inputs, device_arrays=False):
    fwd = {"out": np.zeros_like(inputs["inp1"]), "inp1": inputs["inp1"], "inp2": inputs["inp2"]}
    # start the gradients non-zero, then subtract: checks that the backward adds rather than overwrites
    start = np.linspace(-1, 1, inputs["dout"].size, dtype=np.float32).reshape(inputs["dout"].shape)
    bwd = {"dinp1": start.copy(), "dinp2": -start, "dout": inputs["dout"]}
    if device_arrays:
        res = run_on_device(residual_forward, fwd, ["out"]) | run_on_device(residual_backward, bwd, ["dinp1", "dinp2"])
    else:
        residual_forward(**fwd)
        residual_backward(**bwd)
        res = {"out": fwd["out"], "dinp1": bwd["dinp1"], "dinp2": bwd["dinp2"]}
    res["dinp1"] = res["dinp1"] - start
    res["dinp2"] = res["dinp2"] + start
    return res


SPEC = OpSpec(
    name="residual",
    make_inputs=_inputs,
    reference=lambda i: reference(i["inp1"], i["inp2"], i["dout"]),
    versions={"cpu": {"loops": _run}, "cuda": {"v1": lambda i: _run(i, device_arrays=True)}},
    shapes={
        "cpu": [{"B": 4, "T": 64, "C": 768}, {"B": 3, "T": 1, "C": 37}, {"B": 2, "T": 7, "C": 65}],
        "cudasim": [{"B": 1, "T": 3, "C": 37}, {"B": 2, "T": 5, "C": 40}],
        "cuda": [{"B": 4, "T": 1024, "C": 768}, {"B": 3, "T": 1, "C": 37}, {"B": 2, "T": 7, "C": 65}],
    },
    backward=("dinp1", "dinp2"),
)
