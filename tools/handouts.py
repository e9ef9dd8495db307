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
from offline_html import STANDIN, WIDGET_VIEW, export_html, offline_notebook, remote_refs  # noqa: E402


PROBE = "from gpt2lab.widgets.standin import show_control_animation\nshow_control_animation({model_id!r})"


def execute(nb, cwd: Path, timeout: int = 900):
    """Run every cell in a fresh kernel (in place), keeping the widgets' state for their static pictures. After a
    cell that shows a widget, the same kernel steps the widget's first control through its values and the frames
    are kept in the output's metadata (offline_html.STANDIN) for the page to play."""
    from nbclient import NotebookClient
    from nbclient.util import run_sync
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(cwd)}})

    async def run():
        async with client.async_setup_kernel():
            for index, cell in enumerate(nb.cells):
                await client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
                for out in cell.get("outputs", []):
                    view = out.get("data", {}).get(WIDGET_VIEW)
                    if view is not None:
                        probe = nbformat.v4.new_code_cell(PROBE.format(model_id=view["model_id"]))
                        await client.async_execute_cell(probe, index)
                        nb.cells[index] = cell      # nbclient stores the cell it ran at its index: put ours back
                        frames = "".join(o.get("data", {}).get("text/html", "") for o in probe.outputs)
                        if frames:
                            out.setdefault("metadata", {})[STANDIN] = frames
            client.set_widgets_metadata()
    run_sync(run)()
    number_cells(nb)
    return nb


def number_cells(nb) -> None:
    """Execution counts 1, 2, 3, ... (the stand-in probes ran in between and took numbers of their own)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for k, cell in enumerate(code, start=1):
        cell.execution_count = k
        for out in cell.get("outputs", []):
            if out.get("output_type") == "execute_result":
                out["execution_count"] = k


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
