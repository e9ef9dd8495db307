"""Benchmark of the readable BPE (`gpt2lab.datasets.bpe`): training time and encoding speed vs tiktoken.

Called by the `gpt2lab bench` command; usable alone: `python -m gpt2lab.datasets.bench_bpe`. Targets (2-core laptop): training a 4,096-token vocabulary on tiny
Shakespeare in under 30 s; encoding within 10x of tiktoken's time.
"""
from __future__ import annotations

import time


def _best_of(fn, repeats: int) -> float:
    """Smallest wall time of `repeats` calls of fn(), in seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_bpe(vocab_size: int = 4096, corpus: str = "tiny", repeats: int = 3) -> dict:
    """Time BPE training and encoding on Shakespeare; returns a dict of figures.

    Keys: n_chars, vocab_size, train_s (training `vocab_size` tokens), n_tokens (GPT-2 tokens of the
    corpus), encode_s (our GPT-2 encode with an empty chunk cache, best of `repeats`), encode_warm_s (same,
    cache already full), tiktoken_s (tiktoken's encode_ordinary, best of `repeats`), encode_ratio
    (encode_s / tiktoken_s: the target is < 10), equal (our ids == tiktoken's).
    """
    from . import gpt2_encoding, shakespeare
    from .bpe import BPETokenizer

    text = shakespeare(corpus)
    t0 = time.perf_counter()
    BPETokenizer().train(text, vocab_size)
    train_s = time.perf_counter() - t0

    ours, ref = BPETokenizer.from_gpt2(), gpt2_encoding()

    def encode_cold():
        ours._cache.clear()   # the honest figure: every distinct chunk is merged from bytes again
        return ours.encode(text)

    encode_s = _best_of(encode_cold, repeats)
    encode_warm_s = _best_of(lambda: ours.encode(text), repeats)
    tiktoken_s = _best_of(lambda: ref.encode_ordinary(text), repeats)
    ids = ours.encode(text)
    return {
        "n_chars": len(text), "vocab_size": vocab_size, "train_s": train_s, "n_tokens": len(ids),
        "encode_s": encode_s, "encode_warm_s": encode_warm_s, "tiktoken_s": tiktoken_s,
        "encode_ratio": encode_s / tiktoken_s, "equal": ids == ref.encode_ordinary(text),
    }


if __name__ == "__main__":
    for key, value in bench_bpe().items():
        print(f"{key:>14}: {value:.4g}" if isinstance(value, float) else f"{key:>14}: {value}")
