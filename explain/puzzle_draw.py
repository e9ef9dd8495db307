"""Pictures of a learner's own kernel, from its traced launch in the simulator (explain/cudatrace.py).

    draw(puzzle, trace)    # the picture the puzzle asks for (Puzzle.draw):
      "access"   which thread read which element of a flat array, and the idle threads past its end
      "shared"   the shared array of block 0, phase by phase: who wrote (dark) and read (light) each element
      "tiles"    the matmul tiles one block loads from inp and weight, coloured by the k-step that loads them
      "atomics"  how many threads added into each element of the scatter-add's output
A race (cudatrace.hazards) is named in the title in red.
"""
from __future__ import annotations

import numpy as np

from . import cudatrace as CT
from .palette import FAIL_COLOR

MAX_HEIGHT_IN = 7.5     # inches at 100 dpi: no figure taller than 800 px


def _race_note(fig, trace) -> None:
    found = CT.hazards(trace, limit=1)
    if found:
        fig.text(0.01, 0.005, "race: " + found[0].describe(trace.shapes.get(found[0].array)), color=FAIL_COLOR,
                 fontsize=9, va="bottom")


def shared_phases(trace, array: str, block: int = 0) -> np.ndarray:
    """(phases, elements) int: 0 untouched, 1 read, 2 written, 3 read and written, by block `block`'s threads
    between two barriers (phase p: after p syncthreads)."""
    events = [e for e in trace.events if e.array == array and e.block == block]
    size = int(np.prod(trace.shapes.get(array, (max((e.index for e in events), default=0) + 1,))))
    phases = max((e.phase for e in events), default=0) + 1
    grid = np.zeros((phases, size), dtype=int)
    for e in events:
        grid[e.phase, e.index] |= 2 if e.op == "write" else 1
    return grid


