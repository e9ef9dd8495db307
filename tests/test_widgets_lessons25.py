"""Lesson 2 and 5 widgets, driven without a browser: set a control's value, read the HTML / PNG."""
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")

from gpt2lab.datasets import gpt2_encoding  # noqa: E402
from gpt2lab.explain.gradflow import gradflow_over_training  # noqa: E402
from gpt2lab.gpt2.config import GPTConfig  # noqa: E402
from gpt2lab.gpt2.model import GPT2  # noqa: E402
from gpt2lab.widgets.backprop import BackpropStepper, GradFlowView, parse_values  # noqa: E402
from gpt2lab.widgets.embeddings import NeighbourExplorer, PositionSimilarityView, resolve_token  # noqa: E402

ENC = gpt2_encoding()


def king_table():
    """A table where ' queen' is the nearest to ' king' by construction."""
    rng = np.random.default_rng(0)
    wte = rng.standard_normal((ENC.n_vocab, 8)).astype(np.float32)
    king, queen = ENC.encode_ordinary(" king")[0], ENC.encode_ordinary(" queen")[0]
    wte[queen] = wte[king] + 0.01
    return wte, king, queen


def test_neighbour_explorer_finds_neighbours_and_reports_bad_input():
    wte, king, queen = king_table()
    counts = np.zeros(ENC.n_vocab, np.int64)
    counts[[king, queen]] = 5
    w = NeighbourExplorer(wte, ENC, counts=counts, text="king", k=3)
    assert "␣queen" in w.result.value and w.result.value.count("cos ") == 3
    assert w.message.value == ""
    w.text.value = "   "
    assert w.result.value == "" and "not one token" in w.message.value
    w.text.value = ""
    assert "Type a word" in w.message.value
    w.text.value = "Shakespearean"
    assert "not one token" in w.message.value and "Traceback" not in w.message.value
    w.text.value = "computer"  # a real token the (fake) training never saw
    assert "never saw" in w.message.value and "cos " in w.result.value
    w.k.value = 1
    assert w.result.value.count("cos ") == 1


def test_resolve_token_tries_the_leading_space():
    assert resolve_token(ENC, "king") == (ENC.encode_ordinary(" king")[0], "")
    assert resolve_token(ENC, ",")[0] == ENC.encode_ordinary(",")[0]


def test_position_similarity_view_slides_over_checkpoints():
    rng = np.random.default_rng(0)
    wpes = [rng.standard_normal((32, 8)) for _ in range(3)]
    w = PositionSimilarityView(wpes, [0, 10, 20], T=16)
    assert w.sim.shape == (16, 16) and w.image.value[:4] == b"\x89PNG" and "step 20" in w.caption.value
    w.slider.value = 0
    assert "step 0" in w.caption.value
    np.testing.assert_allclose(np.diag(w.sim), 1, atol=1e-6)


def test_backprop_stepper_steps_and_reports_bad_expressions():
    w = BackpropStepper("(a*b + c).tanh()", "a=2, b=-3, c=6.5")
    assert w.slider.max == 3 and w.image.value[:4] == b"\x89PNG"
    w.slider.value = 3
    assert "Step 3 of 3" in w.message.value
    for bad in ["a*", "d + 1", "__import__('os').system('true')", "", "a**b"]:
        w.expression.value = bad
        assert w.root is None and w.message.value and "Traceback" not in w.message.value
    w.expression.value = "a.log()"  # a=2: fine; then a negative input: log's message
    assert w.root is not None
    w.values.value = "a=-1, b=1, c=1"
    assert "positive" in w.message.value
    w.values.value = "a=two"
    assert "not a number" in w.message.value
    w.values.value = "a=2, b=1, c=1"
    w.expression.value = " + ".join(["a*b"] * 30)
    assert "fits on screen" in w.message.value


def test_parse_values():
    assert parse_values("a=2, b = -3.5,") == {"a": 2.0, "b": -3.5}


def test_gradflow_view():
    cfg = GPTConfig.preset("tiny", vocab_size=50, block_size=8, n_layer=2)
    torch.manual_seed(0)
    models = [GPT2(cfg), GPT2(cfg)]
    x = np.random.default_rng(0).integers(0, 50, (2, 8))
    flow = gradflow_over_training([(0, 0), (7, 1)], x, x, load=models.__getitem__)
    w = GradFlowView(flow)
    assert "step 0" in w.caption.value and w.image.value[:4] == b"\x89PNG"
    w.slider.value = 1
    assert "step 7" in w.caption.value
