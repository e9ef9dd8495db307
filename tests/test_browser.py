"""A learner's view: each lesson opened in JupyterLab in a real (headless) browser, Run All, no error output,
then one control of every widget moved and its picture seen to change. Screenshots go to build/artifacts/.

Needs Debian's chromium (`make test` installs it when it can). Outside CI, a machine without chromium skips
these tests with the reason; in CI they must run.

Lesson 01 runs in every `make test` (it needs no course model, so it takes well under a minute). The other
lessons are marked `slow` (deselected by default): they load the course model, which the first of them trains
into build/cache, the cache `make test-notebooks` uses. Run them all with `pytest -m slow tests/test_browser.py`
(about a minute a lesson once the course model is cached, on a quiet 2-core machine).
"""
import os
import re
import shutil
import time
from pathlib import Path

import jupytext
import pytest

from browser import ARGS, CHROMIUM, jupyter_lab

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "artifacts"
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
DEFAULT = {"01_tokenizing"}   # in every run: fast, no course model
WIDGET = ".jp-OutputArea-output:has(> .jupyter-widgets)"   # the output that holds a widget's view
ERROR = "[data-mime-type='application/vnd.jupyter.error']"

pytestmark = pytest.mark.skipif(not shutil.which("chromium") and not os.environ.get("CI"),
                                reason="needs Debian's chromium (apt-get install chromium)")


def lesson_params():
    for path in LESSONS:
        yield pytest.param(path, id=path.stem, marks=() if path.stem in DEFAULT else (pytest.mark.slow,))


def _run_all(page, timeout_s: float):
    """Run → Run All Cells, then wait until no code cell is queued or unrun (or an error shows)."""
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
    page.get_by_text("Run", exact=True).first.click()
    page.get_by_text("Run All Cells", exact=True).click()
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    page.wait_for_function("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                           ".some(p => p.textContent.includes('*'))", timeout=60_000)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        texts = prompts.all_inner_texts()
        if page.locator(ERROR).count() or not any("*" in t or "[ ]" in t for t in texts):
            return
        page.wait_for_timeout(1000)
    raise AssertionError(f"the lesson did not finish in {timeout_s:.0f} s; prompts: {texts}")


def _picture(widget) -> str:
    """What a widget shows (its images and HTML outputs), without its controls' own state."""
    return widget.evaluate("w => [...w.querySelectorAll('img')].map(i => i.src).join(' ') + "
                           "[...w.querySelectorAll('.widget-html-content')].map(h => h.innerHTML).join(' ')")


def _move_one_control(page, widget) -> str:
    """Move the first control a learner would try; returns what was done."""
    toggles = widget.locator(".widget-toggle-button:not(.mod-active)")
    sliders = widget.locator(".widget-slider .noUi-handle")
    texts = widget.locator("textarea, input[type='text']")
    if toggles.count():
        toggles.first.click()
        return f"clicked {toggles.first.inner_text()!r}"
    if sliders.count():
        readout = widget.locator(".widget-slider .widget-readout").first
        before = readout.inner_text()
        sliders.first.click()
        for key in ("ArrowRight", "ArrowLeft"):   # right; a slider already at its maximum goes left
            page.keyboard.press(key)
            page.keyboard.press(key)
            if readout.inner_text() != before:
                break
        return f"slider {before} -> {readout.inner_text()}"
    if texts.count():
        texts.first.click()
        page.keyboard.press("End")
        page.keyboard.type(" king")
        page.keyboard.press("Enter")
        return "typed ' king'"
    raise AssertionError(f"a widget with no control a learner can move: {widget.inner_html()[:600]}")


def _save_figures(page, stem: str) -> None:
    """A screenshot of every picture that is not a widget (figures, animations), for a person to review."""
    figures = page.locator(".jp-OutputArea-output:has(> img), .jp-OutputArea-output:has(.animation)")
    for k in range(figures.count()):
        figures.nth(k).scroll_into_view_if_needed()
        figures.nth(k).screenshot(path=str(ARTIFACTS / f"browser-{stem}-figure{k}.png"))


def _check_widgets(page, stem: str) -> list[str]:
    """Every widget: a control moved, the picture changed (or, for a dashboard, its run done and drawn)."""
    done = []
    for old in ARTIFACTS.glob(f"browser-{stem}-widget*.png"):   # a widget skipped below must not leave an older
        old.unlink()                                             # run's picture under its number
    widgets = page.locator(WIDGET)
    for k in range(widgets.count()):
        widget = widgets.nth(k)
        widget.scroll_into_view_if_needed()
        shot = ARTIFACTS / f"browser-{stem}-widget{k}.png"
        if widget.get_by_text("Start", exact=True).count():   # a training dashboard: its run is the motion
            page.wait_for_function("w => /done|stopped|from log/.test(w.innerText)", arg=widget.element_handle(),
                                   timeout=300_000)
            assert widget.locator("img").count() >= 2, f"{stem}: dashboard {k} has no charts"
            widget.screenshot(path=str(shot))
            done.append(f"dashboard {k}: run shown")
            continue
        if widget.locator(".widget-hprogress").count() and not widget.locator("input, textarea, select").count():
            continue   # a progress bar (tqdm, e.g. training the course model): nothing to move
        before = _picture(widget)
        what = _move_one_control(page, widget)
        for _ in range(120):   # the kernel redraws; on a busy machine that can take seconds
            page.wait_for_timeout(500)
            if _picture(widget) != before:
                break
        else:
            raise AssertionError(f"{stem}: widget {k}: {what}, but its picture did not change")
        page.wait_for_timeout(300)
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(shot))
        done.append(f"widget {k}: {what}")
    return done


@pytest.mark.parametrize("lesson", list(lesson_params()))
def test_lesson_runs_in_jupyterlab_and_every_widget_responds(lesson, tmp_path):
    from playwright.sync_api import sync_playwright
    nb = tmp_path / f"{lesson.stem}.ipynb"
    notebook = jupytext.read(lesson)
    notebook.metadata.pop("jupytext", None)  # a plain notebook: no pairing with a .py beside it
    jupytext.write(notebook, nb)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cache = os.environ.get("GPT2LAB_CACHE", str(ROOT / "build" / "cache"))
    with jupyter_lab(tmp_path, GPT2LAB_CACHE=cache) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/lab/tree/{nb.name}")
            _run_all(page, timeout_s=900)
            errors = page.locator(ERROR)
            assert errors.count() == 0, f"{lesson.stem}: a cell raised:\n{errors.first.inner_text()[-2000:]}"
            assert page.get_by_text("Error displaying widget").count() == 0, f"{lesson.stem}: a widget did not show"
            page.screenshot(path=str(ARTIFACTS / f"browser-{lesson.stem}.png"))
            _save_figures(page, lesson.stem)
            done = _check_widgets(page, lesson.stem)
        finally:
            browser.close()
    expected = len(re.findall(r"^(?:\w+ = )?[A-Z]\w+(?:Playground|Stepper|View|Explorer|Dashboard)[.(]",
                              lesson.read_text(), flags=re.M))
    assert len(done) >= expected, f"{lesson.stem}: {expected} widgets in the source, {len(done)} checked: {done}"