def shared_diagram(trace, array: str | None = None, block: int = 0):
    """Block `block`'s shared array, one row per phase (barriers apart): the tree reduction's halving shows."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    array = array or trace.shared[0]
    grid = shared_phases(trace, array, block)
    used = np.flatnonzero(grid.any(axis=0))
    grid = grid[:, : used.max() + 1] if used.size else grid
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * grid.shape[1] + 1.8), min(MAX_HEIGHT_IN, 0.32 * len(grid) + 1.5)))
    ax.imshow(grid, cmap=ListedColormap([CT.IDLE_COLOR, CT.READ_COLOR, CT.WRITE_COLOR, "#3182bd"]), vmin=0,
              vmax=3, aspect="auto")
    ax.set_xlabel(f"{array}[i]  (block {block})")
    ax.set_ylabel("phase (syncthreads passed)")
    ax.set_yticks(range(len(grid)))
    ax.set_title(f"{trace.title()}\n{array}: light = read, dark = written, between two barriers", fontsize=9)
    _race_note(fig, trace)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def tile_loads(trace, array: str, block: int) -> np.ndarray:
    """(elements,) int: the k-step at which block `block` read each element of `array` (-1: never). A k-step
    is two phases: load the tiles, barrier, multiply, barrier."""
    size = int(np.prod(trace.shapes[array]))
    step = -np.ones(size, dtype=int)
    for e in trace.events:
        if e.array == array and e.block == block and e.op == "read" and step[e.index] < 0:
            step[e.index] = e.phase // 2
    return step.reshape(trace.shapes[array])


def tiles_diagram(trace, block: int = 0):
    """Which elements of inp and weight block `block` loads into its tiles, coloured by k-step."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, array in zip(axes, ("inp", "weight")):
        steps = tile_loads(trace, array, block)
        shown = np.ma.masked_less(steps, 0)
        ax.imshow(np.full(steps.shape, 0.0), cmap="Greys", vmin=0, vmax=1, aspect="equal")
        ax.imshow(shown, cmap="viridis", vmin=0, vmax=max(steps.max(), 1), aspect="equal")
        for (r, c), v in np.ndenumerate(steps):
            if v >= 0:
                ax.text(c, r, str(v), ha="center", va="center", fontsize=9,
                        color="black" if v > 0.6 * max(steps.max(), 1) else "white")
        ax.set_title(f"{array} {steps.shape}: k-step of each load", fontsize=9)
        ax.set_xlabel("c (the summed axis)")
        ax.set_ylabel("n (row)" if array == "inp" else "o (output column)")
    fig.suptitle(f"{trace.title()}\nblock {block} loads these tiles (number: which k-step)", fontsize=9)
    _race_note(fig, trace)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def elementwise_diagram(trace, array: str = "inp"):
    """One cell per element of a flat array: which block (colour) and thread (number) read it; the threads of
    the last block that lie past the end are drawn after it, hatched: the reason for the `if i < n` guard."""
    import matplotlib.pyplot as plt
    n = int(np.prod(trace.shapes[array]))
    total = trace.grid * trace.block
    owner = -np.ones(total, dtype=int)
    for e in trace.events:
        if e.array == array and e.op == "read":
            owner[e.index] = e.block * trace.block + e.thread
    per_row = 16
    rows = (total + per_row - 1) // per_row
    fig, ax = plt.subplots(figsize=(0.55 * per_row + 1.5, min(MAX_HEIGHT_IN, 0.5 * rows + 1.6)))
    colours = plt.get_cmap("tab10")
    for g in range(total):
        r, c = divmod(g, per_row)
        inside = g < n
        colour = colours((g // trace.block) % 10) if inside and owner[g] >= 0 else "white"
        ax.add_patch(plt.Rectangle((c, r), 0.95, 0.9, facecolor=colour, alpha=0.75 if inside else 1,
                                   hatch=None if inside else "///", edgecolor="#888"))
        label = f"{g}" if inside else f"t{g % trace.block}"     # an idle thread: its threadIdx in the last block
        ax.text(c + 0.47, r + 0.45, label, ha="center", va="center", fontsize=9)
    ax.set_xlim(0, per_row)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    ax.set_title(f"{trace.title()}\n{array}[i] read by thread i (colour: its block); hatched: threads past the "
                 f"end (n = {n}), which must do nothing", fontsize=9)
    _race_note(fig, trace)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def atomics_diagram(trace, array: str = "dwte", row_ids=None):
    """(rows, channels) of the scatter-add's output: how many threads added into each element ("plain" marks
    non-atomic writes). row_ids: the GPT-2 token id of each row, to label the rows with the token's text in
    its colour."""
    import matplotlib.pyplot as plt
    shape = trace.shapes[array]
    counts = np.zeros(int(np.prod(shape)), dtype=int)
    plain = np.zeros_like(counts)
    for e in trace.events:
        if e.array == array:
            if e.op == "atomic":
                counts[e.index] += 1
            elif e.op == "write":
                plain[e.index] += 1
    counts, plain = counts.reshape(shape), plain.reshape(shape)
    adds = counts + plain
    fig, ax = plt.subplots(figsize=(7.5, min(MAX_HEIGHT_IN, 0.34 * shape[0] + 1.8)))
    ax.imshow(adds, cmap="Oranges", vmin=0, vmax=max(adds.max(), 2) * 1.3, aspect="auto")
    for (r, c), v in np.ndenumerate(adds):
        ax.text(c, r, f"{v}" + (" plain" if plain[r, c] else ""), ha="center", va="center", fontsize=9,
                color=FAIL_COLOR if plain[r, c] > 1 else ("white" if v > 1 else "black"))
    ax.set_xlabel("channel c")
    ax.set_xticks(range(shape[1]))
    ax.set_yticks(range(shape[0]))
    if row_ids is not None:
        from gpt2lab.datasets import gpt2_encoding

        from .palette import token_color
        enc = gpt2_encoding()
        ax.set_yticklabels([repr(enc.decode([int(t)])) for t in row_ids], fontsize=10)
        for label, t in zip(ax.get_yticklabels(), row_ids):
            label.set_color(token_color(int(t)))
    ax.set_ylabel(f"{array} row (token)")
    ax.set_title(f"{trace.title()}\nadds into each {array} element: 2 = a token that occurs twice", fontsize=9)
    _race_note(fig, trace)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def draw(puzzle, trace):
    """The puzzle's picture of the learner's traced launch (see the module docstring)."""
    if puzzle.draw == "shared":
        return shared_diagram(trace)
    if puzzle.draw == "tiles":
        return tiles_diagram(trace, block=trace.grid - 1)   # the last block: the one at the edges
    if puzzle.draw == "atomics":     # the encoder puzzle's first case: the sentence's tokens, renumbered
        from .puzzles import sentence_ids
        return atomics_diagram(trace, row_ids=np.unique(sentence_ids()))
    return elementwise_diagram(trace)


__all__ = ["draw", "elementwise_diagram", "atomics_diagram", "shared_phases", "shared_diagram", "tile_loads",
           "tiles_diagram"]
