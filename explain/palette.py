"""One visual language for every lesson (shared/guide/COURSE.md).

A token keeps its colour everywhere (hash of its id into a fixed qualitative palette), heads keep theirs,
forward is drawn in blues, backward (gradients) in oranges, "OK vs PyTorch" green and mismatch red.
"""
from __future__ import annotations

# The running example every lesson follows through the model.
RUNNING_EXAMPLE = "To be, or not to be: that is the question."

# 20 distinguishable colours (matplotlib's tab20, reordered so neighbours differ strongly).
TOKEN_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)
HEAD_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                "#9c755f", "#bab0ac", "#1b9e77", "#d95f02")
FORWARD_CMAP = "Blues"      # activations
BACKWARD_CMAP = "Oranges"   # gradients
DIVERGING_CMAP = "RdBu_r"   # signed values (weights, embeddings)
OK_COLOR = "#2ca02c"
FAIL_COLOR = "#d62728"


def token_color(token_id: int) -> str:
    """Colour of a token id, the same in every lesson. Knuth's multiplicative hash spreads nearby ids."""
    return TOKEN_PALETTE[((int(token_id) * 2654435761) & 0xFFFFFFFF) % len(TOKEN_PALETTE)]


def head_color(head: int) -> str:
    """Colour of attention head `head`."""
    return HEAD_PALETTE[int(head) % len(HEAD_PALETTE)]


def shape_title(name: str, shape, **where) -> str:
    """Figure title naming what is shown and its shape: `att[layer=2, head=5]  (T=11, T=11)`."""
    idx = ", ".join(f"{k}={v}" for k, v in where.items())
    dims = ", ".join(str(s) for s in shape)
    return f"{name}[{idx}]  ({dims})" if idx else f"{name}  ({dims})"
