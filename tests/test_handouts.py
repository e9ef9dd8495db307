import sys
from pathlib import Path

import jupytext
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import handouts  # noqa: E402

LESSON = '''# %% [markdown]
# # A lesson
# %% tags=["exercise"]
def double(x):
    raise NotImplementedError
# %% tags=["solution"]
def double(x):
    return 2 * x
# %%
assert double(2) == 4
'''


def test_solution_cells_are_removed(tmp_path):
    src = tmp_path / "01_demo.py"
    src.write_text(LESSON)
    assert handouts.main([str(src), "--out", str(tmp_path / "out")]) == 0
    nb = nbformat.read(tmp_path / "out" / "student" / "01_demo.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert "return 2 * x" not in text          # the solution is gone
    assert "raise NotImplementedError" in text  # the exercise stays
    assert handouts.NOTE in text
    assert "assert double(2) == 4" in text      # and so does the check


def test_every_lesson_has_an_exercise_with_a_hidden_solution():
    root = Path(__file__).resolve().parent.parent / "notebooks"
    lessons = sorted(root.glob("0[1-6]_*.py"))
    for src in lessons:
        tags = [t for c in jupytext.read(src).cells for t in c.get("metadata", {}).get("tags", [])]
        assert "exercise" in tags and "solution" in tags, f"{src.name}: needs an exercise and its solution cell"


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert handouts.main([str(tmp_path / "nope.py"), "--out", str(tmp_path)]) == 2
    assert "no such notebook source" in capsys.readouterr().err
