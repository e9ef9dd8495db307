"""Write a file so that a crash or Ctrl-C never leaves half of it behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call write(f) on a temp file in the same folder as `path`, then rename it over `path`.

    A rename within one folder is atomic: readers see the old file or the new one, never a partial one.
    On any error (KeyboardInterrupt included) the temp file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
