"""The one-line compare cell every lesson uses: `cmp("dwte", ours, reference)`.

After makemore part 4's `cmp`: it prints whether our array is *exact*ly the reference, *close* to it, the
largest absolute difference and the size of the reference it is measured against, then returns True when close.
Accepts numpy arrays, torch tensors (with or without grad) and Python numbers.

Close means, element by element, |ours - ref| <= atol * max|ref| + rtol * |ref|: the absolute part is scaled by
the reference's own size, because gradients are often tiny (1e-4) and a fixed atol of 1e-5 would wave a 10%
error through. An all-zero reference is compared with atol itself.

Why not kernels/check.py's `judge`, the rule `gpt2lab verify` and live parity use: judge measures our error
against PyTorch float32's own error, which needs the reference run twice (float64 and float32) by the harness.
A lesson compares one small array with one reference it already has, a few hundred elements and short sums,
where float32's rounding is far inside these tolerances; a wrong answer (a missing term, a wrong index) is off by
much more. Pass `atol`/`rtol` only to say something stricter (1e-12 for a float64 identity); cmp already
scales atol by max|ref|.

    >>> cmp("dx", np.ones(3), np.ones(3))
    dx                   | exact: True  | close: True  | max diff: 0.0e+00 (max |ref| 1.0e+00)  OK
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ATOL, RTOL = 1e-5, 1e-4  # float32 arithmetic against a float32/float64 reference


def as_numpy(x) -> np.ndarray:
    """x (numpy, torch tensor, number, nested list) as a float64 numpy array; torch leaves detached."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass
class Mismatch:
    """Where ours and the reference part: a one-line `problem`, the `expected` and `got` values as text, and
    optionally a hint for this kind of difference."""
    problem: str
    expected: str
    got: str
    hint: str = ""


def first_mismatch(name: str, ours, reference, atol: float = ATOL, rtol: float = RTOL) -> Mismatch | None:
    """None when ours is close to the reference (cmp's rule); else the worst element as a Mismatch.

    The worst element is the one furthest outside its tolerance, so the learner sees the entry to look at.
    """
    b = as_numpy(reference)
    if ours is None:
        return Mismatch(f"{name} is missing (None: did you forget a return?)", f"shape {b.shape}", "None")
    try:
        a = as_numpy(ours)
    except (TypeError, ValueError) as e:
        return Mismatch(f"{name} is not an array of numbers ({e})", f"shape {b.shape}", type(ours).__name__)
    if a.shape != b.shape:
        return Mismatch(f"{name} has the wrong shape", f"shape {b.shape}", f"shape {a.shape}")
    if not np.all(np.isfinite(a)):
        i = tuple(int(k) for k in np.argwhere(~np.isfinite(a))[0])
        return Mismatch(f"{name}{list(i)} is not a finite number", f"{b[i]:.6g}", f"{a[i]}")
    scale = float(np.abs(b).max(initial=0.0)) or 1.0
    excess = np.abs(a - b) - (atol * scale + rtol * np.abs(b))
    if a.size == 0 or excess.max() <= 0:
        return None
    i = np.unravel_index(int(excess.argmax()), b.shape)
    where = f"{list(int(k) for k in i)}" if b.ndim else ""
    return Mismatch(f"{name}{where} differs by {abs(a[i] - b[i]):.1e} (max |{name}| is {scale:.1e})",
                    f"{b[i]:.6g}", f"{a[i]:.6g}")


def cmp(name: str, ours, reference, atol: float = ATOL, rtol: float = RTOL, quiet: bool = False) -> bool:
    """Print `name | exact | close | max diff (max |ref|)  OK/FAIL` for ours vs reference; True when close.

    Shapes must match exactly (no broadcasting: a (C,) gradient is not a (1, C) one).
    """
    a, b = as_numpy(ours), as_numpy(reference)
    if a.shape != b.shape:
        if not quiet:
            print(f"{name:<20} | shape mismatch: ours {a.shape} vs reference {b.shape}  FAIL")
        return False
    scale = float(np.abs(b).max(initial=0.0)) or 1.0
    exact = bool(np.array_equal(a, b))
    finite = bool(np.all(np.isfinite(a)))
    err = np.abs(a - b)
    diff = float(err.max(initial=0.0)) if finite else float("inf")
    close = finite and bool(np.all(err <= atol * scale + rtol * np.abs(b)))
    if not quiet:
        print(f"{name:<20} | exact: {exact!s:<5} | close: {close!s:<5} | max diff: {diff:.1e} "
              f"(max |ref| {float(np.abs(b).max(initial=0.0)):.1e})  {'OK' if close else 'FAIL'}")
    return close
