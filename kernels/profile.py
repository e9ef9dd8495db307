"""Where a training step's GPU time goes, kernel by kernel: `with profile() as prof: <a step>`, then `prof.table()`.

While a profile is open, every launch through `@cuda_kernel` (kernels/_cuda.py) and every `memset_zero` is
bracketed by two CUDA events recorded on the default stream, one just before the launch and one just after.
The GPU passes an event when it reaches it in the stream, so end - start is that kernel's time on the GPU,
not the host's time to launch it. Nothing waits while the step runs: the events are read once, after one
`cuda.synchronize()` when the profile closes (a synchronize per launch would serialize host and GPU, and
the profile would measure a different step from the one it profiles).

The step's time is the GPU's span from the first launch's start event to the last launch's end event. What
the kernels do not cover of it is reported as its own row, IDLE: the GPU waiting for the host to launch the
next kernel (and any copy or cuBLAS call between two of our launches). A launch-bound step shows up there.

In numba's simulator events carry no time (their elapsed_time is -1 by design), so there each launch is
timed by the host's wall clock instead (the simulator runs a launch synchronously) and the result says so
in `clock`: the structure (names, calls, shares) is right, the times are the simulator's, not a GPU's.

When no profile is open the launcher pays one `is not None` check (kernels/_cuda.py `_PROFILER`).
"""
from __future__ import annotations

import time

from . import _cuda

EVENTS = "cuda events (GPU time)"
WALL = "wall clock (simulator: not GPU time)"
IDLE = "(GPU idle between our kernels)"


class Profile:
    """The launches of one profiled stretch (see the module docstring). Use `profile()` to open one."""

    def __init__(self, clock: str | None = None):
        if clock is None:
            clock = WALL if _cuda._simulated() else EVENTS
        if clock not in (EVENTS, WALL):
            raise ValueError(f"Profile: clock must be {EVENTS!r} or {WALL!r}, got {clock!r}")
        self.clock = clock
        self.marks: list[tuple[str, object, object]] = []   # (kernel name, start mark, end mark), in launch order
        self._ms: list[tuple[str, float, float]] | None = None   # (name, start ms, end ms), read at close

    # -- while open: called by the launcher, once per launch
    def _mark(self):
        if self.clock == WALL:
            return time.perf_counter()
        from numba import cuda
        event = cuda.event(timing=True)
        event.record()   # the default stream, which our launches use
        return event

    def timed(self, name: str, launch, args):
        """Launch `launch(args)` between two marks and remember them under `name`."""
        start = self._mark()
        result = launch(args)
        self.marks.append((name, start, self._mark()))
        return result

    # -- at close: read every mark once
    def close(self) -> None:
        if self.clock == WALL or not self.marks:
            first = self.marks[0][1] if self.marks else 0.0
            self._ms = [(n, (s - first) * 1e3, (e - first) * 1e3) for n, s, e in self.marks]
            return
        from numba import cuda
        cuda.synchronize()   # the one wait: every event has been passed after this
        first = self.marks[0][1]
        self._ms = [(n, first.elapsed_time(s), first.elapsed_time(e)) for n, s, e in self.marks]

    # -- the results
    @property
    def launches(self) -> int:
        return len(self.marks)

    def step_ms(self) -> float:
        """The GPU's span from the first launch's start to the last launch's end, in ms."""
        ms = self._closed()
        return max(e for _, _, e in ms) - min(s for _, s, _ in ms) if ms else 0.0

    def rows(self) -> list[dict]:
        """One row per kernel name, slowest first: calls, total ms, % of the step; then the IDLE row."""
        ms, step = self._closed(), self.step_ms()
        by_name: dict[str, list] = {}
        for name, start, end in ms:
            row = by_name.setdefault(name, [0, 0.0])
            row[0] += 1
            row[1] += end - start
        rows = [{"kernel": n, "calls": c, "ms": t, "pct": 100 * t / step if step else 0.0}
                for n, (c, t) in sorted(by_name.items(), key=lambda kv: -kv[1][1])]
        idle = max(step - sum(r["ms"] for r in rows), 0.0)
        rows.append({"kernel": IDLE, "calls": 0, "ms": idle, "pct": 100 * idle / step if step else 0.0})
        return rows

    def as_dict(self) -> dict:
        """The profile as plain data (JSON): clock, launches, step_ms, rows."""
        return {"clock": self.clock, "launches": self.launches, "step_ms": self.step_ms(), "rows": self.rows()}

    def table(self, top: int | None = None) -> str:
        """The rows as aligned text (the `top` slowest kernels, the rest summed as "other")."""
        return table(self.as_dict(), top)

    def _closed(self):
        if self._ms is None:
            raise RuntimeError("Profile: read the results after the `with profile()` block has closed")
        return self._ms


def split_rows(profile: dict, top: int | None = None) -> tuple[list, list, list]:
    """A profile's rows (slowest first) as (the `top` slowest kernels, the other kernels, the IDLE row): how the
    table and lesson 6's profile figure show the kernels below the top as one "other"."""
    kernels = [r for r in profile["rows"] if r["kernel"] != IDLE]
    idle = [r for r in profile["rows"] if r["kernel"] == IDLE]
    cut = len(kernels) if top is None else top
    return kernels[:cut], kernels[cut:], idle


def table(profile: dict, top: int | None = None) -> str:
    """A profile's dict (Profile.as_dict, or a recorded one) as aligned text, the clock named in its header."""
    rows, rest, idle = split_rows(profile, top)
    if rest:
        rows = rows + [{"kernel": f"other ({len(rest)} kernels)", "calls": sum(r["calls"] for r in rest),
                        "ms": sum(r["ms"] for r in rest), "pct": sum(r["pct"] for r in rest)}]
    width = max(len(r["kernel"]) for r in rows + idle)
    lines = [f"one step: {profile['step_ms']:.3f} ms, {profile['launches']} launches; clock: {profile['clock']}",
             f"{'kernel':<{width}} {'calls':>6} {'ms':>9} {'% step':>7}"]
    for r in rows + idle:
        calls = f"{r['calls']:>6}" if r["kernel"] != IDLE else f"{'':>6}"
        lines.append(f"{r['kernel']:<{width}} {calls} {r['ms']:>9.3f} {r['pct']:>7.1f}")
    return "\n".join(lines)


class profile:   # noqa: N801  (used as a context manager: `with profile() as prof`)
    """`with profile() as prof: ...`: every @cuda_kernel launch and memset_zero inside is timed (module
    docstring). One profile at a time; `clock` as Profile's (None: events on a GPU, wall clock in the
    simulator)."""

    def __init__(self, clock: str | None = None):
        self.prof = Profile(clock)

    def __enter__(self) -> Profile:
        if _cuda._PROFILER[0] is not None:
            raise RuntimeError("profile(): a profile is already open (profiles do not nest)")
        _cuda._PROFILER[0] = self.prof
        return self.prof

    def __exit__(self, *exc):
        _cuda._PROFILER[0] = None
        self.prof.close()
        return False
