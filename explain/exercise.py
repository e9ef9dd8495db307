"""The one check mechanism every exercise uses: run a learner's function on a few cases, return a result.

A check never raises for a wrong answer. It returns a `CheckResult`: true when every case is right, and shown in
a notebook as a short panel that says OK, or FAIL with what it tried, the failing input, expected vs got and a
hint. So a lesson with an unwritten or wrong exercise still runs to the end (and CI can run the learner's
notebooks), while the panel, not a traceback into the package, tells the learner what to fix.

    result = run_check("pair_counts", pair_counts, cases, hint="weight each pair by its chunk's count")
    result          # the panel
    bool(result)    # True when right
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Callable

from .check import Mismatch
from .palette import FAIL_COLOR, OK_COLOR


@dataclass
class Case:
    """One thing a check tries. label: what it tries, in words ("one chunk seen 3 times"); given: the input as the
    learner would write it (short); run(fn) calls the learner's function and returns what to compare;
    compare(got) -> Mismatch or None; hint: said when this case fails (else the mismatch's, else the exercise's)."""
    label: str
    given: str
    run: Callable
    compare: Callable[[object], Mismatch | None]
    hint: str = ""


@dataclass(repr=False)
class CheckResult:
    """The outcome of one exercise check; true when right. Shown as a panel (text and HTML)."""
    exercise: str
    ok: bool
    tried: list[str] = field(default_factory=list)
    given: str = ""            # the failing input
    problem: str = ""          # what was wrong, one line
    expected: str = ""
    got: str = ""
    hint: str = ""

    def __bool__(self) -> bool:
        return self.ok

    @property
    def verdict(self) -> str:
        """The word tests and tools look for: "OK" or "FAIL"."""
        return "OK" if self.ok else "FAIL"

    def rows(self) -> list[tuple[str, str]]:
        """The panel's (label, text) rows below its title."""
        rows = [("tried", "; ".join(self.tried))]
        if not self.ok:
            rows += [("input", self.given), ("problem", self.problem), ("expected", self.expected),
                     ("got", self.got), ("hint", self.hint),
                     ("stuck?", f'show_solution("{self.exercise}") prints one solution')]
        return [(k, v) for k, v in rows if v]

    def title(self) -> str:
        """The panel's first line: the verdict and the exercise."""
        if self.ok:
            return f"OK    {self.exercise}: right on all {len(self.tried)} cases"
        return f"FAIL  {self.exercise}"

    def __repr__(self) -> str:
        width = max((len(k) for k, _ in self.rows()), default=0)
        return "\n".join([self.title()] + [f"  {k:<{width}}  {v}" for k, v in self.rows()])

    def _repr_html_(self) -> str:
        colour = OK_COLOR if self.ok else FAIL_COLOR
        rows = "".join(f'<tr><td style="padding:1px 10px 1px 0;color:#555;vertical-align:top">{html.escape(k)}</td>'
                       f'<td style="padding:1px 0;white-space:pre-wrap">{html.escape(v)}</td></tr>'
                       for k, v in self.rows())
        return (f'<div class="gpt2lab-check" style="border-left:6px solid {colour};padding:4px 10px;'
                f'font-family:monospace;font-size:13px;background:#fafafa">'
                f'<div style="font-weight:bold;color:{colour}">{html.escape(self.title())}</div>'
                f'<table style="border-collapse:collapse;margin-top:2px">{rows}</table></div>')


def run_check(exercise: str, fn, cases: list[Case], hint: str = "") -> CheckResult:
    """Try `fn` on every case in order; stop at the first wrong one. Never raises for the learner's mistakes:
    NotImplementedError reads "not written yet", any other exception becomes the problem line."""
    if not callable(fn):
        return CheckResult(exercise, False, [], problem=f"expected a function, got {type(fn).__name__}",
                           hint=f"pass the function itself: check(\"{exercise}\", {exercise})")
    tried = [c.label for c in cases]
    for case in cases:
        fail = dict(exercise=exercise, ok=False, tried=tried, given=case.given)
        try:
            got = case.run(fn)
        except NotImplementedError:
            return CheckResult(**fail, problem="not written yet: the function raises NotImplementedError",
                               hint="replace `raise NotImplementedError` with your code, then run this check again")
        except Exception as e:  # noqa: BLE001 - the learner's code may raise anything; report it, don't crash
            return CheckResult(**fail, problem=f"your function raised {type(e).__name__}: {e}",
                               hint=case.hint or hint)
        mismatch = case.compare(got)
        if mismatch is not None:
            return CheckResult(**fail, problem=mismatch.problem, expected=mismatch.expected, got=mismatch.got,
                               hint=case.hint or mismatch.hint or hint)
    return CheckResult(exercise, True, tried)


__all__ = ["Case", "CheckResult", "run_check"]
