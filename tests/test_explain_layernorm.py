"""gpt2lab.explain.layernorm: the forward steps equal the model's own layer norm, every backward step equals
autograd (the long way and llm.c's compact form), the pictures and the exercise check (which must fail on
wrong answers)."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from gpt2lab.explain import layernorm as L  # noqa: E402
from gpt2lab.gpt2 import GPT2, GPTConfig  # noqa: E402


def small_model():
    torch.manual_seed(0)
    model = GPT2(GPTConfig(block_size=32, vocab_size=50257, n_layer=2, n_head=2, n_embd=24)).eval()
    with torch.no_grad():   # gamma, beta away from 1, 0 so that a dropped gamma or beta shows
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model


MODEL = small_model()
RES = L.model_layernorm(MODEL)


def rows(seed=0, shape=(3, 5, 24)):
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-3, 3, shape[:-1] + (1,)) + rng.uniform(0.5, 4, shape[:-1] + (1,))
         * rng.standard_normal(shape)).astype(np.float32)
    gamma = (1 + 0.5 * rng.standard_normal(shape[-1])).astype(np.float32)
    beta = (0.5 * rng.standard_normal(shape[-1])).astype(np.float32)
    return x, gamma, beta, rng.standard_normal(shape).astype(np.float32)


def test_model_layernorm_catches_a_real_row_and_its_gradients():
    r = RES
    assert r["x"].shape == r["out"].shape == r["dout"].shape == r["dinp"].shape == (12, 24)
    assert r["gamma"].shape == r["dgamma"].shape == (24,)
    torch_out = torch.nn.functional.layer_norm(torch.tensor(r["x"]), (24,), torch.tensor(r["gamma"]),
                                               torch.tensor(r["beta"]), 1e-5).numpy()
    np.testing.assert_allclose(r["out"], torch_out, atol=1e-6)
    assert np.abs(r["dout"]).max() > 0 and np.abs(r["dgamma"]).max() > 0
    assert all(p.grad is None for p in MODEL.parameters())     # the model is left clean
    with pytest.raises(ValueError, match="2..32 tokens"):
        L.model_layernorm(MODEL, "hi")


@pytest.mark.parametrize("which,layer", [("ln_1", 0), ("ln_2", 1), ("ln_f", 0)])
def test_forward_steps_equal_the_model(which, layer):
    r = L.model_layernorm(MODEL, layer=layer, which=which)
    s = L.forward_steps(r["x"], r["gamma"], r["beta"])
    np.testing.assert_allclose(s["out"], r["out"], atol=1e-5)
    np.testing.assert_allclose(s["norm"].mean(-1), 0, atol=1e-5)
    var = r["x"].var(-1)
    np.testing.assert_allclose(s["norm"].std(-1), np.sqrt(var / (var + 1e-5)), rtol=1e-4)  # eps: a hair under 1
    assert s["mean"].shape == s["var"].shape == s["rstd"].shape == (12, 1)
    np.testing.assert_allclose(s["rstd"], 1 / np.sqrt(r["x"].var(-1, keepdims=True) + 1e-5), rtol=1e-5)


def test_compact_backward_equals_the_models_gradients():
    r = RES
    s = L.forward_steps(r["x"], r["gamma"], r["beta"])
    b = L.backward_compact(r["dout"], s["norm"], s["rstd"], r["gamma"])
    scale = np.abs(r["dinp"]).max()
    np.testing.assert_allclose(b["dinp"], r["dinp"], atol=1e-5 * scale)
    np.testing.assert_allclose(b["dgamma"], r["dgamma"], atol=1e-5 * np.abs(r["dgamma"]).max())
    np.testing.assert_allclose(b["dbeta"], r["dbeta"], atol=1e-5 * np.abs(r["dbeta"]).max())


def test_every_backward_step_equals_autograd():
    x, gamma, beta, dout = rows()
    s = L.forward_steps(x, gamma, beta)
    a = L.autograd_steps(x, gamma, beta, dout)
    long = L.backward_long(dout, s, gamma)
    for name in ("mean", "xc", "var", "rstd", "norm", "out"):
        np.testing.assert_allclose(s[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)
    for name in ("dnorm", "drstd", "dvar", "dxc", "dmean", "dx", "dgamma", "dbeta"):
        ref = a[name]
        np.testing.assert_allclose(long[name], ref, atol=1e-4 * np.abs(ref).max(), err_msg=name)
    compact = L.backward_compact(dout, s["norm"], s["rstd"], gamma)
    np.testing.assert_allclose(compact["dinp"], a["dx"], atol=1e-4 * np.abs(a["dx"]).max())
    # the two mean terms are the gradients through mean and through rstd
    np.testing.assert_allclose(-s["rstd"] * compact["dnorm_mean"], a["dmean"] / x.shape[-1], rtol=1e-3, atol=1e-7)
    # and the reference agrees with the step-by-step autograd
    ref = L.torch_layernorm(x, gamma, beta, dout)
    np.testing.assert_allclose(ref["dx"], a["dx"], atol=1e-10)
    np.testing.assert_allclose(ref["out"], a["out"], atol=1e-10)


def test_dropping_a_mean_term_is_caught():
    x, gamma, beta, dout = rows(1)
    s = L.forward_steps(x, gamma, beta)
    b = L.backward_compact(dout, s["norm"], s["rstd"], gamma)
    wrong = s["rstd"] * (b["dnorm"] - b["dnorm_mean"])            # forgot the term through rstd
    assert not np.allclose(wrong, L.torch_layernorm(x, gamma, beta, dout)["dx"], atol=1e-3)


def test_row_stages_and_figure():
    x, gamma, beta, _ = rows(2)
    st = L.row_stages(x[0, 0], gamma, beta)
    assert list(st) == ["x", "norm", "out"]
    assert abs(st["norm"].mean()) < 1e-5 and abs(st["norm"].std() - 1) < 1e-3
    np.testing.assert_allclose(st["out"], st["norm"] * gamma + beta, rtol=1e-6)
    fig = L.row_distribution_figure(x[0, 0], gamma, beta, title="x[t=0]", highlight=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1].startswith("norm: mean +0.000, std 1.000")
    assert "x[t=0]  (C=24)" in fig._suptitle.get_text()
    # a scalar gamma/beta is broadcast: scale 2, shift 1 gives std 2, mean 1
    st = L.row_stages(x[0, 0], 2.0, 1.0)
    assert abs(st["out"].mean() - 1) < 1e-5 and abs(st["out"].std() - 2) < 1e-3
    with pytest.raises(ValueError, match="one row"):
        L.row_stages(x[0], gamma, beta)
    fig = L.idea_figure(RES["x"], RES["gamma"], RES["beta"])
    assert "T=12" in fig._suptitle.get_text()


def test_frames_over_training_and_animation():
    models = [(0, small_model()), (10, MODEL)]
    with torch.no_grad():
        models[0][1].transformer.h[0].ln_1.weight.fill_(1.0)
    frames = L.layernorm_over_training(checkpoints=models, t=2)
    assert [f.step for f in frames] == [0, 10]
    np.testing.assert_array_equal(frames[0].gamma, 1.0)
    np.testing.assert_array_equal(frames[1].gamma, RES["gamma"])
    np.testing.assert_array_equal(frames[1].out_row, RES["out"][2])
    assert frames[1].x_std.shape == (12,) and frames[1].name == "ln_1[layer=0]"
    anim = L.layernorm_animation(frames)
    anim._init_draw()
    anim._draw_next_frame(1, blit=False)
    assert "training step 10" in anim._fig._suptitle.get_text()
    with pytest.raises(ValueError, match="no checkpoints"):
        L.layernorm_over_training(checkpoints=[])
    with pytest.raises(ValueError, match="no frames"):
        L.layernorm_animation([])


def test_kernel_timings():
    t = L.kernel_timings(B=1, T=4, C=32, reps=2)
    assert set(t) == {"numba", "torch"} and all(0 < v < 5 for v in t.values())
