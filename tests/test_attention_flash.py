"""The flash-attention pair (attention_forward_flash, attention_backward_flash): its arguments are checked,
and on the CPU it gives the att-caching pair's out and dinp from out and lse alone. The CUDA v4 kernels are
checked by the harness (SPEC rows "v4", tests/test_kernels_cudasim.py) and the accuracy probe
"attention.flash" (tests/test_kernels_accuracy_cudasim.py)."""
import numpy as np
import pytest

from gpt2lab.kernels.attention import (attention_backward, attention_backward_flash, attention_forward,
                                       attention_forward_flash)

B, T, C, NH = 2, 9, 24, 3


def pair(rng):
    inp = (rng.standard_normal((B, T, 3 * C)) * 2).astype(np.float32)
    return inp, rng.standard_normal((B, T, C)).astype(np.float32)


def test_flash_pair_equals_the_att_pair():
    inp, dout = pair(np.random.default_rng(0))
    out, att, dinp = np.zeros((B, T, C), np.float32), np.zeros((B, NH, T, T), np.float32), np.zeros_like(inp)
    attention_forward(out, att, inp, NH)
    attention_backward(dinp, dout, inp, att, NH)
    out_f, lse, dinp_f = np.zeros_like(out), np.zeros((B, NH, T), np.float32), np.ones_like(inp)
    attention_forward_flash(out_f, lse, inp, NH)
    attention_backward_flash(dinp_f, dout, inp, out_f, lse, NH)  # accumulates onto the ones
    np.testing.assert_allclose(out_f, out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dinp_f - 1, dinp, rtol=1e-3, atol=1e-4)


def test_a_stale_lse_is_caught():
    """The backward really uses lse: a row's lse off by 0.01 changes dinp beyond the tolerance above."""
    inp, dout = pair(np.random.default_rng(0))
    out, lse = np.zeros((B, T, C), np.float32), np.zeros((B, NH, T), np.float32)
    attention_forward_flash(out, lse, inp, NH)
    good, bad = np.zeros_like(inp), np.zeros_like(inp)
    attention_backward_flash(good, dout, inp, out, lse, NH)
    lse[0, 1, T - 1] += 0.01
    attention_backward_flash(bad, dout, inp, out, lse, NH)
    assert not np.allclose(bad, good, rtol=1e-3, atol=1e-4)


def test_flash_entry_points_check_their_arguments():
    inp = np.zeros((B, T, 3 * C), np.float32)
    out, lse, dinp = np.zeros((B, T, C), np.float32), np.zeros((B, NH, T), np.float32), np.zeros_like(inp)
    with pytest.raises(ValueError, match=r"attention_forward_flash: lse must be float32 \(B,NH,T\)"):
        attention_forward_flash(out, np.zeros((B, NH, T, T), np.float32), inp, NH)
    with pytest.raises(ValueError, match=r"attention_backward_flash: out must be float32 \(B,T,C\)"):
        attention_backward_flash(dinp, out, inp, np.zeros((B, T, C + 1), np.float32), lse, NH)
    with pytest.raises(TypeError, match=r"attention_backward_flash: lse must be float32"):
        attention_backward_flash(dinp, out, inp, out, lse.astype(np.float64), NH)
    with pytest.raises(ValueError, match=r"attention_backward_flash: n_head must be a positive int"):
        attention_backward_flash(dinp, out, inp, out, lse, 5)
