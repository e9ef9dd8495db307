"""gpt2lab.explain.attention: one head's intermediates equal the model's own forward; the pictures, the
animation over checkpoints, the online softmax trace and the exercise check."""
import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from matplotlib.animation import FuncAnimation  # noqa: E402

from gpt2lab.datasets import gpt2_encoding  # noqa: E402
from gpt2lab.explain import attention as A  # noqa: E402
from gpt2lab.explain.palette import RUNNING_EXAMPLE, head_color, token_color  # noqa: E402
from gpt2lab.gpt2 import GPT2, GPTConfig  # noqa: E402
from gpt2lab.gpt2.checkpoint import save_checkpoint  # noqa: E402

T_EXAMPLE = len(gpt2_encoding().encode(RUNNING_EXAMPLE))   # 13


def small_model(seed=0, sharp=8.0, block_size=32):
    """A 2-layer, 3-head model; c_attn scaled up so the softmax is peaked (random init is nearly uniform,
    which would let a wrong mask or scale pass unnoticed)."""
    torch.manual_seed(seed)
    model = GPT2(GPTConfig(block_size=block_size, vocab_size=50257, n_layer=2, n_head=3, n_embd=24)).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(sharp)
    return model


MODEL = small_model()


@pytest.mark.parametrize("layer,head", [(0, 0), (1, 2)])
def test_steps_equal_the_models_own_head_output(layer, head):
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, layer, head)
    ours = A.model_head_output(MODEL, RUNNING_EXAMPLE, layer, head)
    assert s.out.shape == ours.shape == (T_EXAMPLE, 8)
    np.testing.assert_allclose(s.out, ours, atol=1e-5, rtol=1e-4)
    # and the pattern is not trivially uniform: the test above could catch a wrong mask or scale
    assert s.weights.max() > 0.5


def test_every_intermediate_follows_the_math():
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, 1, 1)
    T, hs = s.T, s.hs
    np.testing.assert_allclose(s.scores, s.q @ s.k.T, rtol=1e-6)
    np.testing.assert_allclose(s.scaled, s.scores / math.sqrt(hs), rtol=1e-6)
    future = np.triu(np.ones((T, T), bool), 1)
    assert np.all(np.isneginf(s.masked[future])) and np.all(np.isfinite(s.masked[~future]))
    assert np.all(s.weights[future] == 0)
    np.testing.assert_allclose(s.weights.sum(axis=1), 1.0, rtol=1e-6)
    assert s.weights[0, 0] == pytest.approx(1.0)            # the first token can only look at itself
    weights, out = A.torch_attention(s.q, s.k, s.v)
    np.testing.assert_allclose(s.weights, weights, atol=1e-6)
    np.testing.assert_allclose(s.out, out, atol=1e-6)
    for name in A.STEP_NAMES:
        assert getattr(s, name).dtype == np.float32


def test_q_k_v_come_from_the_right_slices_of_c_attn():
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, 0, 2)
    h, _ = A.block_inputs(MODEL, s.ids, 0)
    with torch.no_grad():
        qkv = MODEL.transformer.h[0].attn.c_attn(torch.as_tensor(h)).numpy()
    C, hs = 24, 8
    for part, x in enumerate((s.q, s.k, s.v)):
        np.testing.assert_allclose(x, qkv[:, part * C + 2 * hs:part * C + 3 * hs], atol=1e-5)


def test_text_or_ids_and_labels():
    ids = gpt2_encoding().encode(RUNNING_EXAMPLE)
    a = A.attention_steps(MODEL, RUNNING_EXAMPLE, 0, 1)
    b = A.attention_steps(MODEL, ids, 0, 1)
    assert a.ids.tolist() == ids and np.array_equal(a.weights, b.weights)
    assert a.tokens[:4] == ["To", "␣be", ",", "␣or"]
    assert a.title("weights") == f"att[layer=0, head=1]  (T={T_EXAMPLE}, T={T_EXAMPLE})"
    assert a.title("v") == f"v[layer=0, head=1]  (T={T_EXAMPLE}, hs=8)"


@pytest.mark.parametrize("args,match", [
    (("", 0, 0), "empty"),
    (("to be " * 40, 0, 0), "longer than the model's context of 32"),
    ((RUNNING_EXAMPLE, 2, 0), "layer must be in 0..1"),
    ((RUNNING_EXAMPLE, 0, 3), "head must be in 0..2"),
])
def test_bad_input_says_what_was_wrong(args, match):
    with pytest.raises(ValueError, match=match):
        A.attention_steps(MODEL, *args)


