"""The flash-attention pair (attention_forward_flash, attention_backward_flash): its arguments are checked,
and on the CPU it gives the att-caching pair's out and dinp from out and lse alone, also inside a tiny model
whose attention lines are swapped for the flash pair (the swap kernels/attention.py's docstring describes).
The CUDA v4 kernels are checked by the harness (SPEC rows "v4", tests/test_kernels_cudasim.py) and the
accuracy probe "attention.flash" (tests/test_kernels_accuracy_cudasim.py)."""
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
    # a CUDA version on numpy arrays names the CPU's
    with pytest.raises(ValueError, match=r"attention_forward_flash: version must be one of \('flash',\) for cpu "
                                         r"arrays, got 'v5'"):
        attention_forward_flash(out, lse, inp, NH, version="v5")
    with pytest.raises(ValueError, match=r"attention_backward_flash: version must be one of"):
        attention_backward_flash(dinp, out, inp, out, lse, NH, version="v9")


def flash_kernels():
    """The model's attention lines with the flash pair, as kernels/attention.py's docstring swaps them in. The
    model's own lines pass att (B, NH, T, T), not lse and atty: here att's buffer only keys what the flash
    backward needs, the lse (B, NH, T) and the forward's out (the model's atty, which stays untouched until
    the backward: it is the attention projection's input)."""
    from gpt2lab.gpt2.kernel_model import Kernels
    kept = {}

    def forward(out, att, inp, n_head):
        lse = np.zeros(att.shape[:3], np.float32)
        attention_forward_flash(out, lse, inp, n_head)
        kept[att.ctypes.data] = (out, lse)

    def backward(dinp, dout, inp, att, n_head):
        out, lse = kept[att.ctypes.data]
        attention_backward_flash(dinp, dout, inp, out, lse, n_head)
    return Kernels(attention_forward=forward, attention_backward=backward)


def test_flash_pair_in_a_tiny_model():
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_model import KernelGPT2
    micro = dict(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=8)
    idx, targets = np.array([[3, 1, 7, 2, 9, 0, 4]]), np.array([[1, 7, 10, 2, 2, 5, 6]])
    results = []
    for kernels in (None, flash_kernels()):
        model = KernelGPT2(GPTConfig(**micro), device="cpu", seed=0, kernels=kernels)
        loss = model.forward(idx, targets)
        model.zero_grad()
        model.backward()
        results.append((loss, model.logits.copy(), model._named(model.grads_memory)))
    (loss, logits, grads), (loss_f, logits_f, grads_f) = results
    assert loss_f == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(logits_f, logits, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        np.testing.assert_allclose(grads_f[name], g, rtol=1e-4, atol=1e-6, err_msg=name)


# v6 is v5 with a lean loader for the tiles that lie inside the head (kernels/attention.py): the same values
# loaded, so the same results, bit for bit. Four launches: hs = 16 and 64 at the simulator's 8 rows a block
# (32 threads: fewer threads than a tile row of 64 at hs = 64, more at 16: both ways the loader splits a tile),
# hs = 64 at the GPU's 32 rows, and hs = 48, whose rows of 48 do not split evenly between 32 threads (v6 loads it
# as v5 does: with the lean loader it read past the tile, a review found). T reaches past a whole tile each
# time, so interior and edge tiles both load.
V6_SCRIPT = """
import json, sys
import numpy as np
from numba import cuda
from gpt2lab.kernels.attention import FLASH_ROWS, _flash_launch
rng = np.random.default_rng(0)
result = []
for rows, B, T, C, NH in ((8, 1, 19, 32, 2), (8, 1, 20, 64, 1), (FLASH_ROWS, 1, 40, 64, 1), (8, 1, 16, 96, 2)):
    qkv = (rng.standard_normal((B, T, 3 * C)) * 2).astype(np.float32)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    got = {}
    for version in ("v5", "v6"):
        (fwd, dkv, dq), launch = _flash_launch(version, B, T, C, NH, rows=rows)
        d = {k: cuda.to_device(np.zeros(s, np.float32)) for k, s in
             (("out", (B, T, C)), ("lse", (B, NH, T)), ("dinp", (B, T, 3 * C)))}
        x, g = cuda.to_device(qkv), cuda.to_device(dout)
        fwd[launch](d["out"], d["lse"], x, NH)
        dkv[launch](d["dinp"], g, x, d["out"], d["lse"], NH)
        dq[launch](d["dinp"], g, x, d["out"], d["lse"], NH)
        got[version] = {k: v.copy_to_host() for k, v in d.items()}
    result.append({"rows": rows, "hs": C // NH, "T": T,
                   "same": {k: bool(np.array_equal(got["v5"][k], got["v6"][k])) for k in got["v5"]},
                   "nonzero": bool(np.abs(got["v6"]["dinp"]).sum() > 0)})
print(json.dumps(result))
"""


@pytest.mark.cudasim
def test_flash_v6_gives_v5s_results_bit_for_bit_in_the_simulator():
    import json

    from simulated import run_in_simulator
    for case in json.loads(run_in_simulator("-c", V6_SCRIPT, timeout=600).stdout.splitlines()[-1]):
        assert all(case["same"].values()) and case["nonzero"], case
