"""The data behind the training dashboard: a JSON training log read back, loss curves, the parity table.

A training log is one JSON object per line, one line per optimizer step (gpt2/train.py):

    {"step": 12, "loss": 4.1, "lr": 0.001, "tokens_per_s": 5300.0, "grad_norm": 0.9,
     "val_loss": 4.2, "sample": "...",                 # on evaluation steps only
     "parity": {"summary": {...}, "rows": [...]}}      # on verified steps only (gpt2/parity.py)

Everything here is plain functions over those records, so a test can call them without a browser;
widgets/dashboard.py only draws what they return.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from gpt2lab.kernels.check import K, format_ratio

from .palette import FAIL_COLOR, OK_COLOR

DIRECTIONS = ("fwd", "bwd", "step")
# The ops in the order of GPT-2's forward pass (kernels/check.py's OPS), so the table reads top to bottom.
OP_ORDER = ("encoder", "layernorm", "matmul", "attention", "gelu", "residual", "crossentropy", "adamw")


def read_log(path) -> list[dict]:
    """The records of a JSON-lines training log. A half-written last line (a run still writing) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@dataclass
class Curves:
    """Loss curves of one run: train loss every step, val loss at evaluation steps, throughput every step."""
    steps: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    tokens_per_s: list = field(default_factory=list)
    val_steps: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)


def loss_curves(records: list[dict]) -> Curves:
    """Curves from log records (in step order; a resumed run's repeated steps keep their last value)."""
    by_step = {r["step"]: r for r in records if "step" in r}
    c = Curves()
    for step in sorted(by_step):
        r = by_step[step]
        if r.get("loss") is not None:
            c.steps.append(step)
            c.train_loss.append(float(r["loss"]))
            c.tokens_per_s.append(float(r.get("tokens_per_s", 0.0)))
        if r.get("val_loss") is not None:
            c.val_steps.append(step)
            c.val_loss.append(float(r["val_loss"]))
    return c


def max_val_difference(a: list[dict], b: list[dict]) -> tuple[float, int | None]:
    """Largest |val_loss_a - val_loss_b| over the steps both runs evaluated: (difference, at step)."""
    va = {r["step"]: r["val_loss"] for r in a if r.get("val_loss") is not None}
    vb = {r["step"]: r["val_loss"] for r in b if r.get("val_loss") is not None}
    diffs = [(abs(va[s] - vb[s]), s) for s in sorted(set(va) & set(vb))]
    return max(diffs) if diffs else (0.0, None)


def latest(records: list[dict], key: str):
    """The most recent value of `key` in the records (e.g. "sample", "val_loss"), or None."""
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def latest_parity(records: list[dict]) -> dict | None:
    """The parity report ({summary, rows}) of the most recent verified step, or None."""
    return latest(records, "parity")


# ---------------------------------------------------------------- the parity table
@dataclass
class ParityCell:
    """One op in one direction: its worst tensor (largest ours/torch32) and whether all passed."""
    op: str
    direction: str
    max_abs: float        # our error on the worst tensor
    torch32_abs: float    # PyTorch float32's error on it
    ratio: float          # ours/torch32: a tensor fails above gpt2lab.kernels.check.K
    ok: bool
    worst: str            # "tensor (layer l)" of the worst row
    checked: int
    failed: int

    @property
    def color(self) -> str:
        return OK_COLOR if self.ok else FAIL_COLOR


def _badness(row: dict) -> float:
    """How close a row came to failing: ours/torch32 (a failed row always sorts first)."""
    return (1e30 if not row["ok"] else 0.0) + row["ratio"]


def parity_table(parity: dict | None) -> list[ParityCell]:
    """Rows of the op x direction table from one step's parity report ({summary, rows}); [] for None."""
    if not parity:
        return []
    groups: dict[tuple, list] = {}
    for row in parity["rows"]:
        groups.setdefault((row["op"], row["direction"]), []).append(row)
    cells = []
    for (op, direction), rows in groups.items():
        w = max(rows, key=_badness)
        where = f" (layer {w['layer']})" if w["layer"] is not None else ""
        failed = sum(not r["ok"] for r in rows)
        cells.append(ParityCell(op, direction, w["max_abs"], w["torch32_abs"], w["ratio"], failed == 0,
                                w["tensor"] + where, len(rows), failed))
    rank = {op: i for i, op in enumerate(OP_ORDER)}
    return sorted(cells, key=lambda c: (rank.get(c.op, len(rank)), DIRECTIONS.index(c.direction)
                                        if c.direction in DIRECTIONS else 9))


def parity_html(parity: dict | None) -> str:
    """The parity table as HTML: op, direction, worst tensor, our error, PyTorch float32's, ours/torch32,
    OK/FAIL in green/red (explain.palette). A line says so when no step has been verified yet."""
    if not parity:
        return "<p><i>parity: no verified step yet (train with verify_every &gt; 0)</i></p>"
    s = parity["summary"]
    head = (f"<b>parity vs PyTorch, step {s['step']}</b>: {s['checked'] - s['failed']} of {s['checked']} "
            f"tensors OK")
    cells = parity_table(parity)
    th = "".join(f"<th style='padding:2px 8px'>{h}</th>" for h in
                 ("op", "dir", "worst tensor", "ours err", "torch32 err", f"ours/torch32 (fails &gt; {K:g})", ""))
    body = []
    for c in cells:
        verdict = "OK" if c.ok else f"FAIL {c.failed}/{c.checked}"
        body.append(
            "<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(str(v))}</td>" for v in (
                c.op, c.direction, c.worst, f"{c.max_abs:.2e}", f"{c.torch32_abs:.2e}", format_ratio(c.ratio)))
            + f"<td style='padding:2px 8px;color:white;background:{c.color}'>{verdict}</td></tr>")
    return f"<p>{head}</p><table style='border-collapse:collapse;font-family:monospace'><tr>{th}</tr>" \
           + "".join(body) + "</table>"


# ---------------------------------------------------------------- figures
def loss_figure(curves: Curves, title: str = "loss"):
    """Train (every step) and val (evaluation steps) loss against step; a matplotlib Figure."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.8, 3))
    ax = fig.subplots()
    ax.plot(curves.steps, curves.train_loss, color="#1f77b4", lw=1, label="train")
    if curves.val_steps:
        ax.plot(curves.val_steps, curves.val_loss, "o-", color="#c85a00", ms=3, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"{title}  (steps={len(curves.steps)})")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def speed_figure(curves: Curves):
    """Tokens per second against step; a matplotlib Figure."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.8, 3))
    ax = fig.subplots()
    ax.plot(curves.steps, curves.tokens_per_s, color="#2ca02c", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens / s")
    ax.set_title("throughput")
    fig.tight_layout()
    return fig
