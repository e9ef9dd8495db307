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

from gpt2lab.kernels.adamw import reference as adamw_torch  # torch.optim.AdamW, float64, from zero moments

from .check import cmp

HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def check_adamw(fn, n: int = 37, steps: int = 3, seed: int = 0) -> bool:
    """Compare a learner's `fn(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay)` (in place,
    float32 1-D arrays) with torch.optim.AdamW over `steps` steps, so the bias correction is exercised."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]
    p, m, v = param.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t, g in enumerate(grads, start=1):
        fn(p, g, m, v, t, HYPER["lr"], HYPER["beta1"], HYPER["beta2"], HYPER["eps"], HYPER["weight_decay"])
    ref = adamw_torch(param, grads, HYPER)
    return all([cmp("params", p, ref["params"]), cmp("m", m, ref["m"]), cmp("v", v, ref["v"])])
