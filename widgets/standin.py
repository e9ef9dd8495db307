"""A widget's stand-in for pages without a kernel: its pictures over the values of its first control.

A handout exported to HTML has no Python behind it, so a widget cannot redraw. `control_animation(widget)` moves
the widget's first slider-like control (IntSlider, Dropdown, ToggleButtons, SelectionSlider) through its values,
here in the kernel, collects the widget's images and captions at each value, puts the control back, and returns
one self-contained HTML player (a range input that swaps frames; no script or file from the network).
`tools/handouts.py` calls `show_control_animation(model_id)` after each cell that displays a widget.
"""
from __future__ import annotations

import base64
import html
import uuid

import ipywidgets as W

CONTROLS = (W.IntSlider, W.SelectionSlider, W.Dropdown, W.ToggleButtons)


def walk(widget):
    """The widget and everything inside it, depth first, in display order."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def first_control(widget):
    """The first control in the widget whose values can be stepped through, or None."""
    return next((w for w in walk(widget) if isinstance(w, CONTROLS) and not w.disabled), None)


def control_values(control, max_frames: int) -> list:
    """Up to max_frames values of the control, evenly spaced, first and last included."""
    if isinstance(control, W.IntSlider):
        values = list(range(control.min, control.max + 1, control.step or 1))
    else:
        values = [value for _, value in control._options_full] if hasattr(control, "_options_full") else \
            list(control.options)
    if len(values) <= max_frames:
        return values
    picks = sorted({round(k * (len(values) - 1) / (max_frames - 1)) for k in range(max_frames)})
    return [values[k] for k in picks]


def _label(control, value) -> str:
    if hasattr(control, "_options_full"):
        return next((str(lab) for lab, v in control._options_full if v == value), str(value))
    return str(value)


def snapshot(widget) -> str:
    """The widget's images and HTML captions as they are now, in display order, as HTML."""
    parts = []
    for w in walk(widget):
        if isinstance(w, W.Image) and w.value:
            width = f' style="width:{html.escape(w.layout.width)}"' if w.layout.width else ""
            parts.append(f'<img src="data:image/{w.format};base64,{base64.b64encode(w.value).decode()}"{width} '
                         'alt="widget picture">')
        elif isinstance(w, W.HTML) and w.value.strip():
            parts.append(f"<div>{w.value}</div>")
    return "".join(parts)


def player_html(name: str, frames: list[tuple[str, str]], start: int = 0) -> str:
    """A range input over `frames` [(label, html)], showing one at a time; inline script only."""
    uid = "standin" + uuid.uuid4().hex[:8]
    divs = "".join(f'<div class="{uid}" data-label="{html.escape(label)}" '
                   f'style="display:{"block" if k == start else "none"}">{body}</div>'
                   for k, (label, body) in enumerate(frames))
    show = (f"var d=document.getElementsByClassName('{uid}');for(var i=0;i<d.length;i++)"
            f"d[i].style.display=(i==this.value?'block':'none');"
            f"document.getElementById('{uid}-label').textContent=d[this.value].dataset.label;")
    return (f'<div class="gpt2lab-standin-player"><label>{html.escape(name)} '
            f'<input type="range" min="0" max="{len(frames) - 1}" value="{start}" oninput="{html.escape(show)}">'
            f' <b id="{uid}-label">{html.escape(frames[start][0])}</b></label>{divs}</div>')


def control_animation(widget, max_frames: int = 12) -> str | None:
    """HTML that steps through the widget's pictures over its first control's values; None without a control.
    The control is put back to its value afterwards."""
    control = first_control(widget)
    if control is None:
        return None
    old = control.value
    values = control_values(control, max_frames)
    frames = []
    try:
        for value in values:
            control.value = value
            frames.append((_label(control, value), snapshot(widget)))
    finally:
        control.value = old
    start = values.index(old) if old in values else 0
    return player_html(control.description or "value", frames, start)


def show_control_animation(model_id: str, max_frames: int = 12) -> None:
    """Display control_animation of the live widget with this model id (nothing when it has no control)."""
    from IPython.display import HTML, display
    from ipywidgets.widgets.widget import _instances
    widget = _instances.get(model_id)
    page = control_animation(widget, max_frames) if widget is not None else None
    if page:
        display(HTML(page))


__all__ = ["CONTROLS", "first_control", "control_values", "snapshot", "player_html", "control_animation",
           "show_control_animation"]
