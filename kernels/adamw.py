"""AdamW: the optimizer step, elementwise over every parameter (Loshchilov & Hutter, decoupled weight decay).

One step t = 1, 2, 3, ... with gradient g, for each element of the parameters p:

    m    = beta1 m + (1 - beta1) g            running mean of the gradient (first moment)
    v    = beta2 v + (1 - beta2) g^2          running mean of its square (second moment)
    mhat = m / (1 - beta1^t)                  bias corrections: m and v start at 0, so early on they
    vhat = v / (1 - beta2^t)                  underestimate; dividing by 1 - beta^t undoes exactly that
    p    = p - lr (mhat / (sqrt(vhat) + eps) + weight_decay p)

mhat / sqrt(vhat) is a per-element step of size ~1 whatever the gradient's scale; eps keeps it finite where
v is ~0. The weight decay is *decoupled* (AdamW, not Adam with L2): it shrinks p directly instead of being
added to g, so it is not rescaled by 1/sqrt(vhat). It uses p from before this step.

torch.optim.AdamW computes the same thing in another order: p *= 1 - lr wd first (the old p, as here),
m.lerp_(g, 1 - beta1) (= the m above), then p -= (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
which is lr mhat / (sqrt(vhat) + eps) since sqrt(v / c) = sqrt(v) / sqrt(c). The two differ only by float32
rounding. The bias corrections are computed once per step on the host, in float64.

No backward: this is the step that consumes the gradients. Shapes: params, grads, m, v: (n,) float32,
C-contiguous (flat views of all the parameters, llm.c style); m and v are updated in place with params.

Versions (one per device, so adamw_update takes no `version=`; DEFAULT_VERSION below):

    CPU  "loops"  one parallel loop over the elements (default)
    CUDA "v1"     one thread per element, a grid-stride loop (default)

`adamw_update_flat` (CUDA only): v1's update over the model's whole flat parameter buffer in ONE launch, where
the model otherwise calls adamw_update once per tensor (16 launches, each with its host-side checks). Weight
decay differs per tensor (matrices only), so the kernel gets the tensors' end offsets and a decay flag per
tensor (two small device arrays made once); each thread's grid-stride index only grows, so it finds its
tensor by stepping forward through the ends, not by a search. lr, the bias corrections and the decay are
kernel arguments: nothing is allocated or copied per step.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, njit, prange

from ._cuda import device_function, grid_stride, run_on_device
from ._cuda import kernel as cuda_kernel  # @cuda_kernel: numba's @cuda.jit, launched without per-call dispatch
from ._torch import reference_dtype
from ._validate import check_array, check_finite_scalars, check_same_device
from .check import OpSpec


# ---------------------------------------------------------------- the PyTorch reference
HYPER = {"lr": 0.05, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}
STEPS = 3  # t = 1, 2, 3: the bias corrections change every step


def reference(params, grads, hyper: dict = HYPER):
    """torch.optim.AdamW on one tensor from zero moments, one step per row of grads (t = 1, 2, ...).

    hyper: lr, beta1, beta2, eps, weight_decay. Returns {"params", "m", "v"} as numpy, computed in
    `reference_dtype()` (float64, or float32 inside `precision`).
    """
    import torch
    dtype = reference_dtype()
    p = torch.nn.Parameter(torch.tensor(params, dtype=dtype))
    h = hyper
    opt = torch.optim.AdamW([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                            weight_decay=h["weight_decay"], foreach=False)
    for g in grads:
        p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    state = opt.state[p]
    return {"params": p.detach().numpy(), "m": state["exp_avg"].numpy(), "v": state["exp_avg_sq"].numpy()}


# ---------------------------------------------------------------- CPU (numba @njit)
@njit(error_model="numpy", parallel=True, fastmath=True, cache=True)
def _adamw_cpu(params, grads, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1,
               bias_correction2, eps, weight_decay):
    for i in prange(params.size):
        g = grads[i]
        m[i] = beta1 * m[i] + one_minus_beta1 * g
        v[i] = beta2 * v[i] + one_minus_beta2 * g * g
        mhat = m[i] / bias_correction1
        vhat = v[i] / bias_correction2
        params[i] -= lr * (mhat / (np.sqrt(vhat) + eps) + weight_decay * params[i])


# ---------------------------------------------------------------- CUDA (numba @cuda.jit)
# Elementwise: a grid-stride loop, so a grid of any size covers 124M parameters. Memory-bound: 4 floats
# read and 3 written per element, a few flops in between.
@device_function
def _adamw_element(i, params, grads, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1,
                   bias_correction2, eps, weight_decay):
    """Element i's update, the formula of the module docstring (both CUDA kernels run it)."""
    g = grads[i]
    m_i = beta1 * m[i] + one_minus_beta1 * g
    v_i = beta2 * v[i] + one_minus_beta2 * g * g
    m[i] = m_i
    v[i] = v_i
    mhat = m_i / bias_correction1
    vhat = v_i / bias_correction2
    params[i] -= lr * (mhat / (math.sqrt(vhat) + eps) + weight_decay * params[i])


