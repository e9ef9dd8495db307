"""PyTorch side of the verification: run a reference function under autograd, return numpy."""
from __future__ import annotations

import numpy as np
import torch


def autograd(fn, inputs: dict, wrt: tuple, dout: dict) -> dict:
    """Forward `fn(**tensors)` and backpropagate `dout` through it, in float64.

    fn returns a dict name -> tensor. The forward values come back under their names, the gradient
    of each input in `wrt` under "d" + name. Float64 makes the reference exact to well below float32's
    rounding, so the error we report is ours alone.
    """
    t = {}
    for k, v in inputs.items():
        if np.issubdtype(v.dtype, np.floating):
            t[k] = torch.tensor(v, dtype=torch.float64, requires_grad=k in wrt)
        else:
            t[k] = torch.tensor(v.astype(np.int64))
    outs = fn(**{k: t[k] for k in fn.__code__.co_varnames[:fn.__code__.co_argcount]})
    loss = sum((outs[k] * torch.tensor(g, dtype=torch.float64)).sum() for k, g in dout.items())
    loss.backward()
    res = {k: v.detach().numpy() for k, v in outs.items()}
    res.update({"d" + k: t[k].grad.numpy() for k in wrt})
    return res
