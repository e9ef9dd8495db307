"""One visual language for every lesson (shared/guide/COURSE.md).

A token keeps its colour everywhere (hash of its id into a fixed qualitative palette), heads keep theirs,
forward is drawn in blues, backward (gradients) in oranges, "OK vs PyTorch" green and mismatch red.
"""
from __future__ import annotations

# The running example every lesson follows through the model.
RUNNING_EXAMPLE = "To be, or not to be: that is the question."

# 20 distinguishable colours, each dark enough to read as text or a thin line on white: WCAG contrast
# ratio >= 3:1 against #ffffff (tests/test_palette.py computes it). Boxes behind black text use the same hue
# as a light tint (`token_tint`), so a token is one colour everywhere: text, ticks, bars, boxes.
TOKEN_PALETTE = (
    "#1f77b4", "#c85a00", "#2b8a2b", "#d62728", "#8a5cc0", "#8c564b", "#c2389c", "#6b6b6b", "#7f7f00",
    "#00829a", "#3b5bd6", "#a8641c", "#4f7d1e", "#b22d5c", "#6a3d9a", "#e0301e", "#9c27b0", "#2f6f8f",
    "#7a6a1e", "#00897b",
)
# How much of the token colour a box's fill keeps (the rest is white): light enough for black text on it.
TINT = 0.35
# Heads: tableau-like hues, darkened where needed to the same 3:1 contrast on white (head titles are text).
HEAD_PALETTE = ("#4e79a7", "#c0661a", "#c8383a", "#3d8a85", "#3f7f37", "#8d7200", "#8f5683", "#c4475a",
                "#7c5a45", "#6f6661", "#137a5c", "#b35000")
# Sizes (COURSE.md: readable at 100% zoom on a 1400-px-wide screen). A figure is at most this wide, so the
# notebook's output area (about 1000 CSS px beside JupyterLab's file browser) shows it without shrinking it;
# at 96-100 px per inch, text of MIN_FONT_PT is then at least 12 CSS px, the size of 9 pt text in the page.
FIGURE_MAX_WIDTH_IN = 9.6
MIN_FONT_PT = 9

FORWARD_CMAP = "Blues"      # activations
BACKWARD_CMAP = "Oranges"   # gradients
DIVERGING_CMAP = "RdBu_r"   # signed values (weights, embeddings)
OK_COLOR = "#2ca02c"
FAIL_COLOR = "#d62728"


def token_color(token_id: int) -> str:
    """Colour of a token id, the same in every lesson. Knuth's multiplicative hash spreads nearby ids."""
    return TOKEN_PALETTE[((int(token_id) * 2654435761) & 0xFFFFFFFF) % len(TOKEN_PALETTE)]


def token_tint(token_id: int) -> str:
    """The fill of a token's box (an opaque hex): its colour mixed with white, so black text on it reads."""
    rgb = [int(token_color(token_id)[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - TINT * (255 - c)):02x}" for c in rgb)


def relative_luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a '#rrggbb' colour: 0 (black) .. 1 (white)."""
    if not (isinstance(colour, str) and len(colour) == 7 and colour[0] == "#"):
        raise ValueError(f"relative_luminance: expected '#rrggbb', got {colour!r}")
    def linear(c):   # undo the sRGB gamma
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(int(colour[i:i + 2], 16)) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(fg: str, bg: str = "#ffffff") -> float:
    """WCAG 2 contrast ratio of two '#rrggbb' colours, 1 (none) .. 21 (black on white)."""
    hi, lo = sorted((relative_luminance(fg), relative_luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def head_color(head: int) -> str:
    """Colour of attention head `head`."""
    return HEAD_PALETTE[int(head) % len(HEAD_PALETTE)]


def shape_title(name: str, shape, **where) -> str:
    """Figure title naming what is shown and its shape: `att[layer=2, head=5]  (T=11, T=11)`."""
    idx = ", ".join(f"{k}={v}" for k, v in where.items())
    dims = ", ".join(str(s) for s in shape)
    return f"{name}[{idx}]  ({dims})" if idx else f"{name}  ({dims})"
