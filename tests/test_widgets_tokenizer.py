"""gpt2lab.widgets.tokenizer: driven by setting control values, read back as HTML, no browser."""
from functools import lru_cache

import pytest

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.datasets.bpe import BPETokenizer
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain.tokenize import bpe_trace
from gpt2lab.widgets.tokenizer import MergeStepper, TokenizerPlayground


@lru_cache(maxsize=1)
def yours():
    return BPETokenizer().train(RUNNING_EXAMPLE * 5, 270)


def playground(**kw):
    return TokenizerPlayground({"yours": yours(), "GPT-2": gpt2_encoding()}, **kw)


def test_playground_shows_tokens_and_counts():
    pg = playground()
    pg.choice.value = "GPT-2"
    n = len(gpt2_encoding().encode(RUNNING_EXAMPLE))
    assert f"<b>{n}</b> tokens" in pg.stats.value
    assert pg.tokens.value.count('title="id ') == n
    assert "␣be" in pg.tokens.value and pg.message.value == ""


def test_switching_tokenizer_changes_the_view():
    pg = playground()
    pg.choice.value = "GPT-2"
    gpt2_html = pg.tokens.value
    pg.choice.value = "yours"
    assert pg.tokens.value != gpt2_html
    assert f"<b>{len(yours().encode(RUNNING_EXAMPLE))}</b> tokens" in pg.stats.value


def test_typing_updates_the_view():
    pg = playground()
    pg.choice.value = "GPT-2"
    pg.text.value = "Hello world"
    assert "ids: [15496, 995]" in pg.tokens.value
    assert "5.50</b> chars/token" in pg.stats.value


def test_empty_text_gives_a_message():
    pg = playground()
    pg.text.value = ""
    assert "Type some text" in pg.message.value and pg.tokens.value == ""


def test_lone_surrogates_give_a_message_not_a_traceback():
    pg = playground()
    pg.choice.value = "GPT-2"
    pg.text.value = "bad \ud800 half"
    assert "surrogate" in pg.message.value
    assert "\ufffd" in pg.tokens.value
    assert "Traceback" not in pg.message.value


def test_a_megabyte_is_counted_in_full_and_drawn_truncated():
    pg = playground(max_chars=2_000)
    pg.choice.value = "GPT-2"
    text = ("All the world's a stage, and all the men and women merely players. " * 16_000)[:1_000_000]
    pg.text.value = text
    assert "Long text (1,000,000 characters)" in pg.message.value
    assert f"<b>{len(gpt2_encoding().encode(text)):,}</b> tokens" in pg.stats.value
    assert len(pg.tokens.value) < 200_000


def test_a_failing_tokenizer_shows_its_error():
    class Broken:
        def encode_ordinary(self, text):
            raise RuntimeError("tokenizer exploded")
    pg = TokenizerPlayground({"broken": Broken()})
    assert "tokenizer exploded" in pg.message.value and pg.tokens.value == ""


def test_playground_needs_a_tokenizer():
    with pytest.raises(ValueError, match="at least one tokenizer"):
        TokenizerPlayground({})


def test_stepper_follows_the_slider():
    trace = bpe_trace(RUNNING_EXAMPLE, n_merges=10)
    ms = MergeStepper(trace)
    assert ms.slider.max == len(trace) - 1
    assert "start" in ms.caption.value and ms.tokens.value.count('title="id ') == 42
    ms.slider.value = 1
    assert "merge 1" in ms.caption.value and "2px solid black" in ms.tokens.value
    assert ms.tokens.value.count('title="id ') == len(trace[1].ids)
    ms.slider.value = len(trace) - 1
    assert ms.tokens.value.count('title="id ') == len(trace[-1].ids) < 42


def test_stepper_needs_a_trace():
    with pytest.raises(ValueError, match="trace is empty"):
        MergeStepper([])
