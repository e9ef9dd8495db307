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
