"""Draw a scalar expression graph (explain.autograd.Value) with matplotlib: forward left to right, grads back.

Every value is a box `label | data | grad`; every op is a small circle between its inputs and its output.
Forward edges are drawn in the forward hue (blue), and each value's grad is written in the backward hue
(orange), with a thin orange arrow running right to left from output to input wherever a gradient has flowed.

`backward_steps(root)` replays backward one node at a time, so a widget or an animation can show the
gradient arriving at each node in turn.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyBboxPatch

from .autograd import Value, topological_order
from .palette import BACKWARD_CMAP, FIGURE_MAX_WIDTH_IN, FORWARD_CMAP

FORWARD_COLOR = plt.get_cmap(FORWARD_CMAP)(0.75)
BACKWARD_COLOR = plt.get_cmap(BACKWARD_CMAP)(0.7)
COL = 3.0  # distance between value columns; the op circle sits halfway


def _bend(inputs: tuple, k: int) -> float:
    """Curvature of the edge from inputs[k]: 0 for an input used once; +-0.35 for one used twice (a*a)."""
    uses = [i for i, p in enumerate(inputs) if p is inputs[k]]
    return 0.0 if len(uses) == 1 else 0.35 * (1 if uses.index(k) % 2 == 0 else -1)


def layout(root: Value) -> dict[int, tuple[float, float]]:
    """(x, y) of every value node, by id(): x = depth (longest path from a leaf), y spread within a column.

    Op circles sit half a column to the left of their output (COL / 2).
    """
    order = topological_order(root)
    depth = {}
    for v in order:  # inputs come first, so their depth is known
        depth[id(v)] = 1 + max((depth[id(p)] for p in v._prev), default=-1)
    columns: dict[int, list[Value]] = {}
    for v in order:
        columns.setdefault(depth[id(v)], []).append(v)
    pos = {}
    for d, vs in columns.items():
        for i, v in enumerate(vs):
            pos[id(v)] = (COL * d, (len(vs) - 1) / 2.0 - i)
    return pos


def backward_steps(root: Value) -> list[dict[int, float]]:
    """Grads after each step of backward: [{id(node): grad}] holding only the nodes a gradient has reached.

    Step 0 is {root: 1}. Runs backward on `root` (its grads are left filled in); grads are zeroed first.
    """
    order = topological_order(root)
    for v in order:
        v.grad = 0.0
    root.grad = 1.0
    reached = {id(root)}
    snaps = [{id(root): 1.0}]
    for node in reversed(order):
        if node._prev:  # leaves have nothing to pass on: not a step worth showing
            node._backward()
            reached.update(id(p) for p in node._prev)
            snaps.append({id(v): v.grad for v in order if id(v) in reached})
    return snaps


def _box_text(v: Value, grad: float | None) -> tuple[str, str]:
    head = f"{v.label + ' | ' if v.label else ''}data {v.data:.4f}"
    return head, ("grad  ·" if grad is None else f"grad {grad:.4f}")


def draw_graph(root: Value, grads: dict[int, float] | None = None, ax=None, highlight: Value | None = None,
               title: str | None = None):
    """Draw root's graph on `ax` (new figure if None); grads: {id(node): grad} to show, default each node's .grad.

    A node missing from `grads` is drawn with a dot: no gradient has reached it yet.
    `highlight` outlines one node (the one whose local backward just ran). Returns the figure.
    """
    order = topological_order(root)
    pos = layout(root)
    if grads is None:
        grads = {id(v): v.grad for v in order}
    n_cols = max(x for x, _ in pos.values()) + 1
    n_rows = max(sum(1 for p in pos.values() if p[0] == x) for x in {p[0] for p in pos.values()})
    if ax is None:
        # an inch per column, less for wide graphs so the figure fits the page (COL data units a column)
        inch = min(1.0, (FIGURE_MAX_WIDTH_IN - 1.5) / n_cols)
        _, ax = plt.subplots(figsize=(inch * n_cols + 1.5, inch * n_rows + 1.2))
    ax.clear()
    w, h = 1.8, 0.6
    for v in order:
        x, y = pos[id(v)]
        if v._op:  # the op circle, then an edge from each input into it and one out of it
            ox, oy = x - COL / 2, y
            ax.add_patch(Circle((ox, oy), 0.2, color=FORWARD_COLOR, alpha=0.25, zorder=2))
            ax.text(ox, oy, v._op, ha="center", va="center", fontsize=9, zorder=3)
            ax.annotate("", (x - w / 2, y), (ox + 0.2, oy), zorder=1,
                        arrowprops=dict(arrowstyle="->", color=FORWARD_COLOR))
            for k, p in enumerate(v._prev):
                px, py = pos[id(p)]
                # a*a uses a twice: one edge per use, bent apart, so both gradients that come back are seen
                bend = _bend(v._prev, k)
                ax.annotate("", (ox - 0.2, oy), (px + w / 2, py), zorder=1,
                            arrowprops=dict(arrowstyle="->", color=FORWARD_COLOR, alpha=0.8,
                                            connectionstyle=f"arc3,rad={bend}"))
                if id(p) in grads:  # a gradient has flowed back along this edge
                    ax.annotate("", (px + w / 2, py - 0.18), (ox - 0.2, oy - 0.18), zorder=1,
                                arrowprops=dict(arrowstyle="->", color=BACKWARD_COLOR, lw=1.2, ls="--",
                                                connectionstyle=f"arc3,rad={bend}"))
        head, tail = _box_text(v, grads.get(id(v)))
        edge = "black" if v is highlight else FORWARD_COLOR
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                    fc="white", ec=edge, lw=2.5 if v is highlight else 1.0, zorder=2))
        ax.text(x, y + 0.1, head, ha="center", va="center", fontsize=9, color="black", zorder=3)
        ax.text(x, y - 0.13, tail, ha="center", va="center", fontsize=9, color=BACKWARD_COLOR,
                fontweight="bold", zorder=3)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.0, max(xs) + 1.0)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"expression graph  ({len(order)} values)  forward → blue, gradients ← orange",
                 fontsize=9)
    return ax.figure


def backward_animation(root: Value, interval: int = 900):
    """FuncAnimation of backward: one frame per node whose local backward runs. Show with .to_jshtml()."""
    from matplotlib.animation import FuncAnimation

    snaps = backward_steps(root)
    order = [v for v in reversed(topological_order(root)) if v._prev]
    fig = draw_graph(root, snaps[0])
    ax = fig.axes[0]

    def frame(i):
        node = order[i - 1] if i > 0 else None
        draw_graph(root, snaps[i], ax=ax, highlight=node,
                   title=f"backward step {i}/{len(snaps) - 1}" + (f": local backward of '{node._op}'" if node else
                                                                   ": d out / d out = 1"))
        return []

    anim = FuncAnimation(fig, frame, frames=len(snaps), interval=interval, blit=False)
    plt.close(fig)
    return anim
