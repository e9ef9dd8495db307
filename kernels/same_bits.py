"""Does one kernel version give another's results bit for bit? (`gpt2lab verify --device cuda --op matmul
--version v8 --same-as v7`; a version against itself: is it deterministic?)

A version that only reschedules another's arithmetic (the same products, added in the same order, in fewer
instructions: matmul v8 of v7, flash attention v6 of v5) must give the same bits, on every tensor, at every
shape. That is a stronger check than the one against PyTorch (`check.judge`, a tolerance): a changed order of
additions passes that one and fails this. Both versions get the same inputs; reused scratch buffers
(`_cuda.scratch`) are poisoned with NaN before each, so an element the second version never wrote cannot
borrow what the first left there; a non-finite number in either result is DIFFERENT, so poison both versions
left unwritten in the same place shows too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .check import get_spec, shape_str, version_runs


@dataclass
class SameRow:
    op: str
    version: str
    other: str
    device: str
    direction: str
    tensor: str
    shape: str
    max_diff: float   # max |version - other| over the tensor (NaN: a shape differs, a tensor is missing, or a NaN)
    same: bool        # every element's bits equal (and the shapes and dtypes), every element finite


def same_bits(op: str, device: str, version: str, other: str, shapes=None, seed: int = 0) -> list[SameRow]:
    """One SameRow per (shape, tensor) of `op`: does `version` give `other`'s bits on `device`?"""
    spec = get_spec(op)
    runs = version_runs(spec, device, [version, other])
    rows = []
    for shape in (shapes if shapes is not None else spec.shapes[device]):
        inputs = spec.make_inputs(shape, np.random.default_rng(seed))
        theirs = _run_poisoned(runs[other], inputs, device)   # two runs even when version == other
        ours = _run_poisoned(runs[version], inputs, device)
        for tensor in sorted(set(theirs) | set(ours)):
            same, diff = compare(ours.get(tensor), theirs.get(tensor))
            rows.append(SameRow(op, version, other, device, "bwd" if tensor in spec.backward else "fwd", tensor,
                                shape_str(shape), diff, same))
    return rows


def compare(a, b) -> tuple[bool, float]:
    """(the same bits: shape, dtype and every byte, all finite; max |a - b|, NaN where a shape differs, a tensor
    is missing or either holds a NaN)."""
    if a is None or b is None or a.shape != b.shape:
        return False, float("nan")
    finite = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b))) if a.dtype.kind == "f" else True
    same = finite and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return bool(same), float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))


def _run_poisoned(run, inputs: dict, device: str) -> dict:
    """run(a copy of inputs), after poisoning the GPU's scratch buffers (none on the CPU)."""
    if device != "cpu":
        from ._cuda import poison_scratch
        poison_scratch()
    return run({k: v.copy() for k, v in inputs.items()})


def format_table(rows: list[SameRow]) -> str:
    """One line per row, SAME/DIFFERENT at the end, and a count."""
    head = ("op", "version", "same as", "device", "dir", "tensor", "shape", "max |diff|", "result")
    body = [(r.op, r.version, r.other, r.device, r.direction, r.tensor, r.shape, f"{r.max_diff:.2e}",
             "SAME" if r.same else "DIFFERENT") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    n_same = sum(r.same for r in rows)
    return "\n".join([fmt.format(*head), *(fmt.format(*b) for b in body),
                      f"{n_same} SAME, {len(rows) - n_same} DIFFERENT (bit for bit)"])
