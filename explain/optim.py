"""AdamW, the optimizer GPT-2 trains with, as data for lesson 6 and its exercise.

One update of a parameter p with gradient g at step t (1-based), decoupled weight decay as in
torch.optim.AdamW (the decay multiplies p directly; it is not added to the gradient):

    p  = p - lr * wd * p
    m  = b1 m + (1 - b1) g              # running mean of the gradient
    v  = b2 v + (1 - b2) g^2            # running mean of its square
    mhat = m / (1 - b1^t),  vhat = v / (1 - b2^t)   # bias correction: m and v start at 0
    p  = p - lr * mhat / (sqrt(vhat) + eps)
"""
from __future__ import annotations

import numpy as np

from .check import cmp

HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def adamw_torch(param: np.ndarray, grads: list[np.ndarray], **hyper) -> dict:
    """torch.optim.AdamW applied for len(grads) steps from zero moments. Returns params, m, v (float64)."""
    import torch
    h = {**HYPER, **hyper}
    p = torch.nn.Parameter(torch.tensor(param, dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                            weight_decay=h["weight_decay"], foreach=False)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    state = opt.state[p]
    return {"params": p.detach().numpy(), "m": state["exp_avg"].numpy(), "v": state["exp_avg_sq"].numpy()}


def check_adamw(fn, n: int = 37, steps: int = 3, seed: int = 0) -> bool:
    """Compare a learner's `fn(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay)` (in place,
    float32 1-D arrays) with torch.optim.AdamW over `steps` steps, so the bias correction is exercised."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    p, m, v = param.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t, g in enumerate(grads, start=1):
        fn(p, g, m, v, t, HYPER["lr"], HYPER["beta1"], HYPER["beta2"], HYPER["eps"], HYPER["weight_decay"])
    ref = adamw_torch(param, grads)
    return all([cmp("params", p, ref["params"]), cmp("m", m, ref["m"]), cmp("v", v, ref["v"])])
