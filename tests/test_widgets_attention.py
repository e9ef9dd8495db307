"""gpt2lab.widgets.attention: driven by setting control values, read back as state, no browser."""
import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")

from gpt2lab.explain.attention import TITLE_NAMES, attention_steps  # noqa: E402
from gpt2lab.explain.palette import RUNNING_EXAMPLE  # noqa: E402
from gpt2lab.gpt2 import GPT2, GPTConfig  # noqa: E402
from gpt2lab.widgets.attention import STEP_HELP, AttentionStepper  # noqa: E402

PNG = b"\x89PNG"


def small_model():
    torch.manual_seed(0)
    model = GPT2(GPTConfig(block_size=32, vocab_size=50257, n_layer=2, n_head=3, n_embd=24)).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(8.0)   # peaked patterns, so different heads look different
    return model


MODEL = small_model()


def bars(w):
    """Heights of the bar chart (the second panel), one per key or channel."""
    return np.array([p.get_height() for p in w.axes[1].patches])


def test_starts_on_the_weights_of_the_last_token():
    w = AttentionStepper(MODEL)
    assert w.layer.max == 1 and w.head.max == 2
    assert len(w.query.options) == 13 and w.query.value == 12
    assert w.query.options[1] == ("1: ␣be", 1)
    assert bytes(w.image.value).startswith(PNG) and w.message.value == ""
    assert "softmax" in w.caption.value and "sum to 1.000" in w.caption.value
    np.testing.assert_allclose(bars(w), attention_steps(MODEL, RUNNING_EXAMPLE, 0, 0).weights[12], rtol=1e-6)
    assert "att[layer=0, head=0]" in w.axes[0].get_title()


def test_query_picks_the_row():
    w = AttentionStepper(MODEL)
    w.query.value = 3
    weights = attention_steps(MODEL, RUNNING_EXAMPLE, 0, 0).weights
    heights = bars(w)
    np.testing.assert_allclose(heights[:4], weights[3, :4], rtol=1e-6)
    assert np.all(heights[4:] <= 0.02)                      # the future: outlines only
    assert "query 3 '␣or' sees keys 0..3" in w.caption.value


def test_layer_and_head_change_the_pattern():
    w = AttentionStepper(MODEL)
    before = w.steps.weights.copy()
    w.layer.value, w.head.value = 1, 2
    assert (w.steps.layer, w.steps.head) == (1, 2)
    np.testing.assert_array_equal(w.steps.weights, attention_steps(MODEL, RUNNING_EXAMPLE, 1, 2).weights)
    assert not np.allclose(before, w.steps.weights)
    assert "att[layer=1, head=2]" in w.axes[0].get_title()


def test_every_step_can_be_shown():
    w = AttentionStepper(MODEL)
    w.query.value = 6
    for name in STEP_HELP:
        w.step.value = name
        assert w.message.value == "" and bytes(w.image.value).startswith(PNG)
        assert w.axes[0].get_title().startswith(f"{TITLE_NAMES.get(name, name)}[layer=0, head=0]")
        row = getattr(w.steps, name)[6]
        assert len(bars(w)) == row.size                     # one bar per key, or per channel
    w.step.value = "out"
    np.testing.assert_allclose(bars(w), w.steps.out[6], rtol=1e-6)
    assert "a vector of 8 numbers" in w.caption.value


def test_new_text_rebuilds_the_queries_and_keeps_a_valid_one():
    w = AttentionStepper(MODEL)
    w.query.value = 10
    w.text.value = "Hello world"
    assert w.query.options == (("0: Hello", 0), ("1: ␣world", 1)) and w.query.value == 1
    assert w.steps.T == 2 and bytes(w.image.value).startswith(PNG)
    w.query.value = 0
    w.text.value = "To be"
    assert w.query.value == 0


def test_empty_text_gives_a_message_then_recovers():
    w = AttentionStepper(MODEL)
    w.text.value = ""
    assert "Type some text" in w.message.value
    assert w.steps is None and bytes(w.image.value) == b"" and w.caption.value == ""
    w.query.value = 0          # controls still work, nothing breaks
    w.step.value = "scores"
    w.text.value = RUNNING_EXAMPLE
    assert w.message.value == "" and w.steps is not None and bytes(w.image.value).startswith(PNG)


def test_text_longer_than_the_context_gives_a_message():
    w = AttentionStepper(MODEL)
    w.text.value = "to be or not " * 20
    assert "context holds 32" in w.message.value and "Traceback" not in w.message.value
    assert w.steps is None and bytes(w.image.value) == b""


def test_a_failing_model_shows_its_error():
    class Broken(GPT2):
        def forward(self, idx, targets=None):
            raise RuntimeError("model exploded")
    torch.manual_seed(0)
    w = AttentionStepper(Broken(GPTConfig(block_size=16, vocab_size=50257, n_layer=1, n_head=2, n_embd=8)))
    assert "model exploded" in w.message.value and bytes(w.image.value) == b""
