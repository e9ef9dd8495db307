"""gpt2lab.datasets.bpe: the readable byte-level BPE equals GPT-2 (tiktoken) exactly, and round-trips."""
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2lab.datasets import EOT, GPT2_PATTERN, gpt2_encoding, shakespeare
from gpt2lab.datasets.bpe import (BPETokenizer, bytes_to_unicode, chunk_counts, count_pairs, learn_merges,
                                  merge_pair, presplit, printable_token, split_special, unicode_to_bytes)

TRICKY = [
    "",
    "Hello world",
    "👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs",          # emoji with ZWJ sequences and skin tones
    "我爱自然语言处理。东京は日本の首都です",                 # Chinese, Japanese
    "e\u0301 cafe\u0301 n\u0303 a\u030a\u0323",             # combining accents
    "1234567890123456789 3.14159 1,000,000 ٣٤٥ ½",         # long digit runs, other numbers
    "a  b   c    d\n\n\n\t\t x \r\n  \n   ",                # runs of spaces, newlines, tabs
    "def f(x):\n    return x**2  # square\n\tif x != 0: pass",
    "'s'll'VE 'd I'm you're they've we'LL don't",           # contractions, case-sensitive in GPT-2
    "   leading and trailing spaces   ",
    "\x00\x01\x7f control \u200b zero width \ufeff bom",
    "Ġthe ĊĠ byte-map lookalikes",
    "<|endoftext|> in the middle <|endoftext|>",
]


@lru_cache(maxsize=1)
def gpt2():
    return BPETokenizer.from_gpt2()


@lru_cache(maxsize=1)
def small_trained():
    """A learner-sized tokenizer: 512 tokens on the first 100 kB of Shakespeare."""
    return BPETokenizer().train(shakespeare("tiny")[:100_000], 512)


def test_byte_map_is_a_bijection_with_printable_characters():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert unicode_to_bytes()["Ġ"] == 32
    assert printable_token(b" the") == "Ġthe"


def test_presplit_follows_gpt2_chunks():
    assert presplit("I'll go!") == ["I", "'ll", " go", "!"]
    assert presplit("a  b") == ["a", " ", " b"]   # the last space stays with the word
    assert presplit("x\n\n") == ["x", "\n\n"]
    assert split_special("a<|endoftext|>b", [EOT]) == ["a", EOT, "b"]


def test_count_pairs_weights_by_chunk_frequency():
    assert count_pairs({(1, 2, 1, 2): 3, (2, 1): 1}) == {(1, 2): 6, (2, 1): 4}
    assert count_pairs({(7,): 5}) == {}


def test_merge_pair_is_left_to_right_and_non_overlapping():
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([], (1, 2), 9) == []


def test_learn_merges_matches_recounting_from_scratch():
    """The incremental pair counts must pick the same merges as a full recount every step."""
    text = shakespeare("tiny")[:20_000]
    chunks = chunk_counts(text, GPT2_PATTERN)
    fast = [(pair, n) for pair, _, n in learn_merges(chunks, 60)]
    words = {tuple(c): f for c, f in chunks.items()}
    slow = []
    for new_id in range(256, 316):
        counts = count_pairs(words)
        best = min(counts, key=lambda p: (-counts[p], p))   # most frequent, then smallest ids
        slow.append((best, counts[best]))
        words = {tuple(merge_pair(list(w), best, new_id)): f for w, f in words.items()}
    assert fast == slow


def test_training_is_deterministic_and_sized():
    tok = small_trained()
    assert tok.vocab_size == 512 and tok.special == {EOT: 511}
    assert tok.merges == BPETokenizer().train(shakespeare("tiny")[:100_000], 512).merges
    assert list(tok.merges.values()) == list(range(256, 511))
    assert tok.vocab[256] in (b" t", b"he", b"e ", b" a")    # the most frequent English pairs come first


def test_train_stops_when_no_pair_is_left():
    tok = BPETokenizer().train("abc", 1000)
    assert [tok.vocab[i] for i in tok.merges.values()] == [b"ab", b"abc"]
    assert tok.special == {EOT: 258} and tok.vocab_size == 259


def test_train_rejects_too_small_vocab():
    with pytest.raises(ValueError, match="vocab_size must be >= 257"):
        BPETokenizer().train("abc", 100)


def test_whole_tiny_shakespeare_equals_tiktoken():
    text = shakespeare("tiny")
    assert gpt2().encode(text) == gpt2_encoding().encode_ordinary(text)


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings_equal_tiktoken(text):
    assert gpt2().encode(text) == gpt2_encoding().encode_ordinary(text)
    assert gpt2().decode(gpt2().encode(text)) == text


def test_known_ids():
    assert gpt2().encode("Hello world") == [15496, 995]
    assert gpt2().vocab_size == 50257


def test_special_tokens_only_when_allowed():
    tok, enc = gpt2(), gpt2_encoding()
    text = "end.<|endoftext|>Next"
    assert tok.encode(text, allowed_special={EOT}) == enc.encode(text, allowed_special={EOT})
    assert tok.encode(text, allowed_special="all")[2] == 50256
    assert tok.encode(text, allowed_special=EOT) == tok.encode(text, allowed_special="all")
    assert 50256 not in tok.encode(text)                    # not allowed: plain characters
    assert tok.encode(text) == enc.encode_ordinary(text)
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode(text, allowed_special={"<|im_start|>"})


def test_decode_replaces_half_characters_like_gpt2():
    tok, enc = gpt2(), gpt2_encoding()
    ids = tok.encode("🏳️‍🌈")
    for k in range(len(ids) + 1):
        assert tok.decode(ids[:k]) == enc.decode(ids[:k])
    with pytest.raises(ValueError, match="not in this vocabulary"):
        tok.decode([60000])


def test_lone_surrogates_are_replaced_like_tiktoken():
    text = "a\ud800b\udcffc"
    assert gpt2().encode(text) == gpt2_encoding().encode_ordinary(text)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_fuzz_unicode_equals_tiktoken_and_round_trips(text):
    ids = gpt2().encode(text)
    assert ids == gpt2_encoding().encode_ordinary(text)
    assert gpt2().decode(ids) == text


# Structurally awkward text: whitespace runs, contractions, digits, marks and emoji packed together.
AWKWARD = st.text(alphabet=st.sampled_from(list(" \n\t\r'sdlmtvreSLVE1٣½é\u0301😀\u200d🏽.,!<|>_")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(AWKWARD)
def test_fuzz_awkward_text_equals_tiktoken(text):
    assert gpt2().encode(text) == gpt2_encoding().encode_ordinary(text)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_fuzz_trained_tokenizer_round_trips(text):
    tok = small_trained()
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", TRICKY)
def test_trained_tokenizer_round_trips_tricky_strings(text):
    tok = small_trained()
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_save_load_round_trip(tmp_path):
    for tok in (small_trained(), gpt2()):
        path = tok.save(tmp_path / "tok.bpe")
        back = BPETokenizer.load(path)
        assert back.merges == tok.merges and back.vocab == tok.vocab and back.special == tok.special
        assert back.byte_ids == tok.byte_ids and back.pattern == tok.pattern
        assert back.encode(TRICKY[2] + TRICKY[7]) == tok.encode(TRICKY[2] + TRICKY[7])


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="not a gpt2lab BPE file"):
        BPETokenizer.load(bad)
