"""widgets.standin: a widget's pictures over its first control's values, for pages without a kernel."""
import ipywidgets as W

from gpt2lab.widgets.standin import control_animation, control_values, first_control


def test_first_control_skips_text_and_disabled_controls():
    text, off = W.Text(value="x"), W.IntSlider(disabled=True)
    dropdown = W.Dropdown(options=[("one", 1), ("two", 2)])
    assert first_control(W.VBox([text, W.HBox([off, dropdown])])) is dropdown
    assert first_control(W.VBox([text])) is None


def test_control_values_are_evenly_spaced_with_both_ends():
    assert control_values(W.IntSlider(min=0, max=4), 12) == [0, 1, 2, 3, 4]
    picks = control_values(W.IntSlider(min=0, max=99), 12)
    assert len(picks) == 12 and picks[0] == 0 and picks[-1] == 99
    assert control_values(W.Dropdown(options=[("one", 1), ("two", 2)]), 12) == [1, 2]


def test_frames_follow_the_control_and_it_is_put_back():
    slider, caption = W.IntSlider(value=1, min=0, max=2, description="k"), W.HTML()
    slider.observe(lambda change: setattr(caption, "value", f"at {change['new']}"), names="value")
    caption.value = "at 1"
    page = control_animation(W.VBox([slider, caption]))
    assert [page.count(f"<div>at {k}</div>") for k in range(3)] == [1, 1, 1]
    assert slider.value == 1 and caption.value == "at 1"
    assert 'data-label="1" style="display:block"' in page
    assert control_animation(W.VBox([W.HTML("no control")])) is None
