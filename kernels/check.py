"""One verification harness for every kernel: ours vs PyTorch, per op, version, device, direction, tensor.

Each op module in this package defines ``SPEC = OpSpec(...)``: how to make random inputs for a shape, the
PyTorch reference (autograd for the backward), the versions to run on each device, the tolerances per
tensor, and the shapes to check on each device. `verify()` runs them all and returns rows that
`format_table()` prints as::

    op         version  device  dir  tensor  shape          max_abs   max_rel   atol     rtol     result
    layernorm  cpu      cpu     fwd  out     B=3,T=1,C=37   2.4e-07   1.1e-06   1e-05    1e-04    OK

A tensor passes when every element satisfies |ours - ref| <= atol + rtol * |ref| (numpy's allclose rule).
The devices: "cpu" (numba @njit), "cudasim" (numba's CUDA simulator: the CUDA kernels' Python semantics
on the CPU; NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported) and "cuda" (a real GPU).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Every op, in the order of GPT-2's forward pass.
OPS = ("encoder", "layernorm", "matmul", "attention", "gelu", "residual", "crossentropy", "adamw")
DEVICES = ("cpu", "cudasim", "cuda")


@dataclass
class OpSpec:
    """What the harness needs to know about one op.

    make_inputs(shape, rng) -> dict of float32/int arrays (incl. the upstream gradient, e.g. "dout").
    reference(inputs) -> dict tensor -> np.ndarray computed by PyTorch (outputs and autograd gradients).
    versions: device kind ("cpu" or "cuda") -> {version name: run(inputs) -> dict tensor -> np.ndarray}.
      A "cuda" runner takes and returns numpy arrays; it moves them to and from the device itself.
    shapes: device ("cpu", "cudasim", "cuda") -> list of shape dicts, e.g. {"B": 3, "T": 1, "C": 37}.
    tol: tensor -> (atol, rtol) for float32. backward: the tensors that are gradients.
    """
    name: str
    make_inputs: Callable[[dict, np.random.Generator], dict]
    reference: Callable[[dict], dict]
    versions: dict
    shapes: dict
    tol: dict
    backward: tuple = ()
    doc: str = ""


@dataclass
class Row:
    op: str
    version: str
    device: str
    direction: str
    tensor: str
    shape: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    ok: bool
    seconds: float = field(default=0.0, compare=False)


def get_spec(op: str) -> OpSpec:
    """The OpSpec of `op` (imports gpt2lab.kernels.<op>)."""
    if op not in OPS:
        raise ValueError(f"verify: unknown op {op!r}; choose from {', '.join(OPS)}")
    return importlib.import_module(f"gpt2lab.kernels.{op}").SPEC


def compare(ours: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs error, max rel error, allclose) of `ours` against `ref`."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return float("inf"), float("inf"), False
    err = np.abs(ours - ref)
    if not np.all(np.isfinite(ours)):
        return float("inf"), float("inf"), False
    max_abs = float(err.max(initial=0.0))
    max_rel = float((err / np.maximum(np.abs(ref), 1e-12)).max(initial=0.0))
    return max_abs, max_rel, bool(np.all(err <= atol + rtol * np.abs(ref)))


def shape_str(shape: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in shape.items())


def check_op(spec: OpSpec, device: str, version: str | None = None, shapes=None, seed: int = 0) -> list[Row]:
    """Run every version of `spec` on `device` at its shapes and compare each tensor with PyTorch."""
    kind = "cpu" if device == "cpu" else "cuda"
    versions = spec.versions.get(kind, {})
    if version is not None:
        if version not in versions:
            raise ValueError(f"verify: {spec.name} has no {kind} version {version!r}; has {list(versions)}")
        versions = {version: versions[version]}
    rows = []
    for shape in (shapes if shapes is not None else spec.shapes[device]):
        inputs = spec.make_inputs(shape, np.random.default_rng(seed))
        ref = spec.reference(inputs)
        for vname, run in versions.items():
            t0 = time.perf_counter()
            ours = run({k: v.copy() for k, v in inputs.items()})  # a kernel must never see mutated inputs
            dt = time.perf_counter() - t0
            for tensor, expected in ref.items():
                atol, rtol = spec.tol[tensor]
                got = ours.get(tensor)
                max_abs, max_rel, ok = (compare(got, expected, atol, rtol) if got is not None
                                        else (float("inf"), float("inf"), False))
                rows.append(Row(spec.name, vname, device, "bwd" if tensor in spec.backward else "fwd", tensor,
                                shape_str(shape), max_abs, max_rel, atol, rtol, ok, dt))
    return rows


def verify(device: str = "cpu", ops=None, version: str | None = None, progress=None) -> list[Row]:
    """Check `ops` (default: all) on `device`; returns one Row per (op, version, shape, tensor)."""
    if device not in DEVICES:
        raise ValueError(f"verify: device must be one of {DEVICES}, got {device!r}")
    rows = []
    for op in ops or OPS:
        rows += check_op(get_spec(op), device, version)
        if progress:
            progress(op)
    return rows


def format_table(rows: list[Row]) -> str:
    """The verification table, one line per row, OK/FAIL at the end."""
    head = ("op", "version", "device", "dir", "tensor", "shape", "max_abs", "max_rel", "atol", "rtol", "result")
    body = [(r.op, r.version, r.device, r.direction, r.tensor, r.shape, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}",
             f"{r.atol:.0e}", f"{r.rtol:.0e}", "OK" if r.ok else "FAIL") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    n_fail = sum(not r.ok for r in rows)
    lines = [fmt.format(*head)] + [fmt.format(*b) for b in body]
    lines.append(f"{len(rows) - n_fail} OK, {n_fail} FAIL")
    return "\n".join(lines)
