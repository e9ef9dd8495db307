"""Pictures you can read (COURSE.md, "One visual language"): palette contrast, text size, images shown at the
size they are drawn. No browser: the widgets are built and their PNGs and layouts read back."""
import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from gpt2lab.explain import palette  # noqa: E402
from gpt2lab.explain.palette import (FIGURE_MAX_WIDTH_IN, MIN_FONT_PT, TOKEN_PALETTE, contrast_ratio,  # noqa: E402
                                     token_color, token_tint)
from gpt2lab.gpt2 import GPT2, GPTConfig  # noqa: E402
from gpt2lab.widgets import _view  # noqa: E402
from gpt2lab.widgets._view import CSS_DPI, MAX_HEIGHT_PX, PIXEL_RATIO, png_size  # noqa: E402

MODEL_CONFIG = GPTConfig(block_size=32, vocab_size=50257, n_layer=2, n_head=4, n_embd=32)


# ---- colours
def test_contrast_ratio_is_the_wcag_formula():
    assert contrast_ratio("#000000") == pytest.approx(21.0)
    assert contrast_ratio("#ffffff") == pytest.approx(1.0)
    assert contrast_ratio("#777777") == pytest.approx(4.48, abs=0.01)   # the usual "mid grey" example
    assert contrast_ratio("#ff7f0e") < 3   # matplotlib's tab:orange, the old palette's, is too pale as text
    with pytest.raises(ValueError, match="rrggbb"):
        contrast_ratio("orange")


@pytest.mark.parametrize("name", ["TOKEN_PALETTE", "HEAD_PALETTE", "OK_COLOR", "FAIL_COLOR"])
def test_every_palette_colour_reads_on_white(name):
    colours = getattr(palette, name)
    for c in (colours,) if isinstance(colours, str) else colours:
        assert contrast_ratio(c) >= 3.0, f"{name} colour {c}: contrast {contrast_ratio(c):.2f} on white, need 3:1"


def test_black_text_reads_on_every_token_box():
    for i in range(len(TOKEN_PALETTE) * 5):
        assert contrast_ratio("#000000", token_tint(i)) >= 7.0


def test_one_colour_per_token_in_every_html_view():
    from gpt2lab.datasets import gpt2_encoding
    from gpt2lab.explain.samples import samples_html
    from gpt2lab.explain.tokenize import spans_html, token_spans
    enc = gpt2_encoding()
    tid = enc.encode(" question")[0]
    for page in (spans_html(token_spans(" question", enc)), samples_html("To be", [(0, " question")])):
        assert token_tint(tid) in page and token_color(tid) in page


# ---- text size and figure size, on the figures the lessons draw
def _fonts_and_width(fig):
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes), fig.get_figwidth(), fig.get_figheight()


def _lesson_figures():
    """(name, figure) for the lesson figures that carry token labels, small text or many panels."""
    from gpt2lab.datasets import gpt2_encoding
    from gpt2lab.explain import attention, cudatrace, embeddings, tokenize
    torch.manual_seed(0)
    model = GPT2(MODEL_CONFIG).eval()
    steps = attention.attention_steps(model, palette.RUNNING_EXAMPLE, 0, 0)
    yield "heatmap weights", attention.heatmap(steps, "weights")
    yield "heatmap q", attention.heatmap(steps, "q")
    yield "steps_figure", attention.steps_figure(steps)
    yield "all_heads", attention.all_heads_figure(model)
    yield "scale_figure", attention.scale_figure()
    row = steps.scaled[5]
    yield "online_softmax", attention.online_softmax_figure(attention.online_softmax_trace(row, 4), row)
    frames = [attention.TrainingFrame(0, steps.weights, steps.tokens, steps.ids, 0, 0)]
    yield "attention_animation", attention.attention_animation(frames)._fig
    trace = tokenize.bpe_trace(palette.RUNNING_EXAMPLE * 3, 12)
    yield "merge_step", tokenize.draw_merge_step(trace[-1])
    enc = gpt2_encoding()
    ids = enc.encode(palette.RUNNING_EXAMPLE)
    wte = model.transformer.wte.weight.detach().numpy()
    wpe = model.transformer.wpe.weight.detach().numpy()
    labels = [tokenize.token_label(enc.decode_single_token_bytes(i)) for i in ids]
    yield "embedding_figure", embeddings.embedding_figure(wte, wpe, ids, labels)
    coords = np.random.default_rng(0).normal(size=(2, len(ids), 2))
    yield "pca_animation", embeddings.pca_animation(coords, ids, labels, [0, 1])._fig
    yield "position_similarity", embeddings.position_similarity_figure(embeddings.position_similarity(wpe, 16))
    yield "cuda_reduction", _reduction_stand_in(cudatrace)
    from gpt2lab.explain import gpu_speed
    from gpt2lab.explain import gpu_recorded
    # each figure from the newest record that has its data (a newer record may lack a section)
    for draw, section in ((gpu_speed.ops_figure, "op_ratio"), (gpu_speed.launch_figure, "launch_us"),
                          (gpu_speed.rate_figure, "tflops")):
        record = next(r for r in reversed(gpu_recorded.RECORDS) if section in r)
        yield draw.__name__, draw(gpu_speed.SpeedReport(record, live=False))


def _reduction_stand_in(cudatrace):
    """A v2-shaped trace built by hand (the real one runs the CUDA simulator in a subprocess)."""
    block = 4
    steps = [cudatrace.ReductionStep(0, "store", 0, [(t, t) for t in range(block)], [(t, t) for t in range(block)],
                                     np.arange(block, dtype=float))]
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    cudatrace._draw_step(ax, type("T", (), {"block": block})(), steps[0])
    return fig


