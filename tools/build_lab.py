"""Build the learner notebooks: lab/NN_name.ipynb from the teacher's sources notebooks/NN_name.py.

    python tools/build_lab.py [--out lab] [--force] notebooks/NN_*.py

The sources are jupytext percent files that only teachers edit. A learner works in the built .ipynb, which git
ignores, so nothing tracked changes while they work. A notebook already in --out is kept (it may hold the
learner's work) unless --force; the lines printed say which were kept.
The built notebooks are plain .ipynb: no jupytext pairing, so saving one never writes a .py beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat


def learner_notebook(src: Path):
    """The notebook a learner opens, built from the teacher's source `src` (no outputs yet)."""
    nb = jupytext.read(src)
    nb.metadata.pop("jupytext", None)   # no pairing: the lab copy never writes back to a .py
    return nb


def build(sources: list[Path], out: Path, force: bool = False) -> list[tuple[Path, str]]:
    """Write out/<stem>.ipynb for each source; keep existing ones unless force. Returns (path, "built"/"kept")."""
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for src in sources:
        if not src.exists():
            raise FileNotFoundError(f"notebooks: no such notebook source: {src}")
        dest = out / f"{src.stem}.ipynb"
        if dest.exists() and not force:
            done.append((dest, "kept"))
            continue
        nbformat.write(learner_notebook(src), dest)
        done.append((dest, "built"))
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("lab"))
    p.add_argument("--force", action="store_true", help="rebuild notebooks that exist (a learner's work is lost)")
    args = p.parse_args(argv)
    try:
        done = build(args.sources, args.out, args.force)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    kept = sum(what == "kept" for _, what in done)
    print(f"{args.out}/: {len(done) - kept} notebook(s) built" + (
        f", {kept} kept with your work in them (`make notebooks FORCE=1` rebuilds them from notebooks/*.py, "
        "replacing that work)" if kept else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
