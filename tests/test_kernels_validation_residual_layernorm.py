"""residual_layernorm's entry points: bad inputs raise errors naming the argument; the backward accumulates,
and equals residual_backward + layernorm_backward (the two calls it replaces) on the CPU."""
import numpy as np
import pytest

from gpt2lab.kernels.layernorm import layernorm_backward, layernorm_forward
from gpt2lab.kernels.residual import residual_forward
from gpt2lab.kernels.residual_layernorm import residual_layernorm_backward, residual_layernorm_forward

B, T, C = 2, 3, 5


def forward_args():
    rng = np.random.default_rng(0)
    z = np.zeros
    return {"residual": z((B, T, C), np.float32), "out": z((B, T, C), np.float32),
            "mean": z((B, T), np.float32), "rstd": z((B, T), np.float32),
            "inp1": rng.standard_normal((B, T, C)).astype(np.float32),
            "inp2": rng.standard_normal((B, T, C)).astype(np.float32),
            "weight": (1 + rng.standard_normal(C)).astype(np.float32),
            "bias": rng.standard_normal(C).astype(np.float32)}


def backward_args():
    f = forward_args()
    residual_layernorm_forward(**f)
    rng = np.random.default_rng(1)
    return {"dinp": np.zeros((B, T, C), np.float32), "dweight": np.zeros(C, np.float32),
            "dbias": np.zeros(C, np.float32), "dout": rng.standard_normal((B, T, C)).astype(np.float32),
            "dresidual": rng.standard_normal((B, T, C)).astype(np.float32), "residual": f["residual"],
            "weight": f["weight"], "mean": f["mean"], "rstd": f["rstd"]}


@pytest.mark.parametrize("name, shape", [("inp2", (B, T, C + 1)), ("residual", (B, C, T)), ("mean", (B, T + 1)),
                                         ("rstd", (B * T,)), ("weight", (C - 1,)), ("bias", (C, 1))])
def test_forward_rejects_wrong_shape(name, shape):
    args = forward_args()
    args[name] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=rf"residual_layernorm_forward: {name} must be float32"):
        residual_layernorm_forward(**args)


@pytest.mark.parametrize("name", ["dinp", "dresidual", "dout", "dweight", "mean"])
def test_backward_rejects_wrong_dtype(name):
    args = backward_args()
    args[name] = args[name].astype(np.float64)
    with pytest.raises(TypeError, match=rf"residual_layernorm_backward: {name} must be float32"):
        residual_layernorm_backward(**args)


def test_equals_the_unfused_calls_and_accumulates():
    f = forward_args()
    residual_layernorm_forward(**f)
    residual, out, mean, rstd = (np.zeros_like(f[k]) for k in ("residual", "out", "mean", "rstd"))
    residual_forward(residual, f["inp1"], f["inp2"])
    layernorm_forward(out, mean, rstd, residual, f["weight"], f["bias"])
    assert np.array_equal(f["residual"], residual)
    np.testing.assert_allclose(f["out"], out, rtol=1e-5, atol=1e-6)
    b = backward_args()
    start = np.full((B, T, C), 0.5, np.float32)
    fused = dict(b, dinp=start.copy())
    residual_layernorm_backward(**fused)
    # unfused: dinp += dresidual (residual_backward's half that reaches the stream), then LayerNorm's backward
    dinp, dweight, dbias = start + b["dresidual"], np.zeros(C, np.float32), np.zeros(C, np.float32)
    layernorm_backward(dinp, dweight, dbias, b["dout"], b["residual"], b["weight"], b["mean"], b["rstd"])
    np.testing.assert_allclose(fused["dinp"], dinp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused["dweight"], dweight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused["dbias"], dbias, rtol=1e-5, atol=1e-6)
