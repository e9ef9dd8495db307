"""Teacher build: the student notebooks, and each lesson executed and exported as HTML that works offline.

    python tools/handouts.py [--html] [--out build/handouts] notebooks/NN_*.py

student/NN_name.ipynb is the notebook a learner gets from `make lab` (solutions are not in the lessons; a learner
reveals one with show_solution). With --html, each lesson is executed and written to html/NN_name.html, one
page that opens from file:// with no network: figures, animations with working buttons, math as MathML, and
a static picture of every widget (see offline_html.py). A page that would still fetch anything is an error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_lab import learner_notebook  # noqa: E402
from offline_html import export_html, offline_notebook, remote_refs  # noqa: E402


def execute(nb, cwd: Path, timeout: int = 900):
    """Run every cell in a fresh kernel (in place), keeping the widgets' state for their static pictures."""
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def write_html(nb, path: Path) -> dict:
    """Make the executed notebook offline-ready and write it as HTML; returns what was converted."""
    counts = offline_notebook(nb)
    page = export_html(nb)
    remote = remote_refs(page)
    if remote:
        raise RuntimeError(f"handouts: {path.name} would load from the network: {remote[:3]}")
    path.write_text(page, encoding="utf-8")
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("build/handouts"))
    p.add_argument("--html", action="store_true", help="also execute each lesson and export offline HTML")
    args = p.parse_args(argv)
    (args.out / "student").mkdir(parents=True, exist_ok=True)
    for src in args.sources:
        if not src.exists():
            print(f"handouts: no such notebook source: {src}", file=sys.stderr)
            return 2
        dest = args.out / "student" / f"{src.stem}.ipynb"
        nbformat.write(learner_notebook(src), dest)
        print(f"{dest}: student notebook")
        if args.html:
            (args.out / "html").mkdir(parents=True, exist_ok=True)
            html = args.out / "html" / f"{src.stem}.html"
            # run in the build folder, so files a lesson writes (runs/...) never land beside the sources
            counts = write_html(execute(learner_notebook(src), args.out.resolve()), html)
            print(f"{html}: executed, offline ({counts['widgets']} widget picture(s), "
                  f"{counts['math cells']} cell(s) of math)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
