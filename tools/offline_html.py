"""An executed notebook as one HTML page that works from file:// with no network.

nbconvert's "lab" page loads require.js, MathJax, the widget manager and mermaid from CDNs, and matplotlib's
animations draw their buttons with a web icon font. Offline that means raw LaTeX, blank widgets and blank buttons.
Here instead:
- the page template drops those scripts (nothing in our lessons needs require.js or mermaid);
- math in markdown cells is turned into MathML (latex2mathml) that the browser draws itself;
- every widget is replaced by a stand-in: its pictures over the values of its first control, when the execution
  recorded them (handouts.execute, gpt2lab.widgets.standin), else a static picture of itself drawn from the saved
  widget state: its images, captions and HTML, and its controls as plain labels with their values;
- animation buttons become text characters (gpt2lab.explain.jshtml).
`remote_refs(page)` lists whatever would still be fetched from the network: the tests require it to be empty.
"""
from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

import jinja2

from gpt2lab.explain.jshtml import offline_jshtml

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
STANDIN = "gpt2lab/standin"   # output metadata: HTML frames of the widget over its control's values

TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


# ---------------------------------------------------------------------------------------------------------
# math: LaTeX in markdown -> MathML
# ---------------------------------------------------------------------------------------------------------

_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?!\$)([^$\n]+?)(?<!\\)\$")


def _mathml(latex: str, display: str) -> str:
    from latex2mathml.converter import convert
    try:
        return convert(" ".join(latex.split()), display=display)
    except Exception:  # noqa: BLE001 - a formula latex2mathml can't parse stays readable as its source
        return f"<code>{html.escape(latex)}</code>"


def math_to_mathml(markdown: str) -> str:
    """Markdown with every $...$ and $$...$$ outside code replaced by MathML."""
    parts = _CODE.split(markdown)
    for k in range(0, len(parts), 2):              # even parts are outside code
        text = _DISPLAY.sub(lambda m: _mathml(m.group(1), "block"), parts[k])
        parts[k] = _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), text)
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------
# widgets: a static picture from the saved widget state
# ---------------------------------------------------------------------------------------------------------

class StaticWidgets:
    """Renders widget models from a notebook's saved widget state as plain HTML."""

    def __init__(self, state: dict):
        self.models = state.get("state", {})

    def model(self, ref: str) -> dict:
        return self.models.get(ref.removeprefix("IPY_MODEL_"), {})

    def render(self, model_id: str) -> str:
        m = self.model(model_id)
        name, s = m.get("model_name", "?"), m.get("state", {})
        buffers = {tuple(b["path"]): b["data"] for b in m.get("buffers", [])}
        if name in ("VBoxModel", "BoxModel", "GridBoxModel", "HBoxModel", "AccordionModel", "TabModel"):
            direction = "row" if name == "HBoxModel" else "column"
            inner = "".join(self.render(c) for c in s.get("children", []))
            return (f'<div style="display:flex;flex-direction:{direction};align-items:flex-start;gap:4px;'
                    f'flex-wrap:wrap">{inner}</div>')
        if name == "ImageModel":
            data = buffers.get(("value",)) or s.get("value") or ""
            if isinstance(data, bytes):
                data = base64.b64encode(data).decode()
            width = s.get("width") or self.model(s.get("layout", "")).get("state", {}).get("width") or ""
            size = f' style="width:{html.escape(width)}"' if width else ""
            return f'<img src="data:image/{s.get("format", "png")};base64,{data}"{size} alt="widget image">'
        if name in ("HTMLModel", "HTMLMathModel"):
            return self._described(s, s.get("value", ""))
        if name == "LabelModel":
            return self._described(s, html.escape(str(s.get("value", ""))))
        if name == "OutputModel":
            return "".join(self._output(o) for o in s.get("outputs", []))
        if name == "ButtonModel":
            return f'<button disabled>{html.escape(s.get("description", ""))}</button>'
        if name == "PlayModel":
            return ""                                   # its slider says the value
        if "_options_labels" in s:                       # Dropdown, ToggleButtons, SelectionSlider, ...
            labels, index = s["_options_labels"], s.get("index")
            value = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
            return self._control(s, value, f"of {len(labels)}")
        if "value" in s:                                 # sliders, text boxes, checkboxes
            span = f"{s['min']}..{s['max']}" if "min" in s and "max" in s else ""
            return self._control(s, s["value"], span)
        return ""

    def _described(self, s: dict, body: str) -> str:
        label = s.get("description", "")
        return f"<div>{html.escape(label) + ' ' if label else ''}{body}</div>"

    def _control(self, s: dict, value, span: str) -> str:
        label = html.escape(str(s.get("description", "")))
        extra = f' <span style="color:#777">({html.escape(span)})</span>' if span else ""
        return (f'<span style="border:1px solid #bbb;border-radius:3px;padding:1px 6px;margin-right:6px;'
                f'font-size:13px">{label} <b>{html.escape(str(value))}</b>{extra}</span>')

    def _output(self, out: dict) -> str:
        data = out.get("data", {})
        if out.get("output_type") == "stream":
            return f"<pre>{html.escape(''.join(out.get('text', '')))}</pre>"
        if "image/png" in data:
            return f'<img src="data:image/png;base64,{"".join(data["image/png"]).strip()}" alt="output">'
        if "text/html" in data:
            return "".join(data["text/html"])
        if "text/plain" in data:
            return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
        return ""


