"""Signal handlers for the length of a block, put back after it: what `gpt2lab train` (a first Ctrl-C or
SIGTERM stops after the step) and `gpt2lab bench` (SIGTERM ends it as Ctrl-C does) both need."""
from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def handling(names, handler):
    """Inside the block, `handler(signum, frame)` answers each signal in `names` (e.g. ("SIGINT", "SIGTERM"));
    after it, the handlers before it come back. Python delivers signals to the main thread only and lets only
    it install handlers: from another thread nothing changes."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for name in names:
            old[name] = signal.signal(getattr(signal, name), handler)
    try:
        yield
    finally:
        for name, previous in old.items():
            if previous is not None:   # None: a handler installed outside Python, which cannot be put back
                signal.signal(getattr(signal, name), previous)


def raise_interrupt(signum, frame):
    """A signal handler that ends the work the way Ctrl-C does (KeyboardInterrupt, named after the signal): a
    `timeout` or a container stop then keeps what was done (`gpt2lab bench`, `gpt2lab verify`)."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


STOP_CODES = {"SIGINT": 130, "SIGTERM": 143}   # a command's exit status when a signal stopped it (as train's)


def stopped_by(interrupt: KeyboardInterrupt) -> str:
    """The signal behind a KeyboardInterrupt: "SIGTERM" when raise_interrupt raised it for one, else "SIGINT"."""
    return "SIGTERM" if str(interrupt) == "SIGTERM" else "SIGINT"


def each_until_stopped(items, work, rows: list, done=None) -> str | None:
    """rows += work(item) for each item in turn, then done(item) (e.g. a progress line: only once the rows are
    kept), SIGTERM (a time limit) taken as Ctrl-C. Returns None when all were done, else the signal that stopped
    it ("SIGINT" or "SIGTERM"); the rows of the items done stay in rows. For commands whose rows are worth
    printing however far they got (`gpt2lab verify`, the accuracy probes)."""
    with handling(("SIGTERM",), raise_interrupt):
        try:
            for item in items:
                rows += work(item)
                if done:
                    done(item)
        except KeyboardInterrupt as e:
            return stopped_by(e)
    return None
