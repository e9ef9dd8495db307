"""The online softmax (the flash-attention trick) equals the two-pass softmax, on small numpy examples.

The key example has a later key block whose scores raise the running max, so the rescaling
exp(m_old - m_new) of what was already summed is exercised; a variant that forgets it must fail.
"""
import math

import numpy as np
import pytest

from gpt2lab.kernels.attention import (att_from_lse, attention_forward, attention_forward_online,
                                       online_softmax_attend, online_softmax_step)


def two_pass(s, v):
    """softmax(s) @ v the textbook way: the whole score row, its max, then exp, sum, normalise."""
    p = np.exp(s - s.max())
    return (p / p.sum()) @ v, s.max() + math.log(p.sum())


def example():
    rng = np.random.default_rng(1)
    s = rng.standard_normal(12) * 3
    s[8] = s[:8].max() + 5.0  # the third block of 4 raises the running max well above the first two
    return s, rng.standard_normal((12, 5))


def test_online_equals_two_pass_with_a_rising_max():
    s, v = example()
    m, l, acc = -math.inf, 0.0, np.zeros(v.shape[1])
    maxima = []
    for j in range(0, 12, 4):
        m, l, acc = online_softmax_step(m, l, acc, s[j:j + 4], v[j:j + 4])
        maxima.append(m)
    assert maxima[2] > maxima[1] + 4.9  # the rescaling branch really ran
    out, lse = two_pass(s, v)
    np.testing.assert_allclose(acc / l, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m + math.log(l), lse, rtol=1e-12)


@pytest.mark.parametrize("block", [1, 3, 4, 5, 12])
def test_any_block_size_gives_the_same_answer(block):
    s, v = example()
    out, lse = online_softmax_attend(s, v, block)
    ref_out, ref_lse = two_pass(s, v)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    assert lse == pytest.approx(ref_lse, rel=1e-12)


def test_forgetting_the_rescale_is_caught():
    """Without multiplying the old sums by exp(m_old - m_new) the answer is wrong: the example can fail."""
    s, v = example()
    m, l, acc = -math.inf, 0.0, np.zeros(v.shape[1])
    for j in range(0, 12, 4):
        m = max(m, s[j:j + 4].max())
        p = np.exp(s[j:j + 4] - m)
        l, acc = l + p.sum(), acc + p @ v[j:j + 4]  # the bug: old l, acc still relative to the old max
    assert not np.allclose(acc / l, two_pass(s, v)[0], rtol=1e-3, atol=1e-3)


def test_kernel_online_forward_matches_the_cached_att_forward():
    """The numba online forward: same out as the att-caching forward, and att == exp(preatt - lse)."""
    rng = np.random.default_rng(0)
    B, T, C, NH = 2, 9, 24, 3
    inp = (rng.standard_normal((B, T, 3 * C)) * 3).astype(np.float32)
    out, att = np.zeros((B, T, C), np.float32), np.zeros((B, NH, T, T), np.float32)
    out_online, lse = np.zeros((B, T, C), np.float32), np.zeros((B, NH, T), np.float32)
    attention_forward(out, att, inp, NH)
    attention_forward_online(out_online, lse, inp, NH)
    np.testing.assert_allclose(out_online, out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(att_from_lse(inp, lse, NH), att, rtol=1e-4, atol=1e-6)
    assert lse.nbytes * T == att.nbytes  # the memory the lesson saves: T numbers per row become one
