"""Write a file so that a crash or Ctrl-C never leaves half of it behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after os.replace could otherwise lose it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are journaled anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call write(f) on a temp file in the same folder as `path`, then rename it over `path`.

    A rename within one folder is atomic: readers see the old file or the new one, never a partial one.
    The data is fsync'ed before the rename and the folder after it. The file gets the mode any new file
    gets (0o666 less the umask: 0644 usually), not mkstemp's private 0600, so a shared cache stays readable.
    On any error (KeyboardInterrupt included) the temp file is removed and the error re-raised; a temp file
    left by a killed process (`.NAME.*.tmp`) is removed by `remove_stale_temps` when its folder is next used.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def remove_stale_temps(folder) -> dict[Path, int]:
    """Delete the temp files atomic_write leaves behind when killed (SIGKILL, power cut) in `folder`.

    Call it only while holding the folder's lock (gpt2lab/lock.py), so no live writer's temp file goes.
    Returns {path removed: its size in bytes}.
    """
    removed = {}
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file():
            removed[p] = p.stat().st_size
            p.unlink(missing_ok=True)
    return removed
