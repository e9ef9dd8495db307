"""matmul's entry points: bad inputs rejected by name, bias None, and the backward accumulating."""
import numpy as np
import pytest

from gpt2lab.kernels.matmul import matmul_backward, matmul_forward


def _arrays(B=2, T=3, C=5, OC=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, T, C), dtype=np.float32), rng.standard_normal((OC, C), dtype=np.float32),
            rng.standard_normal(OC, dtype=np.float32))


def test_matmul_forward_rejects_wrong_dtype_shape_layout():
    inp, weight, bias = _arrays()
    out = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match=r"matmul_forward: inp must be float32 \(B,T,C\), got float64"):
        matmul_forward(out, inp.astype(np.float64), weight, bias)
    with pytest.raises(ValueError, match=r"matmul_forward: weight must be float32 \(OC,C\).*got float32 \(4, 6\)"):
        matmul_forward(out, inp, np.zeros((4, 6), np.float32), bias)
    with pytest.raises(ValueError, match=r"matmul_forward: bias must be float32 \(OC\) = \(4\), got float32 \(5,\)"):
        matmul_forward(out, inp, weight, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"matmul_forward: out must be float32 \(B,T,OC\) = \(2,3,4\), got float32 \(2, 3, 5\)"):
        matmul_forward(np.zeros((2, 3, 5), np.float32), inp, weight, bias)
    with pytest.raises(ValueError, match="weight must be C-contiguous"):
        matmul_forward(out, inp, np.zeros((5, 4), np.float32).T, bias)
    with pytest.raises(TypeError, match="matmul_forward: inp must be a numpy or CUDA device array"):
        matmul_forward(out, inp.tolist(), weight, bias)


def test_matmul_backward_rejects_wrong_shapes():
    inp, weight, bias = _arrays()
    dout = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"matmul_backward: dweight must be float32 \(OC,C\) = \(4,5\)"):
        matmul_backward(np.zeros_like(inp), np.zeros((5, 4), np.float32), None, dout, inp, weight)
    with pytest.raises(ValueError, match=r"matmul_backward: dout must be float32 \(B,T,OC\) = \(2,3,4\)"):
        matmul_backward(np.zeros_like(inp), np.zeros_like(weight), None, dout[:, :2].copy(), inp, weight)


def test_matmul_without_bias_and_accumulating_backward():
    inp, weight, bias = _arrays(B=3, T=1, C=37, OC=65)
    out = np.full((3, 1, 65), np.nan, np.float32)  # the forward overwrites: old contents never leak in
    matmul_forward(out, inp, weight, None)
    np.testing.assert_allclose(out, inp @ weight.T, rtol=1e-5, atol=1e-5)
    matmul_forward(out, inp, weight, bias)
    np.testing.assert_allclose(out, inp @ weight.T + bias, rtol=1e-5, atol=1e-5)

    dout = np.random.default_rng(1).standard_normal(out.shape, dtype=np.float32)
    dinp, dweight, dbias = np.ones_like(inp), np.ones_like(weight), np.ones_like(bias)
    for _ in range(2):  # the backward adds to what is there (the model zeroes once per step)
        matmul_backward(dinp, dweight, dbias, dout, inp, weight)
    dout2, inp2 = dout.reshape(-1, 65), inp.reshape(-1, 37)
    np.testing.assert_allclose(dinp, 1 + 2 * (dout @ weight), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dweight, 1 + 2 * (dout2.T @ inp2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dbias, 1 + 2 * dout2.sum(0), rtol=1e-5, atol=1e-5)
