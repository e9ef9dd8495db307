"""layernorm's entry points: bad inputs raise errors naming the argument; the backward accumulates."""
import numpy as np
import pytest

from gpt2lab.kernels.layernorm import layernorm_backward, layernorm_forward

B, T, C = 2, 3, 5


def forward_args():
    rng = np.random.default_rng(0)
    return {"out": np.zeros((B, T, C), np.float32), "mean": np.zeros((B, T), np.float32),
            "rstd": np.zeros((B, T), np.float32), "inp": rng.standard_normal((B, T, C)).astype(np.float32),
            "weight": np.ones(C, np.float32), "bias": np.zeros(C, np.float32)}


def backward_args():
    f = forward_args()
    layernorm_forward(**f)
    rng = np.random.default_rng(1)
    return {"dinp": np.zeros((B, T, C), np.float32), "dweight": np.zeros(C, np.float32),
            "dbias": np.zeros(C, np.float32), "dout": rng.standard_normal((B, T, C)).astype(np.float32),
            "inp": f["inp"], "weight": f["weight"], "mean": f["mean"], "rstd": f["rstd"]}


def test_forward_rejects_wrong_dtype():
    args = forward_args()
    args["inp"] = args["inp"].astype(np.float64)
    with pytest.raises(TypeError, match=r"layernorm_forward: inp must be float32 \(B,T,C\), got float64"):
        layernorm_forward(**args)


@pytest.mark.parametrize("name, shape", [("out", (B, T, C + 1)), ("mean", (B, T + 1)), ("rstd", (B * T,)),
                                         ("weight", (C - 1,)), ("bias", (C, 1))])
def test_forward_rejects_wrong_shape(name, shape):
    args = forward_args()
    args[name] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=rf"layernorm_forward: {name} must be float32"):
        layernorm_forward(**args)


def test_forward_rejects_non_contiguous_and_2d_input():
    args = forward_args()
    args["inp"] = np.zeros((B, C, T), np.float32).transpose(0, 2, 1)
    with pytest.raises(ValueError, match="layernorm_forward: inp must be C-contiguous"):
        layernorm_forward(**args)
    args = forward_args()
    args["inp"] = np.zeros((B * T, C), np.float32)
    with pytest.raises(ValueError, match=r"inp must be float32 \(B,T,C\)"):
        layernorm_forward(**args)


@pytest.mark.parametrize("name, bad", [("dweight", np.zeros(C, np.float64)),
                                       ("dout", np.zeros((B, T, C - 1), np.float32)),
                                       ("mean", np.zeros((B, T), np.float16)), ("dinp", [0.0])])
def test_backward_rejects_bad_arguments(name, bad):
    args = backward_args()
    args[name] = bad
    with pytest.raises((TypeError, ValueError), match=rf"layernorm_backward: {name} must be"):
        layernorm_backward(**args)


def test_backward_accumulates():
    """Two calls give twice the gradient: backward adds into dinp, dweight, dbias (llm.c's convention)."""
    args = backward_args()
    layernorm_backward(**args)
    once = {k: args[k].copy() for k in ("dinp", "dweight", "dbias")}
    layernorm_backward(**args)
    for k, g in once.items():
        assert np.any(g != 0), k
        np.testing.assert_allclose(args[k], 2 * g, rtol=1e-6, atol=1e-7, err_msg=k)


def test_forward_normalises_a_row_with_a_large_mean():
    """Two-pass variance: rows at 1e4 + N(0, 1) still normalise. E[x^2] - mean^2 in float32 would lose every
    digit (x^2 ~ 1e8 has an ulp of 8, the variance is ~1); float32's rounding of the mean alone costs ~1e-3."""
    args = forward_args()
    args["inp"] = (1e4 + np.random.default_rng(2).standard_normal((B, T, C))).astype(np.float32)
    layernorm_forward(**args)
    x = args["inp"].astype(np.float64)
    norm = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(args["out"], norm, atol=1e-2)
