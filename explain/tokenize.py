"""The data behind lesson 1's pictures: which characters each token covers, and BPE merge by merge.

Works with gpt2lab's readable `BPETokenizer` and with a tiktoken `Encoding` alike (the reference GPT-2).
Every token is drawn in `palette.token_color(id)`, its colour in every lesson.
"""
from __future__ import annotations

import html
import shutil
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gpt2lab.datasets.bpe import chunk_counts, learn_merges, merge_pair, presplit, to_utf8
from gpt2lab.datasets.tokenizer import GPT2_PATTERN
from gpt2lab.explain.palette import FIGURE_MAX_WIDTH_IN, RUNNING_EXAMPLE, shape_title, token_color, token_tint


# ---------------------------------------------------------------------------------------------------------
# Tokens of a text, as spans of characters
# ---------------------------------------------------------------------------------------------------------

class TokenSpan(NamedTuple):
    """One token of a text: characters text[start:end], its id, its bytes, its colour."""
    start: int
    end: int
    id: int
    bytes: bytes
    colour: str


def encode_ids(tokenizer, text: str) -> list[int]:
    """Ids of `text` with special-token strings read as plain text (BPETokenizer or tiktoken Encoding)."""
    return tokenizer.encode_ordinary(text)


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The bytes of one token (BPETokenizer.vocab, or tiktoken's decode_single_token_bytes)."""
    if hasattr(tokenizer, "vocab"):
        return tokenizer.vocab[token_id]
    return tokenizer.decode_single_token_bytes(token_id)


def clean_text(text) -> tuple[str, list[str]]:
    """Text a tokenizer can take, and warnings about what was changed.

    bytes that are not valid UTF-8 are decoded with U+FFFD in place of the bad bytes; lone surrogates
    (half of a UTF-16 pair, which UTF-8 cannot hold) become U+FFFD, as tiktoken does.
    """
    warnings = []
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            warnings.append(f"the input is not valid UTF-8 ({e.reason} at byte {e.start}); "
                            "bad bytes are shown as \ufffd")
            text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"clean_text: expected str or bytes, got {type(text).__name__}")
    clean = to_utf8(text).decode("utf-8")
    if clean != text:
        warnings.append("the text holds lone surrogates (half of a UTF-16 pair); they are shown as \ufffd")
    return clean, warnings


def token_spans(text: str, tokenizer) -> list[TokenSpan]:
    """Tokenize `text` and say which characters each token covers: [TokenSpan(start, end, id, bytes, colour)].

    A token holding only part of a character's UTF-8 bytes (an emoji cut in two) covers that whole
    character, so neighbouring spans may overlap on it; the bytes say which part is whose.
    """
    text, _ = clean_text(text)
    # char_byte[k]: the byte offset where character k starts in the UTF-8 encoding.
    char_byte, offset = [], 0
    for ch in text:
        char_byte.append(offset)
        offset += len(ch.encode("utf-8"))
    spans, pos = [], 0
    for token_id in encode_ids(tokenizer, text):
        b = token_bytes(tokenizer, token_id)
        start = bisect_right(char_byte, pos) - 1
        end = bisect_right(char_byte, pos + len(b) - 1)
        spans.append(TokenSpan(start, end, token_id, b, token_color(token_id)))
        pos += len(b)
    return spans


def token_stats(text: str, spans: list) -> dict:
    """Counts of a tokenized text: characters, UTF-8 bytes, tokens, characters per token, bytes per token."""
    n_chars, n_bytes, n_tokens = len(text), len(to_utf8(text)), len(spans)
    return {"n_chars": n_chars, "n_bytes": n_bytes, "n_tokens": n_tokens,
            "chars_per_token": n_chars / n_tokens if n_tokens else 0.0,
            "bytes_per_token": n_bytes / n_tokens if n_tokens else 0.0}


def token_label(token: bytes) -> str:
    """How a token is written on screen: spaces as '␣', newlines as '↵', tabs as '→'; a token that is
    not whole UTF-8 characters (part of an emoji) as its bytes in hex, e.g. '<f0 9f>'."""
    try:
        text = token.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + token.hex(" ") + ">"
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "→").replace("\r", "⏎")


def token_labels(ids, tokenizer=None) -> list[str]:
    """token_label of each token id ('␣be' for ' be'); tokenizer: a tiktoken-style encoding, default GPT-2's."""
    if tokenizer is None:
        from gpt2lab.datasets import gpt2_encoding
        tokenizer = gpt2_encoding()
    return [token_label(tokenizer.decode_single_token_bytes(int(i))) for i in ids]


