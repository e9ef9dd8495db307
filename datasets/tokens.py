"""Encoded corpora: a uint16 token cache on disk, a train/val split, and a seeded (B, T) batch sampler."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt2lab.atomic import atomic_write

from .shakespeare import shakespeare
from .text import load_text
from .tokenizer import gpt2_encoding


def cache_dir() -> Path:
    """Where gpt2lab keeps derived data: $GPT2LAB_CACHE, else ~/.cache/gpt2lab."""
    d = Path(os.environ.get("GPT2LAB_CACHE", Path.home() / ".cache" / "gpt2lab"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def encode_cached(text: str, encoding=None, cache: Path | None = None) -> np.ndarray:
    """GPT-2 token ids of `text` as uint16, read from / written to the cache.

    The cache key is the sha256 of the text and of the tokenizer's name and vocabulary size, so a changed
    text or tokenizer can never be served a stale file.
    """
    enc = encoding or gpt2_encoding()
    if enc.n_vocab > 65536:
        raise ValueError(f"encode_cached: uint16 cache needs a vocabulary <= 65536, got {enc.n_vocab}")
    key = hashlib.sha256(text.encode("utf-8") + f"|{enc.name}|{enc.n_vocab}".encode()).hexdigest()[:24]
    path = (cache or cache_dir()) / f"tokens-{key}.npy"
    if path.exists():
        return np.load(path)
    ids = np.asarray(enc.encode_ordinary(text), dtype=np.uint16)
    atomic_write(path, lambda f: np.save(f, ids))  # a crash never leaves a half-written cache
    return ids


@dataclass
class TokenData:
    """A corpus split into train and val token arrays (uint16)."""
    train: np.ndarray
    val: np.ndarray

    def batch(self, split: str, B: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random batch: x (B, T) int64 inputs and y (B, T) int64 targets (x shifted by one)."""
        data = {"train": self.train, "val": self.val}.get(split)
        if data is None:
            raise ValueError(f"batch: split must be 'train' or 'val', got {split!r}")
        if B <= 0 or T <= 0:
            raise ValueError(f"batch: B and T must be positive, got B={B}, T={T}")
        if len(data) < T + 1:
            raise ValueError(f"batch: the {split} split has {len(data)} tokens, fewer than T+1={T + 1}")
        starts = rng.integers(0, len(data) - T, size=B)
        x = np.stack([data[s:s + T] for s in starts]).astype(np.int64)
        y = np.stack([data[s + 1:s + 1 + T] for s in starts]).astype(np.int64)
        return x, y


class BatchSampler:
    """Seeded (B, T) batches; `state()`/`set_state()` let a resumed run draw the very same batches."""

    def __init__(self, data: TokenData, B: int, T: int, seed: int = 0):
        self.data, self.B, self.T = data, B, T
        self.rng = np.random.default_rng(seed)

    def next(self, split: str = "train"):
        return self.data.batch(split, self.B, self.T, self.rng)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def split_tokens(ids: np.ndarray, val_fraction: float = 0.1) -> TokenData:
    """First (1 - val_fraction) of the tokens for training, the rest for validation (as nanoGPT)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"split_tokens: val_fraction must be in (0, 1), got {val_fraction}")
    n = int(len(ids) * (1 - val_fraction))
    return TokenData(train=ids[:n], val=ids[n:])


def load_tokens(data: str = "shakespeare", val_fraction: float = 0.1) -> TokenData:
    """Token data by name: "shakespeare" (tiny), "shakespeare-full", or a path to a UTF-8 text file."""
    if data in ("shakespeare", "shakespeare-tiny"):
        text = shakespeare("tiny")
    elif data == "shakespeare-full":
        text = shakespeare("full")
    else:
        text = load_text(data)
    return split_tokens(encode_cached(text), val_fraction)
