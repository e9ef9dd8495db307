"""PyTorch side of the verification: run a reference function under autograd, return numpy.

Every reference runs twice: in float64 (the truth: exact to well below float32's rounding) and in float32
(what PyTorch itself gets in our precision). The verdict (kernels/check.py `judge`) measures our error against
the float64 answer in units of PyTorch float32's error, so a check is neither tighter than float32 allows nor
looser than PyTorch manages. `precision(torch.float32)` switches a block of reference calls to float32.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

_DTYPE = [torch.float64]  # the dtype the references compute in; a list so `precision` can swap it


def reference_dtype() -> torch.dtype:
    """The float dtype reference functions compute in now (float64 unless inside `precision`)."""
    return _DTYPE[0]


@contextlib.contextmanager
def precision(dtype: torch.dtype):
    """Within the block, reference functions compute in `dtype` (torch.float64 or torch.float32)."""
    old, _DTYPE[0] = _DTYPE[0], dtype
    try:
        yield
    finally:
        _DTYPE[0] = old


def autograd(fn, inputs: dict, wrt: tuple, dout: dict) -> dict:
    """Forward `fn(**tensors)` and backpropagate `dout` through it, in `reference_dtype()`.

    fn returns a dict name -> tensor. The forward values come back under their names, the gradient
    of each input in `wrt` under "d" + name.
    """
    dtype, t = reference_dtype(), {}
    for k, v in inputs.items():
        if np.issubdtype(v.dtype, np.floating):
            t[k] = torch.tensor(v, dtype=dtype, requires_grad=k in wrt)
        else:
            t[k] = torch.tensor(v.astype(np.int64))
    outs = fn(**{k: t[k] for k in fn.__code__.co_varnames[:fn.__code__.co_argcount]})
    loss = sum((outs[k] * torch.tensor(g, dtype=dtype)).sum() for k, g in dout.items())
    loss.backward()
    res = {k: v.detach().numpy() for k, v in outs.items()}
    res.update({"d" + k: t[k].grad.numpy() for k in wrt})
    return res