def test_softmax_rows_is_stable_and_masks():
    x = np.array([[1000.0, 1001.0, -np.inf]])
    np.testing.assert_allclose(A.softmax_rows(x), [[1 / (1 + math.e), math.e / (1 + math.e), 0.0]])
    assert A.causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]


def test_score_variance_grows_with_d_and_scaling_fixes_it():
    var = A.score_variance((4, 64, 1024), n=4000)
    np.testing.assert_allclose(var["raw"], [4, 64, 1024], rtol=0.1)
    np.testing.assert_allclose(var["scaled"], 1.0, rtol=0.1)


def test_heatmap_labels_both_axes_with_coloured_tokens():
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, 1, 0)
    fig = A.heatmap(s, "masked", query=4)
    ax = fig.axes[0]
    assert ax.get_title() == s.title("masked")
    assert [t.get_text() for t in ax.get_xticklabels()] == s.tokens
    assert [t.get_text() for t in ax.get_yticklabels()] == s.tokens
    assert ax.get_yticklabels()[1].get_color() == token_color(s.ids[1])
    shown = ax.images[0].get_array()
    assert shown.mask[0, 1] and not shown.mask[1, 0]         # the future is masked out (drawn grey)
    assert len(ax.patches) == 1                              # the query row's frame
    fig = A.heatmap(s, "q")
    assert fig.axes[0].get_xlabel() == "channel" and "(T=13, hs=8)" in fig.axes[0].get_title()
    assert len(A.steps_figure(s).axes) == 8                  # 4 heatmaps, 4 colour bars
    matplotlib.pyplot.close("all")


def test_query_bar_has_one_bar_per_key_in_token_colours():
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, 0, 0)
    ax = A.query_bar(s, 5).axes[0]
    bars = ax.patches
    assert len(bars) == s.T
    np.testing.assert_allclose([b.get_height() for b in bars[:6]], s.weights[5, :6], rtol=1e-6)
    assert matplotlib.colors.to_hex(bars[2].get_facecolor()) == token_color(s.ids[2])
    assert "query=5" in ax.get_title()
    ax = A.query_bar(s, 5, "out").axes[0]
    assert len(ax.patches) == s.hs
    with pytest.raises(ValueError, match="query must be in 0..12"):
        A.query_bar(s, 13)
    matplotlib.pyplot.close("all")


def test_all_heads_figure_one_panel_per_head_in_its_colour():
    fig = A.all_heads_figure(MODEL, RUNNING_EXAMPLE, layer=1)
    assert len(fig.axes) == 3
    for head, ax in enumerate(fig.axes):
        assert ax.get_title() == f"att[layer=1, head={head}]  (T={T_EXAMPLE}, T={T_EXAMPLE})"
        assert matplotlib.colors.to_hex(ax.title.get_color()) == head_color(head)
        np.testing.assert_allclose(np.ma.filled(ax.images[0].get_array(), 0.0),
                                   A.attention_steps(MODEL, RUNNING_EXAMPLE, 1, head).weights, atol=1e-7)
    matplotlib.pyplot.close("all")


def test_attention_over_training_from_models_and_checkpoint_paths(tmp_path):
    later = small_model(seed=1)
    path = save_checkpoint(tmp_path / "ckpt_000010.pt",
                           {"kind": "frame", "config": later.config.to_dict(), "step": 10, "backend": "torch",
                            "params": later.params_numpy()})
    frames = A.attention_over_training(RUNNING_EXAMPLE, 1, 2, [(0, MODEL), (10, path)])
    assert [f.step for f in frames] == [0, 10]
    np.testing.assert_array_equal(frames[0].weights, A.attention_steps(MODEL, RUNNING_EXAMPLE, 1, 2).weights)
    np.testing.assert_allclose(frames[1].weights, A.attention_steps(later, RUNNING_EXAMPLE, 1, 2).weights,
                               atol=1e-6)
    assert not np.allclose(frames[0].weights, frames[1].weights)
    with pytest.raises(ValueError, match="no checkpoints"):
        A.attention_over_training(RUNNING_EXAMPLE, 0, 0, [])


def test_animation_has_a_frame_per_checkpoint_and_renders():
    frames = A.attention_over_training(RUNNING_EXAMPLE, 0, 1, [(0, MODEL), (5, small_model(seed=2))])
    anim = A.attention_animation(frames)
    assert isinstance(anim, FuncAnimation)
    html = anim.to_jshtml()
    assert html.count("data:image/png;base64") == 2 or html.count("base64") >= 2
    ax = anim._fig.axes[0]
    A.draw_frame(frames[1], ax)
    assert "training step 5" in ax.get_title()
    with pytest.raises(ValueError, match="no frames"):
        A.attention_animation([])


