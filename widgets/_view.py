"""Small pieces every widget uses: a one-line HTML message, a figure drawn at the size it is shown, a slider
with Play."""
from __future__ import annotations

import html
import io
import struct

import ipywidgets as W
import matplotlib.pyplot as plt

from gpt2lab.explain.palette import FAIL_COLOR

# A figure inch is CSS_DPI CSS pixels, as the browser sizes its own text: 9 pt text in a figure is as large
# as 9 pt text in the page. PNGs are drawn PIXEL_RATIO times denser (sharp on a hi-dpi screen, downsampled
# 2:1 on a plain one) and shown at exactly their CSS size, never stretched to the output's width.
CSS_DPI = 96
PIXEL_RATIO = 2
MAX_HEIGHT_PX = 800   # CSS px: fits a 1400x900 screen with the controls above it


def note(text: str, colour: str = "#555") -> str:
    """A one-line message as escaped HTML ("" for no message): how widgets report bad input."""
    return f'<div style="color:{colour}">{html.escape(text, quote=False)}</div>' if text else ""


def error_note(e: Exception, doing: str = "") -> str:
    """How a widget reports an exception, in red: a ValueError is bad input the learner can fix, so its own
    message; anything else also names its type (and what the widget was `doing`)."""
    if isinstance(e, ValueError):
        return note(str(e), FAIL_COLOR)
    return note(f"{doing + ': ' if doing else ''}{type(e).__name__}: {e}", FAIL_COLOR)


def figure_png(fig, tight: bool = False, ratio: float = PIXEL_RATIO) -> bytes:
    """A matplotlib figure as PNG bytes, CSS_DPI * ratio pixels per inch. A pyplot figure is closed: the widget
    shows the PNG, and a live figure would also be drawn a second time below the cell. A bare `Figure` (made
    without pyplot, e.g. in a training thread) is drawn through its own Agg canvas."""
    from matplotlib.backend_bases import FigureCanvasBase
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    if type(fig.canvas) is FigureCanvasBase:
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CSS_DPI * ratio, bbox_inches="tight" if tight else None)
    if getattr(fig.canvas, "manager", None) is not None:
        plt.close(fig)
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels of PNG bytes, read from the IHDR header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("png_size: not PNG bytes")
    return struct.unpack(">II", png[16:24])


def show_figure(image: W.Image, fig, tight: bool = False) -> None:
    """Draw `fig` into the Image widget at the size it is shown: the PNG is PIXEL_RATIO x denser than the CSS
    width the widget is given (max-width 100%: a narrow output shrinks it; nothing stretches it)."""
    png = figure_png(fig, tight)
    width, _ = png_size(png)
    image.layout.width = f"{round(width / PIXEL_RATIO)}px"
    image.layout.max_width = "100%"
    image.layout.height = "auto"
    image.value = png


def player(description: str, last: int, value: int = 0, interval: int = 700):
    """An IntSlider over 0..last and a Play button that steps it (linked in the browser, so playing needs no
    round trip to the kernel). Returns (slider, play, the two side by side)."""
    slider = W.IntSlider(value=value, min=0, max=last, description=description)
    play = W.Play(value=value, min=0, max=last, interval=interval)
    W.jslink((play, "value"), (slider, "value"))
    return slider, play, W.HBox([play, slider])
