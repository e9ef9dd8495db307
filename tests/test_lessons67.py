"""Lessons 6 and 7's data and widgets: explain/mlp.py, explain/sampling.py, explain/brokenkernel.py,
widgets/mlp.py and widgets/sampling.py, without a browser."""
import numpy as np
import pytest
import torch

from gpt2lab.explain import mlp as M
from gpt2lab.explain import sampling as S


def test_gelu_grad_is_the_derivative_of_gelu_and_gelu_is_torchs():
    x = np.linspace(-5, 5, 101)
    numeric = (M.gelu(x + 1e-6) - M.gelu(x - 1e-6)) / 2e-6
    assert np.allclose(M.gelu_grad(x), numeric, atol=1e-7)
    want = torch.nn.functional.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    assert np.allclose(M.gelu(x), want, atol=1e-12)


def test_tile_schedule_covers_out_once_and_walks_all_of_c():
    sched = M.tile_schedule(N=6, C=10, OC=7, tile=4)
    covered = np.zeros((6, 7), int)
    for s in sched:
        (n0, n1), (o0, o1) = s["rows"], s["cols"]
        covered[n0:n1, o0:o1] += 1
        assert s["k_tiles"] == [(0, 4), (4, 8), (8, 10)]
    assert (covered == 1).all() and len(sched) == 4
    with pytest.raises(ValueError, match="tile"):
        M.tile_schedule(6, 10, 7, 0)


def test_the_ladder_rungs_compute_the_same_matmul():
    rows = M.time_ladder(N=8, C=16, OC=24, repeats=1, python_rows=1)
    assert [r["version"] for r in rows] == [name for name, _ in M.LADDER]
    assert all(r["seconds"] > 0 for r in rows) and rows[0]["speedup"] == 1


def test_filter_probs_temperature_top_k_top_p():
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))
    assert np.allclose(S.filter_probs(logits), [0.5, 0.2, 0.15, 0.1, 0.05])
    assert np.allclose(S.filter_probs(logits, top_k=2), [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])
    assert np.allclose(S.filter_probs(logits, top_p=0.8), [0.5 / 0.85, 0.2 / 0.85, 0.15 / 0.85, 0, 0])
    assert np.allclose(S.filter_probs(logits, temperature=0), [1, 0, 0, 0, 0])
    cold, hot = S.filter_probs(logits, temperature=0.5), S.filter_probs(logits, temperature=2.0)
    assert cold[0] > 0.5 > hot[0]
    with pytest.raises(ValueError, match="top_p"):
        S.filter_probs(logits, top_p=0)
    with pytest.raises(ValueError, match="top_k"):
        S.filter_probs(logits, top_k=0)


def test_crossentropy_backward_is_probs_minus_onehot():
    steps = S.crossentropy_steps(np.array([1.0, 2.0, -1.0, 0.5]), target=2)
    assert np.allclose(steps["dlogits"], steps["autograd"])
    assert np.isclose(steps["loss"], -np.log(steps["probs"][2]))


@pytest.fixture(scope="module")
def small_model():
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.model import GPT2
    torch.manual_seed(0)
    return GPT2(GPTConfig(block_size=16, vocab_size=50257, n_layer=1, n_head=2, n_embd=16)).eval()


def test_sampling_lab_sliders_change_the_distribution_and_generate_writes(small_model):
    from gpt2lab.widgets import SamplingLab
    lab = SamplingLab(small_model, n_new=3)
    assert lab.distribution.kept == 50257 and lab.image.value
    lab.top_k.value = 5
    assert lab.distribution.kept == 5
    lab.temperature.value = 0.0
    assert lab.distribution.kept == 1
    lab.generate.click()
    assert lab.output.value.count("<b") == 1
    lab.context.value = ""
    assert "type some text" in lab.message.value


def test_gelu_explorer_follows_its_slider():
    from gpt2lab.widgets import GeluExplorer
    view = GeluExplorer(x=1.0)
    before = view.caption.value
    view.x.value = -2.0
    assert view.caption.value != before and "gelu(-2.00)" in view.caption.value and view.image.value


def test_broken_run_draws_a_classic_fault_with_its_seed_and_a_teacher_can_pick():
    from gpt2lab.explain.brokenkernel import classic_faults, pick_fault
    assert pick_fault(None, 3) == pick_fault(None, 3) in classic_faults()
    assert pick_fault("gelu_backward_off", 0) == "gelu_backward_off"
    with pytest.raises(ValueError, match="unknown fault"):
        pick_fault("nope", 0)


def test_sampling_lab_handout_stand_in_steps_top_k(small_model):
    from gpt2lab.widgets import SamplingLab
    from gpt2lab.widgets.standin import control_animation, first_control
    lab = SamplingLab(small_model, n_new=2)
    assert first_control(lab) is lab.top_k
    page = control_animation(lab, max_frames=3)
    assert page and page.count("data:image/png;base64") >= 3 and lab.top_k.value == 0   # put back
