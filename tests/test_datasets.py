import numpy as np
import pytest

from gpt2lab.datasets import (BatchSampler, encode_cached, gpt2_encoding, load_text, load_tokens, shakespeare,
                              split_tokens)
from gpt2lab.datasets.shakespeare import sha256


def test_gpt2_encoding_reference_ids():
    enc = gpt2_encoding()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.n_vocab == 50257
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_shakespeare_is_plain_deterministic_text():
    tiny = shakespeare("tiny")
    assert 1_000_000 < len(tiny) < 1_200_000
    assert tiny == shakespeare("tiny") and sha256(tiny) == sha256(shakespeare("tiny"))
    assert tiny.startswith("BERNARDO:\nWho's there?\n\nFRANCISCO:\n")
    assert "**" not in tiny and "#" not in tiny and "\\" not in tiny
    assert "HAMLET:\nTo be, or not to be" in tiny
    full = shakespeare("full")
    assert len(full) > 4 * len(tiny)


def test_shakespeare_rejects_unknown_size():
    with pytest.raises(ValueError, match="size must be one of"):
        shakespeare("medium")


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_text("héllo", encoding="utf-8")
    assert load_text(tmp_path / "ok.txt") == "héllo"


def test_token_cache_roundtrip(tmp_path):
    text = "To be, or not to be: that is the question.\n" * 20
    ids = encode_cached(text, cache=tmp_path)
    assert ids.dtype == np.uint16
    assert list(ids) == gpt2_encoding().encode(text)
    files = list(tmp_path.glob("tokens-*.npy"))
    assert len(files) == 1
    assert np.array_equal(encode_cached(text, cache=tmp_path), ids)  # served from the cache
    encode_cached(text + "!", cache=tmp_path)
    assert len(list(tmp_path.glob("tokens-*.npy"))) == 2  # another text, another key


def test_split_and_sampler_are_seeded():
    data = split_tokens(np.arange(1000, dtype=np.uint16), 0.1)
    assert len(data.train) == 900 and len(data.val) == 100
    a, b = BatchSampler(data, 4, 8, seed=3), BatchSampler(data, 4, 8, seed=3)
    x1, y1 = a.next()
    x2, y2 = b.next()
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(y1[:, :-1], x1[:, 1:])  # targets are inputs shifted by one
    state = a.state()
    nxt = a.next()
    a.set_state(state)
    assert np.array_equal(a.next()[0], nxt[0])
    with pytest.raises(ValueError, match="fewer than T"):
        data.batch("val", 2, 200, np.random.default_rng(0))


def test_load_tokens_shakespeare():
    d = load_tokens("shakespeare")
    assert 250_000 < len(d.train) < 350_000 and len(d.val) > 25_000
    assert d.train.max() < 50257
