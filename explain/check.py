"""The one-line compare cell every lesson uses: `cmp("dwte", ours, reference)`.

After makemore part 4's `cmp`: it prints whether our array is *exact*ly the reference, *close* to it
(numpy's allclose rule, |ours - ref| <= atol + rtol |ref|), and the largest absolute difference, then
returns True when close. Accepts numpy arrays, torch tensors (with or without grad) and Python numbers.

    >>> cmp("dx", np.ones(3), np.ones(3))
    dx                   | exact: True  | close: True  | max diff: 0.0e+00  OK
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
    """Print `name | exact | close | max diff  OK/FAIL` for ours vs reference; return True when close.

    Shapes must match exactly (no broadcasting: a (C,) gradient is not a (1, C) one).
    """
    a, b = as_numpy(ours), as_numpy(reference)
    if a.shape != b.shape:
        if not quiet:
            print(f"{name:<20} | shape mismatch: ours {a.shape} vs reference {b.shape}  FAIL")
        return False
    exact = bool(np.array_equal(a, b))
    finite = bool(np.all(np.isfinite(a)))
    diff = float(np.abs(a - b).max(initial=0.0)) if finite else float("inf")
    close = finite and bool(np.allclose(a, b, atol=atol, rtol=rtol))
    if not quiet:
        print(f"{name:<20} | exact: {exact!s:<5} | close: {close!s:<5} | max diff: {diff:.1e}  "
              f"{'OK' if close else 'FAIL'}")
    return close
