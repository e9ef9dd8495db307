"""Lesson 4's widgets: a row through layer norm with your own gamma and beta, and the traced CUDA reduction.

Thin views over `gpt2lab.explain.layernorm` and `gpt2lab.explain.cudatrace`. Controls are attributes; what
is shown is kept as state (`.stages`, `.figure`, `.image.value` (PNG), `.caption.value`, `.message.value`),
so a test sets `.value` on a control and reads the result, with no browser. Bad input shows a message,
never a traceback.
"""
from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from gpt2lab.explain.cudatrace import Trace, reduction_diagram, reduction_steps, step_caption
from gpt2lab.explain.layernorm import row_distribution_figure, row_stages

from ._view import error_note, show_figure




class LayerNormExplorer(W.VBox):
    """One row x (C,) before normalising, after (norm), and after out = norm * gamma + beta.

    gamma, beta (C,) start as the model's (or 1 and 0); the `scale` and `shift` sliders multiply gamma and
    add to beta on every channel, and `channel` marks one channel in every panel (its x, norm and out).
    A row that is not 1-D, has fewer than 2 channels or non-finite values shows a message.
    """

    def __init__(self, x_row, gamma=None, beta=None, title: str = "x"):
        self.title = title
        self.scale = W.FloatSlider(value=1.0, min=0.0, max=3.0, step=0.05, description="scale γ ×")
        self.shift = W.FloatSlider(value=0.0, min=-3.0, max=3.0, step=0.05, description="shift β +")
        self.channel = W.IntSlider(value=0, min=0, max=0, description="channel")
        self.message, self.caption = W.HTML(), W.HTML()
        self.image = W.Image(format="png")
        self.stages, self.figure = None, None
        super().__init__([W.HBox([self.scale, self.shift, self.channel]), self.message, self.caption, self.image])
        for control in (self.scale, self.shift, self.channel):
            control.observe(self._redraw, names="value")
        self.set_row(x_row, gamma, beta)

    def set_row(self, x_row, gamma=None, beta=None):
        """Show a new row (C,), with its gamma and beta (default 1 and 0)."""
        try:
            x = np.asarray(x_row, dtype=np.float32)
            if x.ndim != 1 or x.size < 2:
                raise ValueError(f"LayerNormExplorer needs one row of C >= 2 numbers, got shape {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError("LayerNormExplorer: the row has NaN or infinite values")
            C = x.size
            self.x = x
            self.gamma = np.ones(C, np.float32) if gamma is None else np.broadcast_to(
                np.asarray(gamma, np.float32), (C,)).copy()
            self.beta = np.zeros(C, np.float32) if beta is None else np.broadcast_to(
                np.asarray(beta, np.float32), (C,)).copy()
            self.channel.max = C - 1
        except Exception as e:
            self._fail(e)
            return
        self._redraw()

    def _redraw(self, change=None):
        if not hasattr(self, "x"):
            return
        try:
            gamma = self.gamma * self.scale.value
            beta = self.beta + self.shift.value
            c = self.channel.value
            self.stages = row_stages(self.x, gamma, beta)
            fig = row_distribution_figure(self.x, gamma, beta, title=self.title, highlight=c,
                                          out_range=self.out_range())
            self.figure = fig
            show_figure(self.image, fig)
            self.message.value = ""
            s = self.stages
            self.caption.value = (f"channel {c}: x = {s['x'][c]:+.3f} → norm = {s['norm'][c]:+.3f} → "
                                  f"out = {s['norm'][c]:+.3f} × γ {gamma[c]:.3f} + β {beta[c]:+.3f} = "
                                  f"{s['out'][c]:+.3f}")
        except Exception as e:
            self._fail(e)

    def out_range(self) -> tuple:
        """x limits of the out panel that hold out at every slider setting, so moving a slider moves the
        histogram instead of relabelling its axis."""
        norm = row_stages(self.x, 1.0, 0.0)["norm"]
        reach = self.scale.max * float(np.abs(norm * self.gamma).max())
        lo = float(self.beta.min()) + self.shift.min - reach
        hi = float(self.beta.max()) + self.shift.max + reach
        pad = 0.05 * (hi - lo)   # the extremes are not cut off at the edge
        return lo - pad, hi + pad

    def _fail(self, e: Exception):
        self.stages, self.figure = None, None
        self.image.value, self.caption.value = b"", ""
        self.message.value = error_note(e)


class ReductionStepper(W.VBox):
    """Step through the shared-memory tree reduction of a traced v2 kernel (`trace_layernorm("v2", ...)`).

    `step` walks the phases (store, stride blockDim/2, ..., 1, read the total); `block` picks the CUDA block
    (= the row), `reduction` the sum (0: of x for the mean, 1: of squared deviations for the variance).
    A trace with no reduction (v1) shows a message.
    """

    def __init__(self, trace: Trace):
        self.trace = trace
        self.step = W.IntSlider(value=0, min=0, max=0, description="phase")
        grid = trace.grid if isinstance(trace, Trace) else 1
        self.block = W.IntSlider(value=0, min=0, max=max(grid - 1, 0), description="block (row)")
        self.reduction = W.ToggleButtons(options=[("sum x", 0), ("sum (x-mean)²", 1)], value=0,
                                         description="block_sum")
        self.message, self.caption = W.HTML(), W.HTML()
        self.image = W.Image(format="png")
        self.steps, self.figure = None, None
        super().__init__([W.HBox([self.step, self.block]), self.reduction, self.message, self.caption,
                          self.image])
        for control in (self.block, self.reduction):
            control.observe(self._recompute, names="value")
        self.step.observe(self._redraw, names="value")
        self._recompute()

    def _recompute(self, change=None):
        try:
            if not isinstance(self.trace, Trace):
                raise ValueError("ReductionStepper needs a trace from trace_layernorm('v2', ...), got "
                                 f"{type(self.trace).__name__}")
            self.steps = reduction_steps(self.trace, self.block.value, self.reduction.value)
        except Exception as e:
            self.steps = None
            self._fail(e)
            return
        if self.step.value > len(self.steps) - 1:
            self.step.value = len(self.steps) - 1    # fires _redraw
        self.step.max = len(self.steps) - 1
        self._redraw()

    def _redraw(self, change=None):
        if self.steps is None:
            return
        try:
            i = min(self.step.value, len(self.steps) - 1)
            fig = reduction_diagram(self.trace, self.block.value, self.reduction.value, step=i)
            self.figure = fig
            show_figure(self.image, fig)
            self.message.value = ""
            s = self.steps[i]
            self.caption.value = (f"<b>{html.escape(step_caption(s), quote=False)}</b><br>scratch after this "
                                  f"phase: {np.array2string(s.scratch, precision=3, suppress_small=True)}")
        except Exception as e:
            self._fail(e)

    def _fail(self, e: Exception):
        self.figure = None
        self.image.value, self.caption.value = b"", ""
        self.message.value = error_note(e)


__all__ = ["LayerNormExplorer", "ReductionStepper"]
