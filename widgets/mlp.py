"""Lesson 6's widget: GELU and its derivative at a point x you move.

A thin view over `gpt2lab.explain.mlp.gelu_figure`; the picture is kept as state (`.image.value`, PNG, and
`.caption.value`), so a test moves `.x.value` and reads the result with no browser.
"""
from __future__ import annotations

import ipywidgets as W

from gpt2lab.explain.mlp import activation_curves, gelu_figure

from ._view import note, show_figure


class GeluExplorer(W.VBox):
    """GELU and ReLU over [-4, 4], the derivative below; the slider moves the marked point x."""

    def __init__(self, x: float = -0.5):
        self.x = W.FloatSlider(value=x, min=-4.0, max=4.0, step=0.1, description="x")
        self.caption, self.image = W.HTML(), W.Image(format="png")
        super().__init__([self.x, self.caption, self.image])
        self.x.observe(self._redraw, names="value")
        self._redraw()

    def _redraw(self, change=None) -> None:
        x = float(self.x.value)
        c = activation_curves([x])
        self.caption.value = note(f"gelu({x:.2f}) = {c['gelu'][0]:.4f}   relu = {c['relu'][0]:.4f}   "
                                  f"d gelu/dx = {c['dgelu'][0]:.4f}   (the exact erf GELU: {c['gelu_erf'][0]:.4f})")
        show_figure(self.image, gelu_figure(x))
