"""The one-line compare cell every lesson uses: `cmp("dwte", ours, reference)`.

After makemore part 4's `cmp`: it prints whether our array is *exact*ly the reference, *close* to it, the
largest absolute difference and the size of the reference it is measured against, then returns True when close.
Accepts numpy arrays, torch tensors (with or without grad) and Python numbers.

Close means, element by element, |ours - ref| <= atol * max|ref| + rtol * |ref|: the absolute part is scaled by
the reference's own size, because gradients are often tiny (1e-4) and a fixed atol of 1e-5 would wave a 10%
error through. An all-zero reference is compared with atol itself.

    >>> cmp("dx", np.ones(3), np.ones(3))
    dx                   | exact: True  | close: True  | max diff: 0.0e+00 (max |ref| 1.0e+00)  OK
    True
"""
from __future__ import annotations

import numpy as np

ATOL, RTOL = 1e-5, 1e-4  # float32 arithmetic against a float32/float64 reference


def as_numpy(x) -> np.ndarray:
    """x (numpy, torch tensor, number, nested list) as a float64 numpy array; torch leaves detached."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


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