@cuda_kernel
def adamw_kernel(params, grads, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1,
                 bias_correction2, eps, weight_decay):
    i = cuda.grid(1)
    while i < params.size:
        _adamw_element(i, params, grads, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                       bias_correction1, bias_correction2, eps, weight_decay)
        i += cuda.gridsize(1)


# One launch over every tensor of the flat buffer (see the module docstring): tensor r spans
# [region_end[r - 1], region_end[r]) and is decayed when region_decay[r] is 1.
@cuda_kernel
def adamw_flat_kernel(params, grads, m, v, region_end, region_decay, lr, beta1, one_minus_beta1, beta2,
                      one_minus_beta2, bias_correction1, bias_correction2, eps, weight_decay):
    i = cuda.grid(1)
    r = 0
    while i < params.size:
        while i >= region_end[r]:
            r += 1
        _adamw_element(i, params, grads, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                       bias_correction1, bias_correction2, eps, weight_decay * region_decay[r])
        i += cuda.gridsize(1)


# Signatures for compiling real PTX without a GPU (tests/test_kernels_ptx.py).
CUDA_KERNELS = (
    (adamw_kernel, "void(float32[::1], float32[::1], float32[::1], float32[::1], "
                   "float32, float32, float32, float32, float32, float32, float32, float32, float32)"),
    (adamw_flat_kernel, "void(float32[::1], float32[::1], float32[::1], float32[::1], int64[::1], float32[::1], "
                        "float32, float32, float32, float32, float32, float32, float32, float32, float32)"),
)


# ---------------------------------------------------------------- public entry point
CPU_VERSIONS = ("loops",)
CUDA_VERSIONS = ("v1",)
DEFAULT_VERSION = {"cpu": "loops", "cuda": "v1"}  # the only ones: elementwise, memory bound


