"""gpt2lab.explain.tokenize: token spans, stats, the BPE trace and its pictures."""
from functools import lru_cache

import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.animation import FuncAnimation  # noqa: E402

from gpt2lab.datasets import gpt2_encoding  # noqa: E402
from gpt2lab.datasets.bpe import BPETokenizer, count_pairs  # noqa: E402
from gpt2lab.explain.palette import RUNNING_EXAMPLE, token_color  # noqa: E402
from gpt2lab.explain.tokenize import (bpe_trace, check_same_ids, clean_text,  # noqa: E402
                                      draw_merge_step, layout_step, merge_animation, save_animation,
                                      spans_html, token_label, token_spans, token_stats)


@lru_cache(maxsize=1)
def gpt2():
    return BPETokenizer.from_gpt2()


@pytest.mark.parametrize("tokenizer", [gpt2, gpt2_encoding], ids=["ours", "tiktoken"])
def test_spans_cover_the_running_example(tokenizer):
    tok = tokenizer()
    spans = token_spans(RUNNING_EXAMPLE, tok)
    assert [RUNNING_EXAMPLE[s.start:s.end] for s in spans][:4] == ["To", " be", ",", " or"]
    assert "".join(RUNNING_EXAMPLE[s.start:s.end] for s in spans) == RUNNING_EXAMPLE
    assert all(s.colour == token_color(s.id) for s in spans)
    assert b"".join(s.bytes for s in spans) == RUNNING_EXAMPLE.encode()


def test_spans_of_a_split_character_share_it():
    text = "a👩‍👩‍👧b"      # GPT-2 cuts these emoji between their UTF-8 bytes
    spans = token_spans(text, gpt2())
    assert b"".join(s.bytes for s in spans) == text.encode()
    assert spans[0].start == 0 and spans[-1].end == len(text)
    assert all(0 <= s.start < s.end <= len(text) for s in spans)
    split = [s for s in spans if not _is_utf8(s.bytes)]
    assert split, "expected some tokens holding part of a character"
    for s in split:          # a partial token covers the whole character its bytes belong to
        assert text[s.start:s.end].encode().find(s.bytes) >= 0


def _is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_stats_count_tokens_and_characters():
    spans = token_spans(RUNNING_EXAMPLE, gpt2())
    stats = token_stats(RUNNING_EXAMPLE, spans)
    assert stats["n_tokens"] == len(gpt2_encoding().encode(RUNNING_EXAMPLE))
    assert stats["n_chars"] == 42 and stats["chars_per_token"] == pytest.approx(42 / stats["n_tokens"])
    assert token_stats("", [])["chars_per_token"] == 0.0


def test_clean_text_reports_bad_input():
    assert clean_text("fine") == ("fine", [])
    text, warn = clean_text("a\ud800b")
    assert text == "a\ufffdb" and "surrogate" in warn[0]
    text, warn = clean_text(b"ok\xff\xfe")
    assert text == "ok\ufffd\ufffd" and "not valid UTF-8" in warn[0]
    with pytest.raises(TypeError, match="expected str or bytes"):
        clean_text(42)


def test_token_label_and_html():
    assert token_label(b" the\n") == "␣the↵"
    assert token_label(b"\xf0\x9f") == "<f0 9f>"
    html = spans_html(token_spans("<b>bold</b>&", gpt2()))
    assert "<b>" not in html and "</b>" not in html and "&lt;" in html and "&amp;" in html  # escaped
    spans = token_spans(RUNNING_EXAMPLE, gpt2())
    short = spans_html(spans, max_tokens=3)
    assert short.count('title="id ') == 3 and ", ...]" in short


def test_check_same_ids(capsys):
    assert check_same_ids(RUNNING_EXAMPLE, gpt2(), gpt2_encoding())
    assert "OK" in capsys.readouterr().out
    other = BPETokenizer().train(RUNNING_EXAMPLE * 3, 300)
    assert not check_same_ids(RUNNING_EXAMPLE, other, gpt2_encoding())
    assert "first difference at token 0" in capsys.readouterr().out


def test_trace_of_the_running_example():
    trace = bpe_trace(RUNNING_EXAMPLE, n_merges=50)
    assert trace[0].pair is None and trace[0].ids == list(RUNNING_EXAMPLE.encode())
    assert trace[1].new_token == b" t" and trace[1].count == 3       # " to", " that", " the"
    assert len(trace) == 5                       # after four merges no pair occurs twice
    for before, after in zip(trace, trace[1:]):
        assert len(after.ids) == len(before.ids) - after.count
        assert b"".join(after.vocab[i] for i in after.ids) == RUNNING_EXAMPLE.encode()
        assert count_pairs({tuple(before.ids): 1})[after.pair] >= after.count
    assert "merge 1" in trace[1].describe() and "start" in trace[0].describe()


def test_trace_stops_at_n_merges_and_handles_empty_text():
    assert len(bpe_trace("aaaa bbbb aaaa", n_merges=2)) == 3
    empty = bpe_trace("", n_merges=5)
    assert len(empty) == 1 and empty[0].ids == []


def test_layout_widths_follow_bytes_and_lines():
    step = bpe_trace("ab ab\ncd", n_merges=3)[-1]
    boxes = layout_step(step)
    assert [tid for _, _, tid in boxes] == step.ids
    assert boxes[-1][1] == 1                      # after the newline, a new row


def test_draw_step_titles_with_shape():
    trace = bpe_trace(RUNNING_EXAMPLE, n_merges=3)
    fig = draw_merge_step(trace[2])
    title = fig.axes[0].get_title(loc="left")
    assert title.startswith(f"bpe[step=2]  (T={len(trace[2].ids)})")
    assert len(fig.axes[0].patches) == len(trace[2].ids)
    draw_merge_step(bpe_trace("", 1)[0])          # an empty text draws an empty picture


def test_animation_and_gif(tmp_path):
    trace = bpe_trace("to be or not to be", n_merges=3)
    anim = merge_animation(trace)
    assert isinstance(anim, FuncAnimation)
    path = save_animation(anim, tmp_path / "merges.gif")
    from PIL import Image
    with Image.open(path) as gif:
        assert gif.n_frames == len(trace)
    with pytest.raises(ValueError, match=".gif or .mp4"):
        save_animation(anim, tmp_path / "merges.avi")