@pytest.fixture(scope="module")
def lesson_figures():
    figs = list(_lesson_figures())
    yield figs
    plt.close("all")


@pytest.mark.filterwarnings("ignore:Animation was deleted")   # only their first frame is looked at
@pytest.mark.filterwarnings("ignore:More than 20 figures")     # all open at once, closed by the fixture
def test_lesson_figures_have_text_of_9pt_and_fit_the_page(lesson_figures):
    small, wide = [], []
    for name, fig in lesson_figures:
        font, width, height = _fonts_and_width(fig)
        if font < MIN_FONT_PT:
            small.append(f"{name}: {font} pt")
        if width > FIGURE_MAX_WIDTH_IN:   # wider than the output: the browser shrinks it, and its text with it
            wide.append(f"{name}: {width:.1f} in")
    assert not small, f"text below {MIN_FONT_PT} pt: {small}"
    assert not wide, f"wider than {FIGURE_MAX_WIDTH_IN} in: {wide}"


# ---- widget images: drawn at the size shown, for the pixel ratio, none taller than the screen
def _images(widget):
    """Every Image widget inside `widget`, depth first."""
    import ipywidgets as W
    if isinstance(widget, W.Image):
        yield widget
    for child in getattr(widget, "children", ()):
        yield from _images(child)


def _assert_shown_as_drawn(widget, name):
    images = [im for im in _images(widget) if im.value]
    assert images, f"{name}: no image drawn"
    for im in images:
        w, h = png_size(im.value)
        css = im.layout.width
        assert css and css.endswith("px"), f"{name}: image has no CSS width, so the page stretches it ({css})"
        css_w = float(css[:-2])
        # drawn for PIXEL_RATIO: the PNG has ratio x the pixels of the width it is shown at, so never upscaled
        assert w >= css_w * PIXEL_RATIO - 1, f"{name}: a {w}-px PNG shown {css_w:.0f} CSS px wide is upscaled"
        assert w <= css_w * PIXEL_RATIO + 1, f"{name}: a {w}-px PNG shown {css_w:.0f} px wide wastes pixels"
        assert h / PIXEL_RATIO <= MAX_HEIGHT_PX, f"{name}: {h / PIXEL_RATIO:.0f} CSS px tall, over {MAX_HEIGHT_PX}"
        assert css_w <= FIGURE_MAX_WIDTH_IN * CSS_DPI + 1, f"{name}: {css_w:.0f} CSS px wide, wider than the output"


def _widgets():
    from gpt2lab.explain.gradflow import gradflow_over_training
    from gpt2lab.widgets import (AttentionStepper, BackpropStepper, GeluExplorer, GradFlowView, LayerNormExplorer,
                                 PositionSimilarityView, SamplingLab, TrainingDashboard)
    torch.manual_seed(0)
    model = GPT2(MODEL_CONFIG).eval()
    rng = np.random.default_rng(0)
    yield "PositionSimilarityView", PositionSimilarityView([rng.normal(size=(64, 32))] * 2, [0, 25])
    yield "BackpropStepper", BackpropStepper()
    yield "AttentionStepper", AttentionStepper(model)
    yield "AttentionStepper, long text", AttentionStepper(model, text="to be or not " * 7)
    yield "LayerNormExplorer", LayerNormExplorer(rng.normal(size=128))
    cfg = GPTConfig.preset("tiny", vocab_size=50, block_size=8, n_layer=2)
    x = rng.integers(0, 50, (2, 8))
    yield "GradFlowView", GradFlowView(gradflow_over_training([(0, 0)], x, x, load=lambda _: GPT2(cfg)))
    dash = TrainingDashboard()
    for s in range(1, 6):
        dash.update({"step": s, "loss": 5.0 - 0.1 * s, "tokens_per_s": 1000.0 + s}, force=True)
    yield "TrainingDashboard", dash
    yield "GeluExplorer", GeluExplorer()
    torch.manual_seed(0)
    yield "SamplingLab", SamplingLab(GPT2(GPTConfig(block_size=16, vocab_size=50257, n_layer=1, n_head=2,
                                                   n_embd=16)).eval(), n_new=2)


@pytest.mark.parametrize("name,widget", list(_widgets()), ids=lambda v: v if isinstance(v, str) else "")
def test_widget_images_are_shown_at_the_size_they_are_drawn(name, widget):
    _assert_shown_as_drawn(widget, name)


def test_widget_figures_have_text_of_9pt(monkeypatch):
    """Every figure a widget draws, caught on its way to a PNG."""
    seen = []
    real = _view.figure_png

    def spy(fig, *args, **kwargs):
        seen.append(_fonts_and_width(fig)[0])
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(_view, "figure_png", spy)
    names = [name for name, _ in _widgets()]
    assert len(seen) >= len(names)
    assert min(seen) >= MIN_FONT_PT, f"a widget draws {min(seen)}-pt text"


def test_the_reduction_stepper_is_shown_as_drawn():
    """ReductionStepper needs a traced simulator run (a subprocess, a few seconds)."""
    from gpt2lab.explain.cudatrace import trace_layernorm
    from gpt2lab.widgets import ReductionStepper
    inp = np.random.default_rng(1).normal(size=(2, 8)).astype(np.float32)
    w = ReductionStepper(trace_layernorm("v2", inp, block=4))
    _assert_shown_as_drawn(w, "ReductionStepper")
    w.step.value = 2
    _assert_shown_as_drawn(w, "ReductionStepper, phase 2")