@pytest.mark.parametrize("block", [1, 3, 5, 13, 100])
def test_online_softmax_trace_ends_on_softmax(block):
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, 1, 1)
    row = s.masked[9].astype(np.float64)                     # keys 10..12 are masked (-inf)
    trace = A.online_softmax_trace(row, block)
    assert len(trace) == math.ceil(13 / block) and trace[-1].stop == 13
    for st in trace:                                         # after each block: max and sum of what was seen
        seen = row[:st.stop]
        assert st.m == np.max(seen)
        assert st.l == pytest.approx(np.sum(np.exp(seen - st.m)), rel=1e-12)
        np.testing.assert_allclose(st.acc[:st.stop], np.exp(seen - st.m), rtol=1e-12)
    np.testing.assert_allclose(trace[-1].acc / trace[-1].l, A.softmax_rows(row), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(trace[-1].acc / trace[-1].l, s.weights[9], atol=1e-6)


def test_online_softmax_trace_with_values_gives_the_head_output():
    s = A.attention_steps(MODEL, RUNNING_EXAMPLE, 0, 0)
    trace = A.online_softmax_trace(s.masked[12], 4, v=s.v)
    assert trace[-1].acc.shape == (8,)
    np.testing.assert_allclose(trace[-1].acc / trace[-1].l, s.out[12], atol=1e-5)


def test_online_softmax_rescales_when_the_max_grows():
    trace = A.online_softmax_trace([0.0, 1.0, 5.0, 2.0], 1)
    assert [st.m for st in trace] == [0.0, 1.0, 5.0, 5.0]
    assert trace[1].l == pytest.approx(math.exp(-1) + 1)    # the first term rescaled by exp(0 - 1)
    fig = A.online_softmax_figure(trace, [0.0, 1.0, 5.0, 2.0])
    assert len(fig.axes) == 3
    matplotlib.pyplot.close("all")
    with pytest.raises(ValueError, match="non-empty row"):
        A.online_softmax_trace([], 2)
    with pytest.raises(ValueError, match="first key must be visible"):
        A.online_softmax_trace([-np.inf, 1.0], 2)


def test_scale_figure_draws():
    fig = A.scale_figure(d=64, dims=(4, 64))
    assert len(fig.axes) == 2
    matplotlib.pyplot.close("all")


def test_layer_qkv_feeds_the_kernels_to_the_models_output():
    from gpt2lab.kernels.attention import attention_forward, attention_forward_online
    qkv, y = A.layer_qkv(MODEL, RUNNING_EXAMPLE, 1)
    assert qkv.shape == (1, T_EXAMPLE, 72) and y.shape == (1, T_EXAMPLE, 24) and qkv.dtype == np.float32
    out, att = np.zeros_like(y), np.zeros((1, 3, T_EXAMPLE, T_EXAMPLE), np.float32)
    attention_forward(out, att, qkv, 3)
    np.testing.assert_allclose(out, y, atol=1e-5)
    np.testing.assert_allclose(att[0, 1], A.attention_steps(MODEL, RUNNING_EXAMPLE, 1, 1).weights, atol=1e-6)
    out_online, lse = np.zeros_like(y), np.zeros((1, 3, T_EXAMPLE), np.float32)
    attention_forward_online(out_online, lse, qkv, 3)
    np.testing.assert_allclose(out_online, y, atol=1e-5)


def test_kernel_timings_reports_every_version_and_the_cache_sizes():
    t = A.kernel_timings(B=1, T=8, C=24, n_head=3, repeat=1)
    assert all(t[k] > 0 for k in ("torch", "naive", "blas", "online"))
    assert t["att_bytes"] == 3 * 8 * 8 * 4 and t["lse_bytes"] == 3 * 8 * 4


def test_long_texts_label_every_kth_token():
    model = small_model(block_size=128)
    text = "To be, or not to be: that is the question. " * 9      # 117 tokens
    s = A.attention_steps(model, text, 0, 0)
    ax = A.heatmap(s).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == math.ceil(s.T / 3) <= A.MAX_LABELS and labels[1] == s.tokens[3]
    assert ax.get_yticklabels()[1].get_color() == token_color(s.ids[3])
    matplotlib.pyplot.close("all")
