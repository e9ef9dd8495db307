"""Where a training step's memory goes: KernelGPT2's buffers, counted, beside PyTorch's measured peak.

Every byte here is counted from the shapes gpt2/buffers.py allocates (act_shapes, grad_act_shapes, step_bytes),
never from a formula of its own, for three ways of running the step:

    as live parity keeps it   lean=False: every block keeps its own activation gradients
    lean (the default)        the blocks share one block's activation gradients (llm.c's CUDA trainer does too)
    lean, fused, on a GPU     fused=True, fused_head=True: flash attention keeps a log-sum-exp per row in place
                              of the T x T matrix, and the fused classifier keeps no probs

Each way's bytes come in GROUPS that add up exactly to sum(step_bytes(...).values()):

    parameters, gradients, AdamW m and v    a copy of the parameters each (m and v: two)
    attention matrix att                    L x B x NH x T x T floats; 0 on the fused path (its lse, L x B x NH x T,
                                            is counted with the other activations)
    logits and probs                        B x T x V floats each (V = 50257): the fused path keeps no probs
    other activations                       everything else the backward reads
    activation gradients                    dlogits (B x T x V) and the stream's and the blocks' gradients

Kernel scratch is not counted: a measured peak of our step would be a little higher. PyTorch's peak is
*measured* (a GPU record's step row, gpu_recorded.py), ours *counted*: the figure and the table say which is
which. `python -m gpt2lab.explain.step_memory` prints the table of docs/figures.md.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from gpt2lab.gpt2.buffers import act_shapes, grad_act_shapes, keeps_probs, nbytes, param_shapes, step_bytes
from gpt2lab.gpt2.config import GPTConfig

from .gpu_speed import MEMORY_GOAL
from .palette import FIGURE_MAX_WIDTH_IN

GiB = 2 ** 30

# (label, the table's column, KernelGPT2's switches): the ways of running a step, most memory first.
WAYS = (("as live parity keeps it", "parity", dict(fused=False, lean=False, fused_head=False)),
        ("lean (the default)", "lean", dict(fused=False, lean=True, fused_head=False)),
        ("lean, fused, on a GPU", "lean+fused GPU", dict(fused=True, lean=True, fused_head=True)))

GROUPS = ("parameters", "gradients", "AdamW m and v", "attention matrix att", "logits and probs",
          "other activations", "activation gradients")

# The activations that get a group of their own; every other activation is in "other activations".
_ACT_GROUP = {"att": "attention matrix att", "logits": "logits and probs", "probs": "logits and probs"}

# Forward (activations) in blues, backward (gradients) in oranges (COURSE.md), the optimizer's state in greys.
GROUP_COLOURS = {"parameters": "#6f6661", "gradients": "#f0a35e", "AdamW m and v": "#b8b0aa",
                 "attention matrix att": "#08306b", "logits and probs": "#2f6fae", "other activations": "#9cc3e4",
                 "activation gradients": "#c0661a"}

# The configs and batches of docs/figures.md's table: the step rows of the H100 record of 2026-11-26.
DOC_CASES = (("tiny", 8, 64), ("small", 8, 256), ("gpt2", 4, 64), ("gpt2", 4, 1024))


def way_groups(config: GPTConfig, B: int, T: int, fused: bool = False, lean: bool = True,
               fused_head: bool = False) -> dict[str, int]:
    """GROUPS -> bytes of KernelGPT2's buffers for one step on (B, T) run with (fused, lean, fused_head).

    Adds up to sum(step_bytes(config, B, T, fused, lean, fused_head).values()); ValueError if it does not (the
    buffers changed under this grouping: a group would be left out or counted twice)."""
    counted = step_bytes(config, B, T, fused=fused, lean=lean, fused_head=fused_head)
    acts = act_shapes(config, B, T, fused, probs=keeps_probs(lean, fused_head))
    params = nbytes(param_shapes(config))
    groups = dict.fromkeys(GROUPS, 0)
    groups.update({"parameters": params, "gradients": params, "AdamW m and v": 2 * params,
                   "activation gradients": nbytes(grad_act_shapes(config, B, T, lean))})
    for name, shape in acts.items():
        groups[_ACT_GROUP.get(name, "other activations")] += nbytes({name: shape})
    if sum(groups.values()) != sum(counted.values()):
        raise ValueError(f"way_groups: the groups add up to {sum(groups.values())} bytes, step_bytes to "
                         f"{sum(counted.values())} ({config}, B={B}, T={T}, fused={fused}, lean={lean}, "
                         f"fused_head={fused_head}): the buffers changed, regroup them")
    return groups


def step_memory(config: GPTConfig, B: int, T: int) -> list[dict]:
    """One row per way of running the step (WAYS): {"way": label, "switches": KernelGPT2's fused, lean and
    fused_head, "groups": GROUPS -> bytes, "total": bytes}."""
    rows = []
    for label, _, switches in WAYS:
        groups = way_groups(config, B, T, **switches)
        rows.append({"way": label, "switches": switches, "groups": groups, "total": sum(groups.values())})
    return rows


def torch_peak_mib(record: dict | None, name: str, B: int, T: int) -> float | None:
    """PyTorch eager's measured peak (MiB) of the step of preset `name` at B, T in a GPU record (gpu_recorded's
    shape), or None when no step row of it has one. The matmul a row ran does not change torch's side."""
    rows = [s for s in (record or {}).get("steps") or []
            if (s["config"], s["B"], s["T"]) == (name, B, T) and s.get("torch_mib")]
    return rows[-1]["torch_mib"] if rows else None