def spans_html(spans: list[TokenSpan], max_tokens: int | None = None, show_ids: bool = True,
               highlight: frozenset = frozenset()) -> str:
    """HTML of coloured token boxes (hover one for its id and bytes), then the list of ids below.

    Tokens whose id is in `highlight` get a thick black border (the token just made by a merge).
    """
    shown = spans if max_tokens is None else spans[:max_tokens]
    boxes = []
    for s in shown:
        tip = html.escape(f"id {s.id}  bytes {s.bytes!r}", quote=True)
        label = html.escape(token_label(s.bytes))
        border = "2px solid black" if s.id in highlight else f"1px solid {s.colour}"
        # the token's tint behind black text, its colour as the frame: the same box as the merge animation's
        boxes.append(f'<span title="{tip}" style="background:{token_tint(s.id)};border:{border};'
                     f'border-radius:3px;margin:1px;padding:0 2px;font-family:monospace">{label}</span>'
                     + ("<br>" if s.bytes.endswith(b"\n") else ""))
    out = '<div style="line-height:1.9;white-space:pre-wrap">' + "".join(boxes) + "</div>"
    if show_ids:
        ids = ", ".join(str(s.id) for s in shown) + (", ..." if len(shown) < len(spans) else "")
        out += f'<div style="font-family:monospace;font-size:85%;color:#555">ids: [{ids}]</div>'
    return out


def check_same_ids(text: str, ours, reference) -> bool:
    """Compare two tokenizers on `text`; prints OK with the count, or the first position that differs."""
    a, b = encode_ids(ours, text), encode_ids(reference, text)
    if a == b:
        print(f"OK: {len(a):,} token ids identical")
        return True
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"NOT OK: first difference at token {k}: ours {a[k:k + 5]} vs reference {b[k:k + 5]} "
          f"(lengths {len(a)} vs {len(b)})")
    return False


# ---------------------------------------------------------------------------------------------------------
# BPE merge by merge, on one sentence
# ---------------------------------------------------------------------------------------------------------

@dataclass
class MergeStep:
    """The state of BPE training after `index` merges (index 0: raw UTF-8 bytes, nothing merged yet).

    pair, new_id, count: the merge made at this step (pair of ids -> new_id, seen `count` times);
    None at step 0. chunks: the token ids of each pre-split chunk after the merge. vocab: id -> bytes.
    """
    index: int
    pair: tuple[int, int] | None
    new_id: int | None
    count: int
    chunks: list[list[int]]
    vocab: dict[int, bytes]

    @property
    def ids(self) -> list[int]:
        """The whole sequence after this step, chunks joined."""
        return [i for chunk in self.chunks for i in chunk]

    @property
    def new_token(self) -> bytes | None:
        """Bytes of the token made at this step."""
        return None if self.new_id is None else self.vocab[self.new_id]

    def spans(self) -> list[TokenSpan]:
        """This step's tokens as TokenSpans (character offsets counted in bytes: the trace is bytes)."""
        out, pos = [], 0
        for token_id in self.ids:
            n = len(self.vocab[token_id])
            out.append(TokenSpan(pos, pos + n, token_id, self.vocab[token_id], token_color(token_id)))
            pos += n
        return out

    def describe(self) -> str:
        """One line: what this step merged."""
        if self.pair is None:
            return f"start: {len(self.ids)} bytes, one token each"
        a, b = (token_label(self.vocab[i]) for i in self.pair)
        return (f"merge {self.index}: '{a}' + '{b}' -> '{token_label(self.new_token)}' (id {self.new_id}), "
                f"seen {self.count} times; now {len(self.ids)} tokens")


def bpe_trace(text: str = RUNNING_EXAMPLE, n_merges: int = 10, pattern: str = GPT2_PATTERN) -> list[MergeStep]:
    """Train BPE on `text` alone and record every state: [step 0 (bytes), step 1, ..., step n].

    Stops early when no pair occurs twice (a merge of a pair seen once teaches nothing).
    """
    text, _ = clean_text(text)
    counts = chunk_counts(text, pattern, special=())
    chunks = [list(to_utf8(c)) for c in presplit(text, pattern)]
    vocab = {i: bytes([i]) for i in range(256)}
    steps = [MergeStep(0, None, None, 0, chunks, dict(vocab))]
    for pair, new_id, count in learn_merges(counts, n_merges):
        if count < 2:
            break
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        chunks = [merge_pair(c, pair, new_id) for c in chunks]
        steps.append(MergeStep(len(steps), pair, new_id, count, chunks, dict(vocab)))
    return steps


