"""Small pieces every widget uses: a one-line HTML message, a figure as PNG bytes, a slider with Play."""
from __future__ import annotations

import html
import io

import ipywidgets as W
import matplotlib.pyplot as plt


def note(text: str, colour: str = "#555") -> str:
    """A one-line message as escaped HTML ("" for no message): how widgets report bad input."""
    return f'<div style="color:{colour}">{html.escape(text, quote=False)}</div>' if text else ""


def figure_png(fig, dpi: int = 80, tight: bool = False) -> bytes:
    """A matplotlib figure as PNG bytes for a W.Image. The figure is closed: the widget shows the PNG, and a
    live figure would also be drawn a second time below the cell."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def player(description: str, last: int, value: int = 0, interval: int = 700):
    """An IntSlider over 0..last and a Play button that steps it (linked in the browser, so playing needs no
    round trip to the kernel). Returns (slider, play, the two side by side)."""
    slider = W.IntSlider(value=value, min=0, max=last, description=description)
    play = W.Play(value=value, min=0, max=last, interval=interval)
    W.jslink((play, "value"), (slider, "value"))
    return slider, play, W.HBox([play, slider])