STANDIN_NOTE = ('<div style="color:#666;font-size:12px;margin-top:2px">A stand-in for an interactive widget '
                '(no Python behind this page): run the notebook to use all its controls.</div>')


def widget_standins(nb) -> int:
    """Replace every widget output by its stand-in (in place): the recorded frames over its control's values,
    else a static picture. Drops the saved widget state, which needs the widget manager from the web.
    Returns how many widgets were replaced."""
    render = StaticWidgets(nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}))
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            picture = out.get("metadata", {}).pop(STANDIN, None) or render.render(view["model_id"]) or \
                "<pre>(an interactive widget)</pre>"
            out["data"] = {"text/html": f'<div class="gpt2lab-standin">{picture}{STANDIN_NOTE}</div>'}
            n += 1
    nb.metadata.pop("widgets", None)
    return n


# ---------------------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------------------

def offline_notebook(nb) -> dict:
    """Make an executed notebook's content offline-ready, in place. Returns counts {"widgets", "math cells"}."""
    math_cells = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "$" in cell.source:
            new = math_to_mathml(cell.source)
            math_cells += new != cell.source
            cell.source = new
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                data["text/html"] = offline_jshtml("".join(data["text/html"]))
    return {"widgets": widget_standins(nb), "math cells": math_cells}


def export_html(nb) -> str:
    """The notebook (already offline-ready) as one self-contained HTML page."""
    from nbconvert import HTMLExporter
    exporter = HTMLExporter(template_name="lab", extra_loaders=[jinja2.DictLoader({"offline.html.j2": TEMPLATE})],
                            template_file="offline.html.j2")
    page, _ = exporter.from_notebook_node(nb)
    return page


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            remote = value and re.match(r"\s*(https?:)?//", value)
            if remote and (key == "src" or (key == "href" and tag == "link") or (key == "data" and tag == "object")):
                self.refs.append(f"<{tag} {key}={value}>")


def remote_refs(page: str) -> list[str]:
    """Everything the page would fetch from the network: script/img/iframe src, stylesheet and font links,
    CSS url(...) and @import, and require.js / MathJax loaders. Links a reader clicks (<a href>) don't count."""
    parser = _Refs()
    parser.feed(page)
    css = re.findall(r"""(?:url\(\s*['"]?|@import\s+['"])((?:https?:)?//[^'")\s]+)""", page)
    loaders = [w for w in ("requirejs.config", "MathJax.Hub", "embed-amd.js") if w in page]
    return parser.refs + [f"css {u}" for u in css] + loaders


__all__ = ["STANDIN", "TEMPLATE", "math_to_mathml", "StaticWidgets", "widget_standins", "offline_notebook", "export_html",
           "remote_refs"]
