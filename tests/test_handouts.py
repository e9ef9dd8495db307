"""tools/handouts.py and tools/build_lab.py: student notebooks, and HTML that works offline."""
import os
import re
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "artifacts"
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
slider, play, row = player("step", 4, value=2)
image, caption = W.Image(format="png"), W.HTML()

def draw(change=None):
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, slider.value])
    image.value, caption.value = figure_png(fig), f"<b>the caption at {slider.value}</b>"

slider.observe(draw, names="value")
draw()
W.VBox([caption, row, image])

# %%
W.VBox([W.HTML("<i>no control here</i>"), W.Text(value="typed", description="text"), image])

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


def standins(page):
    return re.findall(r'<div class="gpt2lab-standin">(.*?)A stand-in for an interactive widget', page, re.S)


def test_a_widget_with_a_slider_becomes_its_pictures_over_the_sliders_values(exported):
    _, page = exported
    player = standins(page)[0]
    frames = [re.match(r'(\d)" style="display:(\w+)">(.*)', chunk, re.S).groups()
              for chunk in player.split('data-label="')[1:]]
    assert [label for label, _, _ in frames] == ["0", "1", "2", "3", "4"]
    assert all(f"the caption at {label}" in body for label, _, body in frames)
    pictures = [re.search(r'src="(data:image/png;base64,[^"]+)"', body).group(1) for _, _, body in frames]
    assert len(set(pictures)) == 5                       # each value drew its own picture
    assert [shown for _, shown, _ in frames] == ["none", "none", "block", "none", "none"]   # where the lesson left it
    assert 'type="range" value="2"' in player
    assert "application/vnd.jupyter.widget-view+json" not in page


def test_a_widget_without_a_slider_becomes_a_static_picture(exported):
    _, page = exported
    picture = standins(page)[1]
    assert "<i>no control here</i>" in picture and "text <b>typed</b>" in picture
    assert 'src="data:image/png;base64,' in picture


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
    for src in sorted((ROOT / "notebooks").glob("0[1-8]_*.py")):
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


@pytest.mark.skipif(not shutil.which("chromium") and not os.environ.get("CI"),
                    reason="needs Debian's chromium (apt-get install chromium)")
def test_the_page_works_in_a_browser_from_file_with_the_network_cut(exported):
    """Opened from file:// with every network request refused: math is laid out, the animation's buttons step
    its frames, the widget stand-in's slider shows another picture."""
    from playwright.sync_api import sync_playwright

    from browser import ARGS, CHROMIUM
    out, _ = exported
    fetched = []

    def refuse(route):
        if not route.request.url.startswith(("file:", "data:")):
            fetched.append(route.request.url)
            return route.abort()
        return route.continue_()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.route("**/*", refuse)
        page.goto((out / "html" / "01_demo.html").as_uri())
        frac = page.locator("math mfrac").first.bounding_box()
        assert frac and frac["height"] > frac["width"] / 4      # a fraction drawn as a fraction, not text
        frame = page.locator("img[id^=_anim_img]").first
        first = frame.get_attribute("src")
        page.locator("button[title='Next frame']").first.click()
        assert frame.get_attribute("src") != first
        assert page.locator("button[title='Play']").first.inner_text().strip() == "▶"
        slider = page.locator(".gpt2lab-standin-player input[type=range]").first
        slider.evaluate("e => { e.value = 4; e.dispatchEvent(new Event('input')); }")
        shown = page.locator(".gpt2lab-standin-player div[data-label]:visible")
        assert shown.count() == 1 and shown.first.get_attribute("data-label") == "4"
        assert "the caption at 4" in shown.first.inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "handout-offline.png"), full_page=True)
        browser.close()
    assert fetched == []
