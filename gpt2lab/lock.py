"""One lock per folder across processes: the course cache and every training run folder use this one helper.

    with file_lock(folder / ".lock", wait=False):   # LockedError if another process holds it
        ...

The lock is fcntl.flock on a small file that also holds the holder's process id, so a refusal can name the
other process. The kernel releases a flock when its holder exits, even by SIGKILL: no stale locks to clean.
Taking a lock this thread already holds is a no-op (the CLI locks a run folder, then the trainer does too);
another thread of the same process is refused like another process (two notebook dashboards, one folder).
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

_local = threading.local()          # .held: {resolved path: depth}, the locks this thread holds


class LockedError(RuntimeError):
    """The lock is held by another process; the message names it (pid) and the lock file."""


def _holder(f) -> str:
    f.seek(0)
    pid = f.read().strip()
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def file_lock(path, wait: bool = True, what: str = "this folder", on_wait=None):
    """Hold an exclusive lock on `path` (created if missing) for the `with` block.

    wait: True blocks until the other holder is done (calling on_wait(holder) first, e.g. to say so);
    False raises LockedError naming the holder. what: the thing locked, for the message.
    """
    path = Path(path)
    key = str(path.resolve())
    held = _local.__dict__.setdefault("held", {})
    if key in held:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; two processes starting at once are not kept apart
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockedError(f"{what} is in use by {_holder(f)} (lock file {path}); wait for it to "
                                  f"finish or stop it") from None
            if on_wait is not None:
                on_wait(_holder(f))
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            held[key] = 1
            yield
        finally:
            held.pop(key, None)
            fcntl.flock(f, fcntl.LOCK_UN)
