"""Teacher build: student notebooks without solutions, and HTML exports of the full lessons.

    python tools/handouts.py [--html] [--out build/handouts] notebooks/NN_*.py

Cells tagged "solution" (jupytext: `# %% tags=["solution"]`) are replaced by a short markdown note in the
student copy; everything else is kept, outputs cleared. With --html, each full lesson is executed and
exported to HTML (matplotlib animations made with to_jshtml() stay playable in the page).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

NOTE = "*Solution removed from the handout: write your own in the cell above, then run the check below.*"


def strip_solutions(nb):
    """The notebook with every "solution"-tagged cell replaced by a note; returns (nb, n_removed)."""
    cells, removed = [], 0
    for cell in nb.cells:
        if "solution" in cell.get("metadata", {}).get("tags", []):
            cells.append(nbformat.v4.new_markdown_cell(NOTE))
            removed += 1
        else:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
    nb.cells = cells
    return nb, removed


def export_html(nb, path: Path, cwd: Path) -> None:
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor
    ExecutePreprocessor(timeout=900, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(cwd)}})
    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("build/handouts"))
    p.add_argument("--html", action="store_true", help="also execute each lesson and export HTML")
    args = p.parse_args(argv)
    (args.out / "student").mkdir(parents=True, exist_ok=True)
    for src in args.sources:
        if not src.exists():
            print(f"handouts: no such notebook source: {src}", file=sys.stderr)
            return 2
        nb, removed = strip_solutions(jupytext.read(src))
        dest = args.out / "student" / f"{src.stem}.ipynb"
        nbformat.write(nb, dest)
        print(f"{dest}: {removed} solution cell(s) removed")
        if args.html:
            (args.out / "html").mkdir(parents=True, exist_ok=True)
            html = args.out / "html" / f"{src.stem}.html"
            export_html(jupytext.read(src), html, src.parent.resolve())
            print(f"{html}: executed and exported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
