"""Lesson 7's data: from the last hidden state to the next token -- logits, softmax, and how a sampler picks.

    logits = lnf(x) @ wte.T                        (V,)   the unembedding is the embedding matrix itself (tied)
    probs  = softmax(logits / temperature)         (V,)
    top-k: keep the k largest probabilities; top-p: keep the smallest set of most likely tokens whose
    probabilities add up to at least p; renormalise what is kept, then draw one token.

    d = next_token_distribution(model, ids, temperature=0.8, top_k=40, top_p=0.9)   # a Distribution
    text = generate_text(model, ids, 20, temperature=0.8, top_k=40, top_p=0.9, seed=0)

Cross-entropy and its fused backward (dlogits = probs - onehot) are in `crossentropy_steps`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def filter_probs(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """The sampling distribution (V,) float64 from logits (V,): softmax(logits / temperature), then top-k and
    top-p (nucleus) filtering, renormalised. temperature <= 0 is greedy: all mass on the argmax.
    ValueError for top_k < 1 or top_p outside (0, 1]."""
    logits = np.asarray(logits, dtype=np.float64)
    if top_k is not None and top_k < 1:
        raise ValueError(f"filter_probs: top_k must be >= 1 (or None), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"filter_probs: top_p must be in (0, 1] (or None), got {top_p}")
    if temperature <= 0:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    z = logits / temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = np.zeros(probs.size, dtype=bool)
    k = probs.size if top_k is None else min(top_k, probs.size)
    keep[order[:k]] = True
    if top_p is not None:
        cum = np.cumsum(probs[order])
        n = int(np.searchsorted(cum, top_p - 1e-12) + 1)      # the smallest prefix reaching p
        nucleus = np.zeros(probs.size, dtype=bool)
        nucleus[order[:n]] = True
        keep &= nucleus
    probs = np.where(keep, probs, 0.0)
    return probs / probs.sum()


@dataclass
class Distribution:
    """The next-token distribution after a context. probs (V,) after filtering, raw (V,) at temperature 1;
    top: [(token id, text, prob, raw prob)] of the most likely tokens; kept: how many tokens can be drawn."""
    context: str
    probs: np.ndarray
    raw: np.ndarray
    top: list
    kept: int

    def entropy_bits(self) -> float:
        p = self.probs[self.probs > 0]
        return float(-(p * np.log2(p)).sum())


def last_logits(model, ids) -> np.ndarray:
    """The logits (V,) the model gives for the token after ids (T,) ints (the last block_size of them)."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)[-model.config.block_size:])[None]
    with torch.no_grad():
        logits, _ = model(ids)
    return logits[0, -1].double().numpy()


def next_token_distribution(model, ids, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None, encoding=None, n_top: int = 12) -> Distribution:
    """The distribution over the token after ids (T,), with the sampler's settings applied."""
    from gpt2lab.datasets import gpt2_encoding
    enc = encoding or gpt2_encoding()
    logits = last_logits(model, ids)
    probs = filter_probs(logits, temperature, top_k, top_p)
    raw = filter_probs(logits)
    order = np.argsort(-np.maximum(probs, raw * (probs > 0)), kind="stable")[:n_top]
    top = [(int(t), enc.decode([int(t)]), float(probs[t]), float(raw[t])) for t in order]
    return Distribution(enc.decode([int(i) for i in ids]), probs, raw, top, int((probs > 0).sum()))


def generate_text(model, ids, n_new: int, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, seed: int = 0, encoding=None) -> str:
    """n_new tokens drawn after ids (T,) with the sampler's settings (numpy Generator(seed)); the new text."""
    from gpt2lab.datasets import gpt2_encoding
    enc = encoding or gpt2_encoding()
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in ids]
    new = []
    for _ in range(n_new):
        probs = filter_probs(last_logits(model, ids), temperature, top_k, top_p)
        token = int(rng.choice(probs.size, p=probs))
        ids.append(token)
        new.append(token)
    return enc.decode(new)


def distribution_figure(d: Distribution, title: str = ""):
    """Horizontal bars of the most likely next tokens: the sampler's probability (blue) over the raw one
    (grey outline); a token the filters removed has no blue bar."""
    import matplotlib.pyplot as plt

    from .palette import token_color
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(d.top) + 1.4))
    ys = np.arange(len(d.top))
    ax.barh(ys, [t[3] for t in d.top], color="none", edgecolor="#999999", label="temperature 1, no filter")
    ax.barh(ys, [t[2] for t in d.top], color=[token_color(t[0]) for t in d.top], alpha=0.9, label="sampled from")
    ax.set_yticks(ys)
    ax.set_yticklabels([repr(t[1]) for t in d.top], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel("probability of the next token")
    ax.legend(fontsize=9, loc="lower right")
    # two lines: one would run past the figure's right edge for a sentence-long context
    ax.set_title(title or f"next token after {d.context[-40:]!r}\n{d.kept} tokens can be drawn, "
                          f"entropy {d.entropy_bits():.2f} bits", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# cross-entropy and its fused backward
# ---------------------------------------------------------------------------------------------------------
def crossentropy_steps(logits, target: int) -> dict:
    """One position's loss, step by step, with the fused backward and autograd's gradient to compare:
    {"probs", "loss", "dlogits" (probs - onehot), "autograd"} (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    probs = filter_probs(logits)
    onehot = np.zeros_like(probs)
    onehot[target] = 1.0
    t = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(t[None], torch.tensor([target]))
    loss.backward()
    return {"probs": probs, "loss": float(-np.log(probs[target])), "dlogits": probs - onehot,
            "autograd": t.grad.numpy()}


def tied_weights(model) -> bool:
    """True when the model's lm_head reads the very tensor wte holds (weight tying)."""
    return model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


__all__ = ["filter_probs", "Distribution", "last_logits", "next_token_distribution", "generate_text",
           "distribution_figure", "crossentropy_steps", "tied_weights"]
