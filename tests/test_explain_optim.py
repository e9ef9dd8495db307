import numpy as np

from gpt2lab.explain.optim import check_adamw
from gpt2lab.kernels.adamw import adamw_update


def reference_solution(p, g, m, v, t, lr, b1, b2, eps, wd):
    p -= lr * wd * p
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    p -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


def test_check_adamw_accepts_correct_updates():
    assert check_adamw(reference_solution)
    assert check_adamw(lambda p, g, m, v, t, lr, b1, b2, eps, wd: adamw_update(p, g, m, v, t, lr, b1, b2, eps, wd))


def test_check_adamw_rejects_missing_bias_correction():
    def no_correction(p, g, m, v, t, lr, b1, b2, eps, wd):
        p -= lr * wd * p
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        p -= lr * m / (np.sqrt(v) + eps)
    assert not check_adamw(no_correction)


def test_check_adamw_rejects_coupled_weight_decay():
    def l2(p, g, m, v, t, lr, b1, b2, eps, wd):
        g = g + wd * p  # Adam + L2, not AdamW
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    assert not check_adamw(l2)
