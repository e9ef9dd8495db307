"""The NaN/inf guard: a loss or gradient norm that is not finite stops training before it spreads.

One non-finite number in a step (a learning rate far too high, an overflow) turns every parameter into NaN
after the next AdamW update, and a checkpoint written then is lost work. The trainer checks the loss before
the update, each backend checks the global gradient norm before AdamW touches a parameter, and nothing
non-finite is ever saved as latest.pt (the CLI exits with code 4).
"""
from __future__ import annotations

import math


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or parameter that is nan or inf; raised before the update that would spread it."""


def check_finite(what: str, value: float, step: int) -> float:
    """`value` unchanged, or NonFiniteError "the <what> is nan at step <step>"."""
    if not math.isfinite(value):
        raise NonFiniteError(f"the {what} is {value} at step {step}")
    return value