def _label_segments(ax, y: int, groups: dict, xmax: float) -> None:
    """The GiB of each segment wide enough to hold it, white on the dark ones."""
    left = 0.0
    for g in GROUPS:
        width = groups[g] / GiB
        if width >= 0.05 * xmax:   # about 0.33 in: room for four digits at 9 pt
            dark = g in ("attention matrix att", "logits and probs", "activation gradients", "parameters")
            ax.text(left + width / 2, y, f"{width:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
        left += width


def _draw_torch_lines(ax, peak_gib: float, top: float) -> None:
    """A solid line at PyTorch's measured peak and a dashed one at MEMORY_GOAL x it, each named at the top of
    the axes (the peak's name to its left, the goal's to its right, so the two never overlap)."""
    goal = MEMORY_GOAL * peak_gib
    ax.axvline(peak_gib, color="black", lw=1.5, gid="torch_peak")
    ax.axvline(goal, color="black", lw=1.5, ls="--", gid="goal")
    ax.text(peak_gib, top, f"PyTorch's peak, measured: {peak_gib:.2f} GiB ", ha="right", va="center", fontsize=9)
    ax.text(goal, top, f" {MEMORY_GOAL}× it: the goal", ha="left", va="center", fontsize=9)


def memory_figure(name: str = "gpt2", B: int = 4, T: int = 1024, record: dict | None = None):
    """Horizontal stacked bars, one per way of running the step of preset `name` at (B, T), in GiB, each split
    into GROUPS, the total at its end. When `record` (a GPU record, e.g. speed_report().record) has torch's
    measured peak for the same name, B and T: a solid line at it and a dashed one at MEMORY_GOAL x it (issue
    14's goal), and the title names the record's device and date; otherwise no lines, and the title says so."""
    rows = step_memory(GPTConfig.preset(name), B, T)
    peak = torch_peak_mib(record, name, B, T)
    peak_gib = None if peak is None else peak / 1024
    # room right of the longest bar for its total, and right of the goal's line for its name
    xmax = max([1.13 * r["total"] / GiB for r in rows] + ([1.25 * MEMORY_GOAL * peak_gib] if peak_gib else []))
    fig, ax = plt.subplots(figsize=(FIGURE_MAX_WIDTH_IN * 0.85, 3.9), layout="constrained")
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for g in GROUPS:
        widths = np.array([r["groups"][g] / GiB for r in rows])
        ax.barh(y, widths, left=left, color=GROUP_COLOURS[g], edgecolor="white", linewidth=0.8, label=g)
        left += widths
    for yi, r in zip(y, rows):
        _label_segments(ax, yi, r["groups"], xmax)
        ax.text(r["total"] / GiB + 0.01 * xmax, yi, f"{r['total'] / GiB:.2f} GiB", va="center", fontsize=9,
                bbox=dict(facecolor="white", edgecolor="none", pad=1))   # readable over torch's line
    source = "ours: counted from the buffers (kernel scratch not counted)"
    if peak_gib:
        _draw_torch_lines(ax, peak_gib, top=y[0] + 0.65)
        source += f"\nPyTorch eager's peak: measured on {record['device']}, {record['date']}"
    else:
        source += "\nno PyTorch peak recorded at this config, B and T: no line to compare with"
    ax.set_yticks(y, [r["way"] for r in rows], fontsize=9)
    ax.set_xlim(0, xmax)
    ax.set_ylim(-0.6, y[0] + (1.0 if peak_gib else 0.6))
    ax.tick_params(labelsize=9)
    ax.set_xlabel("GiB of GPU memory a training step's buffers take", fontsize=9)
    ax.set_title(f"Where a training step's memory goes: {name}, B={B}, T={T}\n{source}", fontsize=10)
    fig.legend(fontsize=9, loc="outside lower center", ncols=4)
    return fig


def memory_table(cases=DOC_CASES, record: dict | None = None) -> str:
    """GiB per way of running the step for each (preset, B, T) in `cases`, counted from the buffers, and,
    where `record` has torch's measured peak at that size, the peak and each way's total over it."""
    head = f"{'config':<7} {'B':>2} {'T':>5}" + "".join(f" {column:>15}" for _, column, _ in WAYS)
    lines = ["GiB a step's buffers take, counted (kernel scratch and the CUDA context not counted); "
             "torch: its peak, measured; (x): ours / torch", head + f" {'torch':>6}"]
    for name, B, T in cases:
        rows = step_memory(GPTConfig.preset(name), B, T)
        peak = torch_peak_mib(record, name, B, T)
        cells = []
        for r in rows:
            gib = r["total"] / GiB
            cells.append(f"{gib:.2f}" + ("" if peak is None else f" ({r['total'] / 2 ** 20 / peak:.2f}x)"))
        lines.append(f"{name:<7} {B:>2} {T:>5}" + "".join(f" {c:>15}" for c in cells)
                     + f" {('-' if peak is None else f'{peak / 1024:.2f}'):>6}")
    if record:
        lines.append(f"torch peak: measured on {record['device']}, {record['date']}")
    return "\n".join(lines)


def main() -> None:
    """Print memory_table for DOC_CASES against the newest GPU record (docs/figures.md's table)."""
    from .gpu_recorded import latest
    print(memory_table(record=latest()))


__all__ = ["WAYS", "GROUPS", "DOC_CASES", "way_groups", "step_memory", "torch_peak_mib", "memory_figure",
           "memory_table"]


if __name__ == "__main__":
    main()

