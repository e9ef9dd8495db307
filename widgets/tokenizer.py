"""Lesson 1's widgets: a tokenizer playground and a merge-by-merge stepper.

Thin views over `gpt2lab.explain.tokenize`. Each keeps its controls as attributes (`.text`, `.choice`,
`.slider`) and its rendered output in HTML widgets (`.tokens.value`, `.stats.value`, `.message.value`), so
a test sets `.value` on a control and reads the HTML, with no browser.
"""
from __future__ import annotations

import html

import ipywidgets as W

from gpt2lab.explain.palette import FAIL_COLOR, RUNNING_EXAMPLE
from gpt2lab.explain.tokenize import (MergeStep, clean_text, encode_ids, spans_html, token_spans,
                                      token_stats)

from ._view import note, player

class TokenizerPlayground(W.VBox):
    """Type text, pick a tokenizer, see its tokens as coloured boxes (hover: id and bytes; ids below).

    tokenizers: {name: BPETokenizer or tiktoken Encoding}, e.g. {"yours": tok, "GPT-2": gpt2_encoding()}.
    Long texts are counted in full but only the first `max_chars` characters are drawn (the message says
    so); empty text, invalid UTF-8 and lone surrogates give a message, never a traceback.
    """

    def __init__(self, tokenizers: dict, text: str = RUNNING_EXAMPLE, max_chars: int = 5_000):
        if not tokenizers:
            raise ValueError("TokenizerPlayground: give at least one tokenizer, e.g. {'GPT-2': gpt2_encoding()}")
        self.tokenizers, self.max_chars = dict(tokenizers), max_chars
        self.text = W.Textarea(value=text, placeholder="Type any text", description="text",
                               layout=W.Layout(width="95%", height="80px"))
        self.choice = W.Dropdown(options=list(self.tokenizers), description="tokenizer")
        self.stats, self.message, self.tokens = W.HTML(), W.HTML(), W.HTML()
        super().__init__([self.text, W.HBox([self.choice, self.stats]), self.message, self.tokens])
        self.text.observe(self.render, names="value")
        self.choice.observe(self.render, names="value")
        self.render()

    def render(self, change=None):
        """Tokenize the current text with the chosen tokenizer and redraw; errors become a message."""
        try:
            self._render()
        except Exception as e:   # a widget shows what went wrong; it never throws into the page
            self.stats.value, self.tokens.value = "", ""
            self.message.value = note(f"Could not tokenize this text: {type(e).__name__}: {e}", FAIL_COLOR)

    def _render(self):
        text, warnings = clean_text(self.text.value)
        tokenizer = self.tokenizers[self.choice.value]
        if not text:
            self.stats.value, self.tokens.value = "", ""
            self.message.value = note("Type some text above to see its tokens.")
            return
        stats = token_stats(text, encode_ids(tokenizer, text))
        self.stats.value = (f"<b>{stats['n_tokens']:,}</b> tokens &nbsp; {stats['n_chars']:,} characters &nbsp; "
                            f"<b>{stats['chars_per_token']:.2f}</b> chars/token")
        if len(text) > self.max_chars:
            warnings.append(f"Long text ({len(text):,} characters): drawing the first {self.max_chars:,}; "
                            "the counts are for the whole text.")
            text = text[:self.max_chars]
        self.message.value = "".join(note(w, FAIL_COLOR) for w in warnings)
        self.tokens.value = spans_html(token_spans(text, tokenizer))


class MergeStepper(W.VBox):
    """A slider (and play button) stepping through a BPE trace: the sequence after each merge.

    trace: `gpt2lab.explain.tokenize.bpe_trace(...)`. The token made at the current step has a black border.
    """

    def __init__(self, trace: list[MergeStep]):
        if not trace:
            raise ValueError("MergeStepper: the trace is empty; build one with bpe_trace(text, n_merges)")
        self.trace = trace
        last = len(trace) - 1
        self.slider, self.play, controls = player("merges", last, interval=900)
        self.caption, self.tokens = W.HTML(), W.HTML()
        super().__init__([controls, self.caption, self.tokens])
        self.slider.observe(self.render, names="value")
        self.render()

    @property
    def step(self) -> MergeStep:
        """The step the slider is on."""
        return self.trace[self.slider.value]

    def render(self, change=None):
        """Redraw the caption and token boxes for the current step."""
        step = self.step
        self.caption.value = f"<b>{html.escape(step.describe())}</b>"
        highlight = frozenset() if step.new_id is None else frozenset({step.new_id})
        self.tokens.value = spans_html(step.spans(), show_ids=True, highlight=highlight)


__all__ = ["TokenizerPlayground", "MergeStepper"]
