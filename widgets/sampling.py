"""Lesson 7's widget: the sampling lab -- the next-token distribution of the course model after a context, with
temperature, top-k and top-p sliders that update it live, and a button that writes text with those settings.

A thin view over `gpt2lab.explain.sampling`. State a test can read without a browser: `.distribution` (the last
Distribution), `.image.value` (PNG), `.caption.value`, `.output.value` (generated text), `.message.value`.
"""
from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from gpt2lab.explain.palette import FAIL_COLOR, RUNNING_EXAMPLE
from gpt2lab.explain.sampling import distribution_figure, generate_text, next_token_distribution

from ._view import note, show_figure


class SamplingLab(W.VBox):
    """model: a GPT2 (the course model). context: the text whose next token is shown (default: the running
    sentence). top_k 0 and top_p 1.0 mean off."""

    def __init__(self, model, context: str = RUNNING_EXAMPLE, encoding=None, n_new: int = 24):
        from gpt2lab.datasets import gpt2_encoding
        self.model, self.enc, self.n_new = model, encoding or gpt2_encoding(), n_new
        self.context = W.Text(value=context, description="context", layout=W.Layout(width="640px"))
        self.temperature = W.FloatSlider(value=1.0, min=0.0, max=2.0, step=0.05, description="temperature")
        self.top_k = W.IntSlider(value=0, min=0, max=100, description="top-k (0 off)")
        self.top_p = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p")
        self.seed = W.IntText(value=0, description="seed", layout=W.Layout(width="160px"))
        self.generate = W.Button(description="generate")
        self.message, self.caption, self.output = W.HTML(), W.HTML(), W.HTML()
        self.image = W.Image(format="png")
        self.distribution = None
        super().__init__([self.context, W.HBox([self.temperature, self.top_k, self.top_p]),
                          W.HBox([self.generate, self.seed]), self.message, self.caption, self.image, self.output])
        for control in (self.context, self.temperature, self.top_k, self.top_p):
            control.observe(self._redraw, names="value")
        self.generate.on_click(self._generate)
        self._redraw()

    def settings(self) -> dict:
        """The sampler's settings from the controls: temperature, top_k (None: off), top_p (None: off)."""
        return {"temperature": float(self.temperature.value), "top_k": int(self.top_k.value) or None,
                "top_p": None if self.top_p.value >= 1.0 else float(self.top_p.value)}

    def _ids(self) -> np.ndarray:
        ids = self.enc.encode_ordinary(self.context.value)
        if not ids:
            raise ValueError("type some text as the context")
        return np.array(ids)

    def _redraw(self, change=None) -> None:
        try:
            d = next_token_distribution(self.model, self._ids(), encoding=self.enc, **self.settings())
        except ValueError as e:
            self.message.value = note(str(e), FAIL_COLOR)
            return
        self.message.value = ""
        self.distribution = d
        best = d.top[0]
        self.caption.value = note(f"{d.kept} of {d.probs.size} tokens can be drawn; the most likely, "
                                  f"{best[1]!r}, has p = {best[2]:.3f} (at temperature 1: {best[3]:.3f})")
        show_figure(self.image, distribution_figure(d))

    def _generate(self, button=None) -> None:
        try:
            text = generate_text(self.model, self._ids(), self.n_new, seed=int(self.seed.value), encoding=self.enc,
                                 **self.settings())
        except ValueError as e:
            self.message.value = note(str(e), FAIL_COLOR)
            return
        self.output.value = (f'<div style="font-family:monospace;white-space:pre-wrap">'
                             f'{html.escape(self.context.value)}<b style="color:#08519c">{html.escape(text)}</b></div>')
