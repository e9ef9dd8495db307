"""What the model says as it learns: one prompt continued by every saved frame of a training run, and how
much of what it says is real words (the word share)."""
from __future__ import annotations

import html
import re
from functools import lru_cache

import torch

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain.palette import token_color, token_tint


def samples_over_training(checkpoints, prompt: str, max_new_tokens: int = 24, seed: int = 0,
                          temperature: float = 0.8, top_k: int | None = 40) -> list[tuple[int, str]]:
    """[(step, continuation)] of `prompt` for each (step, path) in `checkpoints`, same seed for every frame,
    so the differences come from the weights alone."""
    from gpt2lab.gpt2.course import models_over_training
    enc = gpt2_encoding()
    ids = torch.tensor([enc.encode(prompt)], dtype=torch.long)
    out = []
    for step, model in models_over_training(checkpoints):
        gen = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                             generator=torch.Generator().manual_seed(seed))
        out.append((step, enc.decode(gen[0, ids.shape[1]:].tolist())))
    return out


def samples_html(prompt: str, samples: list[tuple[int, str]]) -> str:
    """A table, left-aligned, one row per frame: step | prompt (grey) + continuation, each generated token in a
    box of its course colour (the tokenizer playground's boxes). Newlines in a sample show as ↵ so a row stays
    one block of text instead of breaking into gaps."""
    enc = gpt2_encoding()
    cell = "text-align:left;vertical-align:top;padding:2px 8px"
    rows = []
    for step, text in samples:
        spans = "".join(f"<span style='background:{token_tint(t)};border-bottom:2px solid {token_color(t)}'>"
                        f"{html.escape(enc.decode([t]).replace(chr(10), '↵'))}</span>" for t in enc.encode(text))
        rows.append(f"<tr><td style='{cell};font-variant-numeric:tabular-nums'>{step}</td>"
                    f"<td style='{cell};font-family:monospace'><span style='color:#666'>"
                    f"{html.escape(prompt.replace(chr(10), '↵'))}</span>{spans}</td></tr>")
    return (f"<table style='border-collapse:collapse'><tr><th style='{cell}'>step</th>"
            f"<th style='{cell}'>prompt + sample</th></tr>" + "".join(rows) + "</table>")


# A word: letters, with apostrophes inside ("o'er", "'tis" counts as tis). Case is ignored.
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(text: str) -> list[str]:
    """The words of `text`, lower-cased: "To be, or not to BE" -> ['to', 'be', 'or', 'not', 'to', 'be']."""
    return WORD.findall(text.lower())


@lru_cache(maxsize=2)
def corpus_words(data: str = "tiny") -> frozenset[str]:
    """Every word of the course corpus (Shakespeare, `data`: "tiny" or "full"), lower-cased."""
    from gpt2lab.datasets import shakespeare
    return frozenset(words(shakespeare(data)))


@lru_cache(maxsize=2)
def corpus_pairs(data: str = "tiny") -> frozenset[tuple[str, str]]:
    """Every pair of neighbouring words in the course corpus, lower-cased: ("to", "be"), ("be", "or"), ..."""
    from gpt2lab.datasets import shakespeare
    w = words(shakespeare(data))
    return frozenset(zip(w, w[1:]))


def pair_share(text: str, pairs=None) -> tuple[float, int]:
    """(share of neighbouring word pairs of `text` that also occur in the corpus, number of pairs): stricter
    than word_share. Word salad of common words ("the the my that") has a high word share, a low pair share.
    pairs: a set of (word, word); default: corpus_pairs()."""
    known = corpus_pairs() if pairs is None else pairs
    w = words(text)
    found = list(zip(w, w[1:]))
    if not found:
        return 0.0, 0
    return sum(p in known for p in found) / len(found), len(found)


def word_share(text: str, vocabulary=None) -> tuple[float, int]:
    """(share of the words of `text` that occur in `vocabulary`, number of words). A model that spells real
    words scores near 1; one that glues token pieces into non-words ("thend", "shalll") scores lower.

    vocabulary: a set of lower-case words; default: corpus_words() (the course corpus).
    """
    if not isinstance(text, str):
        raise TypeError(f"word_share: text must be str, got {type(text).__name__}")
    vocab = corpus_words() if vocabulary is None else vocabulary
    found = words(text)
    if not found:
        return 0.0, 0
    return sum(w in vocab for w in found) / len(found), len(found)


SHARE_PROMPTS = ("HAMLET:\nTo be, or not to be", "ROMEO:\n", "KING HENRY:\nOnce more", "First Citizen:\n")


def sample_word_share(model, prompts=SHARE_PROMPTS, max_new_tokens: int = 120, seed: int = 0,
                      temperature: float = 0.8, top_k: int | None = 40) -> dict:
    """The word share of what `model` writes: each prompt continued with the samples' settings (the same as
    samples_over_training), the prompts themselves not counted. Returns {"share", "words", "pair_share",
    "samples"}; pairs are counted within each sample, never across two."""
    import torch
    enc = gpt2_encoding()
    samples = []
    for k, prompt in enumerate(prompts):
        ids = torch.tensor([enc.encode(prompt)], dtype=torch.long)
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                                 generator=torch.Generator().manual_seed(seed + k))
        samples.append(enc.decode(gen[0, ids.shape[1]:].tolist()))
    share, n = word_share("\n".join(samples))
    known = corpus_pairs()
    pairs = [pair_share(s, known) for s in samples]
    n_pairs = sum(k for _, k in pairs)
    return {"share": share, "words": n, "pair_share": sum(f * k for f, k in pairs) / max(n_pairs, 1),
            "samples": samples}
