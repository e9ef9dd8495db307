"""Lesson 5's widgets: backward step by step through a typed expression, and gradient flow over training.

Thin views over `gpt2lab.explain.autograd`, `.graph` and `.gradflow`. Controls are attributes (`.expression`,
`.slider`), pictures are PNGs in `.image.value`, messages in `.message.value`: a test drives them with no browser.
"""
from __future__ import annotations


import ipywidgets as W

from gpt2lab.explain.autograd import parse_expression, topological_order
from gpt2lab.explain.graph import backward_steps, draw_graph
from gpt2lab.explain.gradflow import GradFlow, draw_gradflow
from gpt2lab.explain.palette import FAIL_COLOR

from ._view import note, player, show_figure

MAX_NODES = 40  # beyond this a graph no longer fits on a screen



def parse_values(text: str) -> dict[str, float]:
    """"a=2, b=-3" -> {"a": 2.0, "b": -3.0}; ValueError naming the piece it could not read."""
    values = {}
    for piece in filter(None, (p.strip() for p in text.split(","))):
        name, _, number = piece.partition("=")
        name = name.strip()
        if not name.isidentifier() or not number.strip():
            raise ValueError(f"cannot read {piece!r}: write name=number, e.g. a=2")
        try:
            values[name] = float(number)
        except ValueError:
            raise ValueError(f"cannot read {piece!r}: {number.strip()!r} is not a number") from None
    return values


class BackpropStepper(W.VBox):
    """Type an expression and its inputs; step (or play) backward one node at a time through its graph.

    Step 0 sets d out/d out = 1; each step runs one node's local backward, and the gradient arrives at its inputs.
    """

    def __init__(self, expression: str = "(a*b + c).tanh()", values: str = "a=2, b=-3, c=6.5"):
        self.expression = W.Text(value=expression, description="out =", layout=W.Layout(width="60%"))
        self.values = W.Text(value=values, description="inputs")
        self.slider, self.play, controls = player("step", 0, interval=900)
        self.message, self.image = W.HTML(), W.Image(format="png")
        super().__init__([self.expression, self.values, controls, self.message, self.image])
        self.root, self.snaps = None, []
        self.expression.observe(self.rebuild, names="value")
        self.values.observe(self.rebuild, names="value")
        self.slider.observe(self.render, names="value")
        self.rebuild()

    def rebuild(self, change=None):
        """Parse the expression and inputs, run backward once recording every step; errors become a message."""
        try:
            root = parse_expression(self.expression.value, parse_values(self.values.value))
            n = len(topological_order(root))
            if n > MAX_NODES:
                raise ValueError(f"the graph has {n} values; keep it under {MAX_NODES} so it fits on screen")
            self.root, self.snaps = root, backward_steps(root)
        except Exception as e:  # a typo is a message, not a traceback
            self.root, self.snaps = None, []
            self.image.value = b""
            self.message.value = note(f"{e}", FAIL_COLOR)
            return
        last = len(self.snaps) - 1
        self.slider.value = min(self.slider.value, last)
        self.slider.max = self.play.max = last
        self.render()

    def render(self, change=None):
        if self.root is None:
            return
        i = self.slider.value
        self.message.value = note(f"out = {self.root.data:.4f}.  Step {i} of {len(self.snaps) - 1}"
                                   + ("  (d out / d out = 1)" if i == 0 else ""))
        show_figure(self.image, draw_graph(self.root, self.snaps[i], title=f"backward step {i}"), tight=True)


class GradFlowView(W.VBox):
    """A slider over training checkpoints: gradient norms per layer and group, and along the residual stream."""

    def __init__(self, flow: GradFlow):
        if len(flow.steps) == 0:
            raise ValueError("GradFlowView: the flow has no frames")
        self.flow = flow
        last = len(flow.steps) - 1
        self.slider, self.play, controls = player("checkpoint", last)
        self.caption, self.image = W.HTML(), W.Image(format="png")
        super().__init__([controls, self.caption, self.image])
        self.slider.observe(self.render, names="value")
        self.render()

    def render(self, change=None):
        i = self.slider.value
        f = self.flow
        self.caption.value = (f"<b>step {int(f.steps[i])}</b> &nbsp; loss {f.loss[i]:.3f} &nbsp; "
                              f"‖dL/dwte‖ {f.wte[i]:.3g} &nbsp; ‖dL/dwpe‖ {f.wpe[i]:.3g}")
        fig, _ = draw_gradflow(f, i)
        show_figure(self.image, fig, tight=True)


__all__ = ["BackpropStepper", "GradFlowView", "parse_values"]
