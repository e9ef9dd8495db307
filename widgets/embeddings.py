"""Lesson 2's widgets: nearest neighbours in the token table, and position similarity across training.

Thin views over `gpt2lab.explain.embeddings`. Controls are attributes (`.text`, `.k`, `.slider`), output is in
HTML / Image widgets (`.result.value`, `.message.value`, `.image.value`), so a test sets a control's `.value`
and reads the result with no browser. Bad input (empty text, a word that is several tokens) gives a message.
"""
from __future__ import annotations


import ipywidgets as W
import numpy as np

from gpt2lab.explain.embeddings import (nearest_neighbours, neighbours_html, position_similarity,
                                        position_similarity_figure)
from gpt2lab.explain.tokenize import token_labels
from gpt2lab.explain.palette import FAIL_COLOR

from ._view import note, player, show_figure




def resolve_token(enc, text: str) -> tuple[int | None, str]:
    """The single token id `text` stands for, and a message ("" when all is well).

    "king" is tried first as " king" (GPT-2 glues the space in front of a word to the word, and mid-sentence is
    where a word mostly occurs), then as typed. A text that is several tokens or none gives (None, message
    saying what it splits into)."""
    if not text:
        return None, "Type a word (e.g. king) to see its nearest neighbours."
    tries = (" " + text, text) if text[0].isalnum() else (text,)
    for candidate in tries:
        ids = enc.encode_ordinary(candidate)
        if len(ids) == 1:
            return ids[0], ""
    pieces = " | ".join(token_labels(enc.encode_ordinary(text), enc))
    return None, f"{text!r} is not one token: GPT-2 cuts it into [{pieces}]. Try one of those pieces."


class NeighbourExplorer(W.VBox):
    """Type a token, see the k tokens whose embeddings point most nearly the same way (cosine similarity).

    wte: (V, C) token table; enc: the GPT-2 tokenizer; candidates: ids to search among (e.g. tokens seen in
    training; default all); counts: (V,) training counts, to warn about tokens the model never saw.
    """

    def __init__(self, wte: np.ndarray, enc, candidates=None, counts=None, text: str = "king", k: int = 10):
        self.wte, self.enc, self.candidates, self.counts = np.asarray(wte), enc, candidates, counts
        self.text = W.Text(value=text, description="token", placeholder="a word, e.g. king")
        self.k = W.IntSlider(value=k, min=1, max=30, description="k")
        self.message, self.result = W.HTML(), W.HTML()
        super().__init__([W.HBox([self.text, self.k]), self.message, self.result])
        self.text.observe(self.render, names="value")
        self.k.observe(self.render, names="value")
        self.render()

    def render(self, change=None):
        """Look the token up and redraw; any problem becomes a message, never a traceback."""
        try:
            self._render()
        except Exception as e:  # a widget reports, it never throws into the page
            self.result.value = ""
            self.message.value = note(f"Something went wrong: {type(e).__name__}: {e}", FAIL_COLOR)

    def _render(self):
        token_id, msg = resolve_token(self.enc, self.text.value)
        if token_id is None:
            self.result.value, self.message.value = "", note(msg, FAIL_COLOR if self.text.value else "#555")
            return
        warn = ""
        if self.counts is not None and self.counts[token_id] == 0:
            warn = "The model never saw this token in training: its row is still random, so are its neighbours."
        self.message.value = note(warn, FAIL_COLOR)
        nbrs = nearest_neighbours(self.wte, token_id, self.k.value, self.candidates)
        self.result.value = neighbours_html(self.enc, token_id, nbrs)


class PositionSimilarityView(W.VBox):
    """A slider over training checkpoints: the cosine similarity of every pair of position embeddings.

    wpes: list of (maxT, C) tables, one per checkpoint; steps: their optimizer steps; T: positions shown.
    """

    def __init__(self, wpes: list, steps, T: int = 64):
        if not len(wpes):
            raise ValueError("PositionSimilarityView: no checkpoints given (wpes is empty)")
        self.wpes, self.steps, self.T = [np.asarray(w) for w in wpes], list(steps), T
        last = len(self.wpes) - 1
        self.slider, self.play, controls = player("checkpoint", last, value=last)
        self.caption, self.image = W.HTML(), W.Image(format="png")
        super().__init__([controls, self.caption, self.image])
        self.slider.observe(self.render, names="value")
        self.render()

    def render(self, change=None):
        i = self.slider.value
        self.sim = position_similarity(self.wpes[i], self.T)
        self.caption.value = (f"<b>step {self.steps[i]}</b>: red = two positions' rows point alike (cos +1), "
                              "blue = opposite (cos -1), white = unrelated; the diagonal is each position with itself")
        show_figure(self.image, position_similarity_figure(self.sim, self.steps[i]), tight=True)


__all__ = ["NeighbourExplorer", "PositionSimilarityView", "resolve_token"]
