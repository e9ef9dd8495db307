"""attention's public entry points reject bad inputs with errors naming the argument and the expectation."""
import numpy as np
import pytest

from gpt2lab.kernels.attention import attention_backward, attention_forward, attention_forward_online

B, T, C, NH = 2, 3, 12, 3


def buffers():
    z = np.zeros
    return {"inp": z((B, T, 3 * C), np.float32), "out": z((B, T, C), np.float32),
            "att": z((B, NH, T, T), np.float32), "dout": z((B, T, C), np.float32),
            "dinp": z((B, T, 3 * C), np.float32), "lse": z((B, NH, T), np.float32)}


def test_forward_rejects_wrong_dtype_shape_layout():
    a = buffers()
    with pytest.raises(TypeError, match=r"attention_forward: inp must be float32 \(B,T,3C\), got float64"):
        attention_forward(a["out"], a["att"], a["inp"].astype(np.float64), NH)
    with pytest.raises(ValueError, match=r"attention_forward: att must be float32 \(B,NH,T,T\).*"
                                         r"got float32 \(2, 3, 3, 4\)"):
        attention_forward(a["out"], np.zeros((B, NH, T, T + 1), np.float32), a["inp"], NH)
    with pytest.raises(ValueError, match=r"attention_forward: out must be float32 \(B,T,C\).*\(2,3,12\)"):
        attention_forward(np.zeros((B, T, 3 * C), np.float32), a["att"], a["inp"], NH)
    with pytest.raises(ValueError, match="C-contiguous"):
        attention_forward(a["out"], a["att"], np.zeros((B, 3 * C, T), np.float32).transpose(0, 2, 1), NH)
    with pytest.raises(TypeError, match="numpy or CUDA device array"):
        attention_forward(a["out"], a["att"].tolist(), a["inp"], NH)


def test_qkv_and_n_head_are_checked():
    a = buffers()
    with pytest.raises(ValueError, match=r"inp must be \(B,T,3C\).*last dim 35"):
        attention_forward(a["out"], a["att"], np.zeros((B, T, 35), np.float32), NH)
    with pytest.raises(ValueError, match=r"n_head must be a positive int dividing C = 12, got 5"):
        attention_forward(a["out"], np.zeros((B, 5, T, T), np.float32), a["inp"], 5)
    with pytest.raises(ValueError, match="n_head must be a positive int"):
        attention_forward(a["out"], a["att"], a["inp"], 0)


def test_backward_and_online_check_their_arguments():
    a = buffers()
    with pytest.raises(ValueError, match=r"attention_backward: dinp must be float32 \(B,T,3C\)"):
        attention_backward(a["dout"], a["dout"], a["inp"], a["att"], NH)
    with pytest.raises(TypeError, match=r"attention_backward: att must be float32"):
        attention_backward(a["dinp"], a["dout"], a["inp"], a["att"].astype(np.float16), NH)
    with pytest.raises(ValueError, match=r"attention_forward_online: lse must be float32 \(B,NH,T\)"):
        attention_forward_online(a["out"], a["att"], a["inp"], NH)


def test_version_names_are_checked():
    a = buffers()
    with pytest.raises(ValueError, match="version must be one of .* for cpu arrays"):
        attention_forward(a["out"], a["att"], a["inp"], NH, version="v2")
    with pytest.raises(ValueError, match="version must be one of .* for cpu arrays"):
        attention_backward(a["dinp"], a["dout"], a["inp"], a["att"], NH, version="v9")
    attention_forward(a["out"], a["att"], a["inp"], NH, version="cpu")  # the CPU's own name is accepted
    rows = np.zeros_like(a["out"])
    attention_forward(rows, a["att"], a["inp"], NH, version="rows")  # and both CPU versions by name
    np.testing.assert_allclose(rows, a["out"], rtol=1e-4, atol=1e-5)


def test_backward_accumulates():
    """dinp += ...: two backward calls give twice one call (llm.c's contract)."""
    rng = np.random.default_rng(0)
    a = buffers()
    inp, dout = rng.standard_normal((B, T, 3 * C)).astype(np.float32), rng.standard_normal((B, T, C)).astype(np.float32)
    attention_forward(a["out"], a["att"], inp, NH)
    attention_backward(a["dinp"], dout, inp, a["att"], NH)
    once = a["dinp"].copy()
    attention_backward(a["dinp"], dout, inp, a["att"], NH)
    np.testing.assert_allclose(a["dinp"], 2 * once, rtol=1e-5, atol=1e-6)
    assert np.abs(once).max() > 0


def test_cuda_head_size_limit_fits_every_preset_and_refuses_more_in_one_line():
    # HS_MAX sizes the CUDA kernels' per-thread rows and shared tiles at compile time (kernels/attention.py)
    from gpt2lab.gpt2.config import PRESETS
    from gpt2lab.kernels.attention import HS_MAX, _check_hs
    for name, p in PRESETS.items():
        assert p["n_embd"] // p["n_head"] <= HS_MAX, f"preset {name}: its heads do not fit the CUDA kernels"
        _check_hs("attention_forward", p["n_embd"], p["n_head"])
    with pytest.raises(ValueError, match=rf"attention_forward: the CUDA kernels after v1 support head size "
                                         rf"<= {HS_MAX}, got {HS_MAX + 1}"):
        _check_hs("attention_forward", 2 * (HS_MAX + 1), 2)
