"""adamw_update: bad inputs rejected by name, step 1-based, and one step worked out by hand."""
import numpy as np
import pytest

from gpt2lab.kernels.adamw import adamw_update


def _state(n=5):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32),
            np.zeros(n, np.float32), np.zeros(n, np.float32))


def test_adamw_rejects_wrong_dtype_shape_step():
    params, grads, m, v = _state()
    with pytest.raises(TypeError, match=r"adamw_update: grads must be float32 \(n\), got float64"):
        adamw_update(params, grads.astype(np.float64), m, v, 1)
    with pytest.raises(ValueError, match=r"adamw_update: v must be float32 \(n\) = \(5\), got float32 \(4,\)"):
        adamw_update(params, grads, m, v[:4].copy(), 1)
    with pytest.raises(ValueError, match=r"adamw_update: params must be float32 \(n\).*got float32 \(5, 1\)"):
        adamw_update(params.reshape(5, 1), grads, m, v, 1)
    with pytest.raises(ValueError, match="adamw_update: m must be C-contiguous"):
        adamw_update(params, grads, np.zeros(10, np.float32)[::2], v, 1)
    for step in (0, 1.0, True):
        with pytest.raises(ValueError, match=r"step must be an int >= 1 \(1-based\)"):
            adamw_update(params, grads, m, v, step)


def test_adamw_first_step_by_hand():
    # At t = 1 the bias corrections make mhat = g and vhat = g^2, so the step is lr * sign(g) (eps aside)
    # plus the decay lr * wd * p of the old p.
    params, grads, m, v = _state()
    p0 = params.copy()
    lr, wd = 0.1, 0.5
    adamw_update(params, grads, m, v, 1, lr=lr, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=wd)
    np.testing.assert_allclose(m, 0.1 * grads, rtol=1e-6)
    np.testing.assert_allclose(v, 0.01 * grads ** 2, rtol=1e-6)
    np.testing.assert_allclose(params, p0 - lr * (np.sign(grads) + wd * p0), rtol=1e-5, atol=1e-6)
