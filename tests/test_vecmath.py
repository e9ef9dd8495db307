import numpy as np
from numba import njit

from gpt2lab.kernels._vecmath import exp_neg


@njit
def _apply(y):
    out = np.empty_like(y)
    for i in range(y.size):
        out[i] = exp_neg(y[i])
    return out


def test_exp_neg_is_as_accurate_as_float32():
    y = -np.linspace(0, 87, 200_001).astype(np.float32)
    y = np.concatenate([y, np.float32([-0.0, -1e-30, -0.34657, -0.34658, -86.99])])
    ref = np.exp(y.astype(np.float64))
    rel = np.abs(_apply(y) - ref) / ref
    assert rel.max() < 1.5e-7, rel.max()


def test_exp_neg_clamps_far_below():
    out = _apply(np.float32([-87.0, -100.0, -1e30]))
    assert np.all(np.isfinite(out)) and np.all(out > 0) and np.all(out < 2e-38)