# ---------------------------------------------------------------------------------------------------------
# Pictures: one step as coloured boxes, and an animation over the steps
# ---------------------------------------------------------------------------------------------------------

def layout_step(step: MergeStep, row_bytes: int = 48) -> list[tuple[float, int, int]]:
    """Where each token's box goes: [(x, row, token id)]; a box is as wide as its bytes, a small gap
    separates pre-split chunks, and a box that would pass `row_bytes` starts a new row."""
    boxes, x, row = [], 0.0, 0
    for chunk in step.chunks:
        for token_id in chunk:
            width = len(step.vocab[token_id])
            if x + width > row_bytes + 1e-9 and x > 0:
                x, row = 0.0, row + 1
            boxes.append((x, row, token_id))
            x += width
        x += 0.25  # a visible gap between pre-split chunks: merges never cross it
        if step.vocab[chunk[-1]].endswith(b"\n"):
            x, row = 0.0, row + 1   # a line of text ends: so does the row of boxes
    return boxes


def draw_merge_step(step: MergeStep, ax=None, row_bytes: int = 48, n_rows: int | None = None):
    """Draw one step as boxes, one per token, each as wide as its bytes, in the token's colour.

    Tokens made at this step have a thick black edge. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    boxes = layout_step(step, row_bytes)
    n_rows = n_rows or (1 + max((row for _, row, _ in boxes), default=0))
    n_rows = max(n_rows, 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(FIGURE_MAX_WIDTH_IN, 0.3 * row_bytes + 1), 0.7 * n_rows + 1.2))
    ax.clear()
    for x, row, token_id in boxes:
        width, colour, new = len(step.vocab[token_id]), token_color(token_id), token_id == step.new_id
        ax.add_patch(Rectangle((x + 0.05, -row - 0.9), width - 0.1, 0.8, facecolor=token_tint(token_id),
                               edgecolor="black" if new else colour, linewidth=2.5 if new else 1.0))
        ax.text(x + width / 2, -row - 0.5, token_label(step.vocab[token_id]), ha="center", va="center",
                fontsize=9, family="monospace")
    ax.set_xlim(-0.2, row_bytes + 3)
    ax.set_ylim(-n_rows - 0.1, 0.1)
    ax.axis("off")
    ax.set_title(shape_title("bpe", (f"T={len(step.ids)}",), step=step.index) + "\n" + step.describe(),
                 fontsize=10, loc="left")
    return ax.figure


def merge_animation(trace: list[MergeStep], interval: int = 900):
    """A matplotlib FuncAnimation showing the trace one merge per frame (`interval` ms per frame)."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    # Every frame gets the same number of rows, so the picture does not jump.
    n_rows = 1 + max(row for step in trace for _, row, _ in layout_step(step))
    fig = draw_merge_step(trace[0], n_rows=n_rows)
    ax = fig.axes[0]

    def frame(k):
        draw_merge_step(trace[k], ax=ax, n_rows=n_rows)
        return ax.patches

    anim = FuncAnimation(fig, frame, frames=len(trace), interval=interval, repeat=True)
    plt.close(fig)   # shown through anim.to_jshtml(), not as a stray static figure
    return anim


def save_animation(anim, path: str | Path, fps: int = 1) -> Path:
    """Write an animation to `path`: .gif with Pillow; .mp4 only where ffmpeg is installed."""
    from matplotlib.animation import FFMpegWriter, PillowWriter

    path = Path(path)
    if path.suffix == ".gif":
        writer = PillowWriter(fps=fps)
    elif path.suffix == ".mp4":
        if shutil.which("ffmpeg") is None:
            raise RuntimeError(f"save_animation: writing {path.name} needs ffmpeg, which is not installed; "
                               "save a .gif instead")
        writer = FFMpegWriter(fps=fps)
    else:
        raise ValueError(f"save_animation: expected a .gif or .mp4 path, got {path.name!r}")
    anim.save(str(path), writer=writer)
    return path


__all__ = ["TokenSpan", "encode_ids", "token_bytes", "clean_text", "token_spans", "token_stats", "token_label", "token_labels",
           "spans_html", "check_same_ids", "MergeStep", "bpe_trace", "draw_merge_step", "merge_animation",
           "save_animation"]
