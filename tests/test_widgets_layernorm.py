"""gpt2lab.widgets.layernorm: driven by setting control values, read back as state, no browser."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from gpt2lab.explain.cudatrace import Trace, trace_layernorm  # noqa: E402
from gpt2lab.widgets.layernorm import LayerNormExplorer, ReductionStepper  # noqa: E402

PNG = b"\x89PNG"
ROW = np.random.default_rng(0).normal(2.0, 5.0, 64).astype(np.float32)
GAMMA = np.linspace(0.5, 1.5, 64).astype(np.float32)
BETA = np.linspace(-0.2, 0.2, 64).astype(np.float32)
INP = np.random.default_rng(1).normal(0.0, 1.0, (2, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def trace():
    """One traced simulator run (a subprocess), made when first needed, not at collection."""
    return trace_layernorm("v2", INP, block=4)


def test_explorer_starts_normalised_with_the_models_gamma_beta():
    w = LayerNormExplorer(ROW, GAMMA, BETA, title="x[t=3]")
    assert bytes(w.image.value).startswith(PNG) and w.message.value == ""
    assert w.channel.max == 63
    s = w.stages
    assert abs(s["norm"].mean()) < 1e-5 and abs(s["norm"].std() - 1) < 1e-3
    np.testing.assert_allclose(s["out"], s["norm"] * GAMMA + BETA, rtol=1e-5, atol=1e-6)
    assert "x[t=3]  (C=64)" in w.figure._suptitle.get_text()
    assert "channel 0:" in w.caption.value


def test_scale_and_shift_move_the_output_only():
    w = LayerNormExplorer(ROW)
    norm = w.stages["norm"].copy()
    w.scale.value, w.shift.value = 2.0, 1.5
    np.testing.assert_array_equal(w.stages["norm"], norm)             # normalising ignores gamma/beta
    assert abs(w.stages["out"].mean() - 1.5) < 1e-4 and abs(w.stages["out"].std() - 2.0) < 1e-3
    w.channel.value = 10
    assert f"out = {norm[10]:+.3f} × γ 2.000 + β +1.500" in w.caption.value
    w.scale.value = 0.0                                               # gamma 0: every channel is beta
    np.testing.assert_allclose(w.stages["out"], 1.5)
    # the out panel keeps its limits whatever the sliders say, and they hold every output
    limits = w.figure.axes[2].get_xlim()
    w.scale.value, w.shift.value = 3.0, -3.0
    assert w.figure.axes[2].get_xlim() == limits
    assert limits[0] <= w.stages["out"].min() and w.stages["out"].max() <= limits[1]


def test_explorer_bad_rows_show_a_message():
    w = LayerNormExplorer(np.zeros((2, 3)))
    assert "one row" in w.message.value and w.image.value == b"" and w.stages is None
    w.set_row([1.0, np.nan, 2.0])
    assert "NaN" in w.message.value
    w.set_row(ROW)
    assert w.message.value == "" and bytes(w.image.value).startswith(PNG)
    w.set_row(ROW, gamma=np.ones(5))                                 # gamma of the wrong length
    assert "broadcast" in w.message.value


def test_stepper_walks_the_tree(trace):
    w = ReductionStepper(trace)
    assert w.step.max == 3 and w.block.max == 1                    # store, stride 2, stride 1, read total
    assert "stores its partial sum" in w.caption.value
    w.step.value = 1
    assert "stride 2" in w.caption.value and "stride 2" in w.figure.axes[0].get_title()
    w.step.value = 3
    assert f"scratch[0] = {INP[0].sum():.4g}" in w.caption.value
    w.block.value = 1
    assert f"scratch[0] = {INP[1].sum():.4g}" in w.caption.value
    w.reduction.value = 1
    assert f"{8 * INP[1].var():.3g}"[:4] in w.caption.value
    for phase in range(w.step.max + 1):   # the slider, the caption and the picture name the same phase
        w.step.value = phase
        assert w.step.description == "phase" and f"phase {phase}:" in w.caption.value
        assert w.figure.axes[0].get_title().startswith(f"phase {phase}:")
    assert bytes(w.image.value).startswith(PNG) and w.message.value == ""


def test_stepper_on_a_trace_without_a_reduction_shows_a_message():
    w = ReductionStepper(Trace("v1", 1, 4, {"inp": (2, 16)}, []))
    assert "0 reductions" in w.message.value and w.image.value == b""


def test_stepper_on_something_that_is_not_a_trace_shows_a_message():
    w = ReductionStepper({"events": []})
    assert "needs a trace from trace_layernorm" in w.message.value and w.image.value == b""
