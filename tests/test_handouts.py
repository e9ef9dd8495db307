"""tools/handouts.py and tools/build_lab.py: student notebooks, and HTML that works offline."""
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_lab  # noqa: E402
import handouts  # noqa: E402
import offline_html  # noqa: E402

# A small lesson with everything a real one shows: math, a figure, an animation, a widget with an image,
# an exercise and its check.
LESSON = '''# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # A lesson
# The loss is $L = -\\frac{1}{T}\\sum_t \\log p_t$, and in display
# $$\\theta \\leftarrow \\theta - \\eta\\,g$$
# but `$not math$` in code stays.

# %%
import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
from matplotlib.animation import FuncAnimation
from IPython.display import HTML
import ipywidgets as W
from gpt2lab.widgets._view import figure_png, player

fig, ax = plt.subplots(figsize=(2, 1))
line, = ax.plot([0, 1], [0, 1])
anim = FuncAnimation(fig, lambda k: line.set_ydata([0, k]), frames=3)
plt.close(fig)
HTML(anim.to_jshtml())

# %%
fig2, ax2 = plt.subplots(figsize=(2, 1))
ax2.plot([1, 3, 2])
slider, play, row = player("step", 4, value=2)
W.VBox([W.HTML("<b>the caption</b>"), row, W.Image(value=figure_png(fig2), format="png")])

# %% tags=["exercise"]
def double(x):
    raise NotImplementedError("write me")

# %% tags=["check"]
print("FAIL" if double is None else "checked")
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small lesson through `handouts.main --html`: (out folder, HTML page)."""
    tmp = tmp_path_factory.mktemp("handouts")
    src = tmp / "01_demo.py"
    src.write_text(LESSON.replace("raise NotImplementedError(\"write me\")", "return 2 * x"))
    assert handouts.main([str(src), "--html", "--out", str(tmp / "out")]) == 0
    return tmp / "out", (tmp / "out" / "html" / "01_demo.html").read_text()


def test_the_html_loads_nothing_from_the_network(exported):
    _, page = exported
    assert offline_html.remote_refs(page) == []
    for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page):
        assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", tag), tag
    assert "font-awesome" not in page and "require.min.js" not in page and "mathjax" not in page.lower()


def test_math_is_mathml_and_code_is_left_alone(exported):
    _, page = exported
    assert page.count("<math") == 2 and 'display="block"' in page and "\\frac" not in page
    assert "$not math$" in page


def test_the_animation_keeps_its_frames_and_gets_text_buttons(exported):
    _, page = exported
    assert page.count("data:image/png;base64") >= 3 and "anim_img" in page
    assert 'class="fa' not in page and ">▶<" in page.replace("\n", "").replace(" ", "")


def test_a_widget_becomes_a_static_picture_with_its_image_caption_and_control(exported):
    _, page = exported
    standin = page[page.index('class="gpt2lab-standin"'):]
    assert "<b>the caption</b>" in standin and "step <b>2</b>" in standin
    assert 'src="data:image/png;base64,' in standin
    assert "application/vnd.jupyter.widget-view+json" not in page


def test_student_notebook_is_the_learners_notebook(exported):
    out, _ = exported
    nb = nbformat.read(out / "student" / "01_demo.ipynb", as_version=4)
    assert "jupytext" not in nb.metadata                 # no pairing: saving never writes a .py
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    assert tags == ["exercise", "check"]
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_remote_refs_finds_what_would_be_fetched():
    page = ('<script src="https://cdn/x.js"></script><link rel="stylesheet" href="//cdn/y.css">'
            '<style>@font-face{src:url("https://f/z.woff")}</style><a href="https://ok">a link</a>'
            '<img src="data:image/png;base64,AAAA">')
    assert len(offline_html.remote_refs(page)) == 3


def test_every_lesson_has_an_exercise_and_a_check_and_no_solution_cell():
    for src in sorted((ROOT / "notebooks").glob("0[1-6]_*.py")):
        tags = [t for c in jupytext.read(src).cells for t in c.get("metadata", {}).get("tags", [])]
        assert "exercise" in tags and "check" in tags, f"{src.name}: needs an exercise cell and its check cell"
        assert "solution" not in tags, f"{src.name}: solutions live in gpt2lab.explain.solutions, not in the lesson"


def test_build_lab_keeps_a_learners_work_unless_forced(tmp_path):
    src = tmp_path / "01_demo.py"
    src.write_text(LESSON)
    lab = tmp_path / "lab"
    assert build_lab.build([src], lab) == [(lab / "01_demo.ipynb", "built")]
    nb = nbformat.read(lab / "01_demo.ipynb", as_version=4)
    nb.cells[-2].source = "def double(x):\n    return x + x   # the learner's work"
    nbformat.write(nb, lab / "01_demo.ipynb")
    assert build_lab.build([src], lab) == [(lab / "01_demo.ipynb", "kept")]
    assert "the learner's work" in (lab / "01_demo.ipynb").read_text()
    assert build_lab.build([src], lab, force=True) == [(lab / "01_demo.ipynb", "built")]
    assert "the learner's work" not in (lab / "01_demo.ipynb").read_text()


def test_missing_source_is_a_clear_error(tmp_path, capsys):
    assert handouts.main([str(tmp_path / "nope.py"), "--out", str(tmp_path)]) == 2
    assert "no such notebook source" in capsys.readouterr().err
    assert build_lab.main([str(tmp_path / "nope.py"), "--out", str(tmp_path)]) == 2
    assert "no such notebook source" in capsys.readouterr().err
