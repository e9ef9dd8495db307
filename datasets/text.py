"""A learner's own corpus."""
from __future__ import annotations

from pathlib import Path


def load_text(path) -> str:
    """Read a UTF-8 text file for training. Raises a clear error for a missing, empty or non-UTF-8 file."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_text: no such file: {str(p)!r}")
    if not p.is_file():
        raise ValueError(f"load_text: {str(p)!r} is not a regular file")
    raw = p.read_bytes()
    if not raw.strip():
        raise ValueError(f"load_text: {str(p)!r} is empty; a corpus needs some text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"load_text: {str(p)!r} is not UTF-8 text (bad byte {raw[e.start]:#04x} "
                         f"at offset {e.start})") from None