def adamw_update(params, grads, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """One AdamW step, in place: params, m, v (n,) float32 updated from grads (n,); step is 1-based.

    Defaults are torch.optim.AdamW's. Numpy arrays run on the CPU, CUDA device arrays on the GPU.
    """
    check_array("adamw_update", "params", params, (None,), dims="n")
    n = params.shape[0]
    for name, a in (("grads", grads), ("m", m), ("v", v)):
        check_array("adamw_update", name, a, (n,), dims="n")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"adamw_update: step must be an int >= 1 (1-based), got {step!r}")
    check_finite_scalars("adamw_update", lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    # float32 scalars: the kernels then do all their arithmetic in float32, like torch on float32 params.
    # 1 - beta is rounded once from the exact value (as torch does), not computed in float32 from a rounded
    # beta: float32(1) - float32(0.95) is 2.4e-7 off relative, a bias in every v that live parity measured
    # at 8x PyTorch float32's error.
    scalars = [np.float32(x) for x in (lr, beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1 ** step,
                                       1 - beta2 ** step, eps, weight_decay)]
    if check_same_device("adamw_update", params=params, grads=grads, m=m, v=v):
        adamw_kernel[grid_stride(n)](params, grads, m, v, *scalars)
    else:
        _adamw_cpu(params, grads, m, v, *scalars)


def _hyper_scalars(step, lr, beta1, beta2, eps, weight_decay) -> list:
    """adamw_update's float32 kernel arguments (see the comment there)."""
    return [np.float32(x) for x in (lr, beta1, 1 - beta1, beta2, 1 - beta2, 1 - beta1 ** step, 1 - beta2 ** step,
                                    eps, weight_decay)]


def adamw_update_flat(params, grads, m, v, region_end, region_decay, step, lr=1e-3, beta1=0.9, beta2=0.999,
                      eps=1e-8, weight_decay=0.01):
    """adamw_update over a flat buffer of several tensors in one CUDA launch (module docstring): region_end
    (R,) int64 device array, the end offset of each tensor (the last = n); region_decay (R,) float32 device
    array, 1.0 where the tensor is decayed and 0.0 where not. Device arrays only."""
    check_array("adamw_update_flat", "params", params, (None,), dims="n")
    n = params.shape[0]
    for name, a in (("grads", grads), ("m", m), ("v", v)):
        check_array("adamw_update_flat", name, a, (n,), dims="n")
    check_array("adamw_update_flat", "region_end", region_end, (None,), dtype=np.int64, dims="R")
    check_array("adamw_update_flat", "region_decay", region_decay, (region_end.shape[0],), dims="R")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"adamw_update_flat: step must be an int >= 1 (1-based), got {step!r}")
    check_finite_scalars("adamw_update_flat", lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    if not check_same_device("adamw_update_flat", params=params, grads=grads, m=m, v=v, region_end=region_end,
                             region_decay=region_decay):
        raise TypeError("adamw_update_flat: a CUDA kernel: pass CUDA device arrays (on the CPU, adamw_update per "
                        "tensor)")
    adamw_flat_kernel[grid_stride(n)](params, grads, m, v, region_end, region_decay,
                                      *_hyper_scalars(step, lr, beta1, beta2, eps, weight_decay))


# ---------------------------------------------------------------- verification (the harness's SPEC)
def _inputs(shape, rng):
    n = shape["n"]
    # each element's gradient has its own scale, 1e-4 .. 1, kept across steps (as a parameter's would):
    # where g is tiny, eps matters; a zero gradient must give a zero step
    grads = rng.standard_normal((STEPS, n)) * 10.0 ** rng.uniform(-4, 0, n)
    grads[:, 0] = 0.0
    return {"params": rng.standard_normal(n).astype(np.float32), "grads": grads.astype(np.float32)}


def _run(inputs, device=False):
    state = {"params": inputs["params"], "m": np.zeros_like(inputs["params"]), "v": np.zeros_like(inputs["params"])}
    for step, g in enumerate(inputs["grads"], start=1):
        update = functools.partial(adamw_update, step=step, **HYPER)
        if device:
            state = run_on_device(update, {**state, "grads": g}, ["params", "m", "v"])
        else:
            update(grads=g, **state)
    return state


SPEC = OpSpec(
    name="adamw",
    make_inputs=_inputs,
    reference=lambda i: reference(i["params"], i["grads"]),
    versions={"cpu": {"loops": _run}, "cuda": {"v1": functools.partial(_run, device=True)}},
    shapes={
        "cpu": [{"n": 768 * 3072}, {"n": 37}, {"n": 1}],
        "cudasim": [{"n": 300}],
        "cuda": [{"n": 124_439_808}, {"n": 37}],
    },
    backward=(),
)
