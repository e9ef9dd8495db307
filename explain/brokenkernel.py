"""Find the broken kernel: one kernel of the model is secretly wrong (gpt2/faults.py), training runs with the
live parity check, and the learner names the broken op from the parity table.

    run = broken_run()                    # a random-but-seeded classic fault; broken_run("gelu_backward_off")
    run                                   # the parity table, in pass order -- the fault is not named
    run.answer                            # the Fault (for the teacher)

The model is the puzzles' micro GPT-2 on the CPU kernels (explain/puzzles.PLUG_MODEL), so a run takes seconds.
Rows come in the order the kernels finish each tensor (see gpt2/parity.py): errors flow downstream, so the op
of the *first* failing row is the broken one -- not the op with the largest error, which is often downstream.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from .palette import FAIL_COLOR, OK_COLOR


def classic_faults() -> list[str]:
    """The classic (not subtle) fault of each op, by name."""
    from gpt2lab.gpt2.faults import FAULTS
    return [name for name, f in FAULTS.items() if not f.subtle]


def pick_fault(fault: str | None, seed: int) -> str:
    """`fault` itself (checked), or a classic one drawn with `seed` when None."""
    from gpt2lab.gpt2.faults import FAULTS
    if fault is None:
        names = classic_faults()
        return names[int(np.random.default_rng(seed).integers(len(names)))]
    if fault not in FAULTS:
        raise ValueError(f"broken_run: unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    return fault


_ROWS: dict = {}


def parity_rows(fault: str, steps: int = 1, seed: int = 0) -> list[dict]:
    """The parity rows (dicts, pass order) of the first verified step of the micro model trained with `fault`
    injected. Cached per (fault, steps, seed)."""
    key = (fault, steps, seed)
    if key not in _ROWS:
        from gpt2lab.gpt2.config import GPTConfig
        from gpt2lab.gpt2.faults import FAULTS, kernels_with
        from gpt2lab.gpt2.kernel_backend import NumbaBackend, VerifiedBackend
        from gpt2lab.gpt2.train import OptimConfig

        from .puzzles import PLUG_LR, PLUG_MODEL, plug_batch
        backend = VerifiedBackend(NumbaBackend(GPTConfig(**PLUG_MODEL), OptimConfig(grad_clip=1.0), seed,
                                      kernels=kernels_with(FAULTS[fault])), every=1, log=lambda s: None)
        x, y = plug_batch()
        for _ in range(steps):
            backend.loss_and_grads(x, y)
            backend.optimizer_step(PLUG_LR)
        _ROWS[key] = backend.reports[0].to_dict()["rows"]
    return [dict(r) for r in _ROWS[key]]


def op_summary(rows: list[dict]) -> list[dict]:
    """One line per (op, direction) in the order they first appear: {"op", "direction", "checked", "failed",
    "worst", "first_failed_tensor"}."""
    groups: dict = {}
    for r in rows:
        g = groups.setdefault((r["op"], r["direction"]), {"op": r["op"], "direction": r["direction"], "checked": 0,
                                                         "failed": 0, "worst": 0.0, "first_failed_tensor": ""})
        g["checked"] += 1
        g["worst"] = max(g["worst"], r["ratio"] if np.isfinite(r["ratio"]) else float("inf"))
        if not r["ok"]:
            g["failed"] += 1
            where = "" if r["layer"] is None else f" (layer {r['layer']})"
            g["first_failed_tensor"] = g["first_failed_tensor"] or f"{r['tensor']}{where}"
    return list(groups.values())


@dataclass
class BrokenRun:
    """A training step of the micro model with one hidden fault: rows (pass order) and the answer (hidden)."""
    rows: list
    answer: object          # gpt2.faults.Fault

    def lines(self) -> list[str]:
        out = [f"{'op':<13} {'dir':<4} {'checked':>7} {'failed':>6} {'worst ours/torch32':>19}  first failing tensor"]
        for g in op_summary(self.rows):
            out.append(f"{g['op']:<13} {g['direction']:<4} {g['checked']:>7} {g['failed']:>6} {g['worst']:>19.3g}  "
                       f"{g['first_failed_tensor']}")
        return out

    def __repr__(self) -> str:
        return "\n".join(["parity of one training step (groups in pass order: forward, then backward, then AdamW)"]
                         + self.lines())

    def _repr_html_(self) -> str:
        rows = []
        for g in op_summary(self.rows):
            colour = FAIL_COLOR if g["failed"] else OK_COLOR
            rows.append(f'<tr><td>{html.escape(g["op"])}</td><td>{g["direction"]}</td><td>{g["checked"]}</td>'
                        f'<td style="color:{colour}">{g["failed"]}</td><td>{g["worst"]:.3g}</td>'
                        f'<td>{html.escape(g["first_failed_tensor"])}</td></tr>')
        head = "".join(f"<th>{h}</th>" for h in ("op", "dir", "checked", "failed", "worst ours/torch32",
                                                   "first failing tensor"))
        return (f'<div style="font-size:13px">parity of one training step, groups in pass order</div>'
                f'<table style="font-family:monospace;font-size:13px"><tr>{head}</tr>{"".join(rows)}</table>')


def broken_run(fault: str | None = None, seed: int = 0) -> BrokenRun:
    """One verified training step of the micro model with `fault` injected (None: a classic one drawn with
    `seed`; a teacher passes a name from gpt2.faults.FAULTS)."""
    from gpt2lab.gpt2.faults import FAULTS
    name = pick_fault(fault, seed)
    return BrokenRun(parity_rows(name), FAULTS[name])


__all__ = ["broken_run", "BrokenRun", "parity_rows", "op_summary", "classic_faults", "pick_fault"]
