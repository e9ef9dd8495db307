"""Lesson 3's widget: step through one attention head on a real model, intermediate by intermediate.

A thin view over `gpt2lab.explain.attention`. Controls are attributes (`.text`, `.layer`, `.head`, `.query`,
`.step`); what is shown is kept as state (`.steps`: the AttentionSteps drawn, `.figure`: the matplotlib
figure, `.axes`: its heatmap and bar chart, `.image.value`: its PNG, `.caption.value`, `.message.value`),
so a test sets `.value` on a control and reads the result, with no browser.
"""
from __future__ import annotations

import html

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np

from gpt2lab.explain.attention import AttentionSteps, attention_steps, heatmap, query_bar, token_ids
from gpt2lab.explain.palette import FIGURE_MAX_WIDTH_IN, RUNNING_EXAMPLE

from ._view import error_note, note, show_figure

# What each view shows, in the order the forward pass makes them.
STEP_HELP = {
    "q": "q = h W_q: what each token is looking for",
    "k": "k = h W_k: what each token offers to be found by",
    "v": "v = h W_v: what each token passes on when it is attended to",
    "scores": "scores = q k^T: how well each query matches each key",
    "scaled": "scaled = scores / sqrt(hs): variance ~1 whatever the head size",
    "masked": "masked: -inf (grey) where the key is in the future",
    "weights": "att = softmax(masked), the weights: each row sums to 1, the future gets 0",
    "out": "out = weights v: each token's weighted average of the values",
}


class _Hint(ValueError):
    """Not an error: the widget has nothing to show yet (empty text)."""




class AttentionStepper(W.VBox):
    """Pick a text, layer, head and query token; see one intermediate as a heatmap (the query's row framed)
    next to a bar chart of that row. model: a gpt2lab GPT2 (e.g. the trained course model).

    Empty text, text longer than the context, or any failure shows a message, never a traceback.
    """

    def __init__(self, model, text: str = RUNNING_EXAMPLE, layer: int = 0, head: int = 0, step: str = "weights"):
        self.model = model
        cfg = model.config
        self.text = W.Text(value=text, description="text", continuous_update=False,
                           layout=W.Layout(width="95%"))
        self.layer = W.IntSlider(value=layer, min=0, max=cfg.n_layer - 1, description="layer")
        self.head = W.IntSlider(value=head, min=0, max=cfg.n_head - 1, description="head")
        self.query = W.Dropdown(options=[], description="query")
        self.step = W.ToggleButtons(options=list(STEP_HELP), value=step, description="show",
                                    style={"button_width": "84px"})
        self.message, self.caption = W.HTML(), W.HTML()
        self.image = W.Image(format="png")
        self.steps: AttentionSteps | None = None
        self.figure, self.axes = None, ()   # the heatmap's and the bar chart's axes
        self._busy = False   # set while the query options are rebuilt, so that does not redraw twice
        super().__init__([self.text, W.HBox([self.layer, self.head, self.query]), self.step, self.message,
                          self.caption, self.image])
        for control in (self.text, self.layer, self.head):
            control.observe(self._recompute, names="value")
        for control in (self.query, self.step):
            control.observe(self._redraw, names="value")
        self._recompute()

    # ---- events
    def _recompute(self, change=None):
        """The text, layer or head changed: recompute the head's intermediates, then redraw."""
        try:
            self.steps = None
            self.steps = self._compute()
            self._set_queries()
        except Exception as e:   # a widget shows what went wrong; it never throws into the page
            self._fail(e)
            return
        self._redraw()

    def _redraw(self, change=None):
        """The query or the view changed: redraw from the cached intermediates."""
        if self._busy or self.steps is None:
            return
        try:
            self._draw()
        except Exception as e:
            self._fail(e)

    # ---- work
    def _compute(self) -> AttentionSteps | None:
        text = self.text.value
        if not text:
            raise _Hint("Type some text above to see what its tokens attend to.")
        n = len(token_ids(text))
        if n > self.model.config.block_size:
            raise ValueError(f"This text is {n:,} tokens; the model's context holds {self.model.config.block_size}. "
                             "Shorten it.")
        return attention_steps(self.model, text, self.layer.value, self.head.value)

    def _set_queries(self):
        """One option per token ('7: ␣be'); keep the chosen query when it still exists, else the last token."""
        options = [(f"{t}: {label}", t) for t, label in enumerate(self.steps.tokens)]
        old = self.query.value
        self._busy = True
        try:
            self.query.options = options
            self.query.value = old if old is not None and old < len(options) else len(options) - 1
        finally:
            self._busy = False

    def _draw(self):
        s, t, name = self.steps, self.query.value, self.step.value
        fig, (a, b) = plt.subplots(1, 2, figsize=(FIGURE_MAX_WIDTH_IN, min(0.25 * s.T + 2.6, 7.0)),
                                   gridspec_kw={"width_ratios": [1.1, 1]})
        heatmap(s, name, ax=a, query=t)
        query_bar(s, t, name, ax=b)
        fig.tight_layout()
        self.figure, self.axes = fig, (a, b)
        show_figure(self.image, fig)
        self.message.value = ""
        self.caption.value = (f"<b>{html.escape(STEP_HELP[name], quote=False)}</b><br>"
                              f"{html.escape(self.describe(), quote=False)}")

    def describe(self) -> str:
        """One line about the current query: where its attention goes (weights) or its row's range."""
        s, t, name = self.steps, self.query.value, self.step.value
        if name in ("scores", "scaled", "masked", "weights"):
            w = s.weights[t]
            top = int(np.argmax(w))
            return (f"query {t} '{s.tokens[t]}' sees keys 0..{t}; most weight on key {top} '{s.tokens[top]}' "
                    f"({w[top]:.2f}); its weights sum to {w.sum():.3f}")
        row = getattr(s, name)[t]
        return (f"token {t} '{s.tokens[t]}': {name} is a vector of {row.size} numbers "
                f"in [{row.min():.2f}, {row.max():.2f}]")

    def _fail(self, e: Exception):
        self.steps, self.figure = None, None
        self.image.value, self.caption.value = b"", ""
        self.message.value = note(str(e)) if isinstance(e, _Hint) else error_note(e, "Could not compute attention")


__all__ = ["AttentionStepper", "STEP_HELP"]
