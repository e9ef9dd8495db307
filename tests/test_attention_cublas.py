"""Attention's "cublas" version (kernels/_cublas.py): q k^T and att v as batched GEMMs through PyTorch on our
own buffers, with torch's causal softmax and its backward between them. `--matmul cublas` puts it in.

Without a GPU the very same code runs on CPU torch tensors wrapped around numpy arrays (torch.from_numpy):
checked here against the float64 PyTorch reference at awkward shapes (T = 1, heads of 10 floats, T = 37),
that the forward writes our out and att, the backward adds into dinp, and the causal mask hides every later
key. A wrong scale, a missing mask or a softmax backward without its row term fails these comparisons.
"""
import functools

import numpy as np
import pytest

from gpt2lab.gpt2.kernel_model import Kernels
from gpt2lab.gpt2.train import matmul_kernels
from gpt2lab.kernels import _cublas, attention
from gpt2lab.kernels.check import compare

SHAPES = [dict(B=2, T=7, C=50, NH=5), dict(B=1, T=1, C=12, NH=2), dict(B=3, T=37, C=48, NH=4)]
TOL = (1e-5, 1e-4)


def operands(B, T, C, NH, seed=0):
    rng = np.random.default_rng(seed)
    inp = (rng.standard_normal((B, T, 3 * C)) * 2).astype(np.float32)   # peaked softmax: the max matters
    return inp, rng.standard_normal((B, T, C)).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{B}T{T}C{C}NH{NH}".format(**s))
def test_cublas_attention_matches_the_float64_reference(shape):
    B, T, C, NH = shape["B"], shape["T"], shape["C"], shape["NH"]
    inp, dout = operands(B, T, C, NH)
    out = np.full((B, T, C), 7.0, np.float32)                 # overwritten
    att = np.full((B, NH, T, T), 7.0, np.float32)
    dinp = np.ones_like(inp)                                    # added to
    where = (out.ctypes.data, att.ctypes.data, dinp.ctypes.data)
    _cublas.attention_forward(out, att, inp, NH)
    _cublas.attention_backward(dinp, dout, inp, att, NH)
    want = attention.reference(inp, dout, NH)
    for name, got in (("out", out), ("att", att), ("dinp", dinp - 1)):
        max_abs, max_rel, ok = compare(got, want[name], *TOL)
        assert ok, f"{name}: max_abs {max_abs:.1e} max_rel {max_rel:.1e}"
    assert (out.ctypes.data, att.ctypes.data, dinp.ctypes.data) == where
    assert not np.triu(att, 1).any()                            # no query sees a later key


def test_it_is_a_cuda_version_listed_but_not_the_default():
    assert "cublas" in attention.CUDA_VERSIONS
    assert attention.DEFAULT_VERSION["cuda"] == {"attention_forward": "v2", "attention_backward": "v3"}
    inp, _ = operands(1, 3, 8, 2)
    with pytest.raises(ValueError, match="version must be one of"):   # numpy arrays: a CPU version only
        attention.attention_forward(np.zeros((1, 3, 8), np.float32), np.zeros((1, 2, 3, 3), np.float32), inp, 2,
                                    version="cublas")


def test_matmul_cublas_hands_cublas_attention_too():
    kernels = matmul_kernels("cublas")
    for name, fn in (("attention_forward", attention.attention_forward),
                     ("attention_backward", attention.attention_backward)):
        swapped = getattr(kernels, name)
        assert isinstance(swapped, functools.partial) and swapped.func is fn
        assert swapped.keywords == {"version": "cublas"}
    assert kernels.attention_forward_flash is Kernels().attention_forward_flash   # the fused path keeps flash
