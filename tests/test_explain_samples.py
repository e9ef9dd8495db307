import pytest

from gpt2lab.explain.samples import samples_html, samples_over_training
from gpt2lab.gpt2 import GPT2, GPTConfig, init_params
from gpt2lab.gpt2.checkpoint import save_checkpoint

CFG = GPTConfig(block_size=16, vocab_size=50257, n_layer=1, n_head=2, n_embd=8)


def _frame(tmp_path, seed):
    return save_checkpoint(tmp_path / f"ckpt_{seed}.pt", {"config": CFG.to_dict(), "kind": "frame", "params": init_params(CFG, seed), "step": seed})


def test_same_seed_same_weights_same_sample_and_weights_matter(tmp_path):
    a, b = _frame(tmp_path, 0), _frame(tmp_path, 1)
    s = samples_over_training([(0, a), (10, a), (20, b)], "To be", max_new_tokens=6, seed=3)
    assert [step for step, _ in s] == [0, 10, 20]
    assert s[0][1] == s[1][1]          # same weights, same seed: the same text
    assert s[0][1] != s[2][1]          # other weights: another text
    html = samples_html("To be", s)
    assert html.count("<tr>") == 4 and "To be" in html


def test_word_share_counts_the_words_found_in_the_corpus():
    from gpt2lab.explain.samples import corpus_words, pair_share, word_share, words
    assert words("To be, or NOT to be: 'tis o'er") == ["to", "be", "or", "not", "to", "be", "tis", "o'er"]
    vocab = {"to", "be", "or", "not"}
    assert word_share("To be, or not to be!", vocab) == (1.0, 6)
    assert word_share("To bex, or nott to be", vocab) == (4 / 6, 6)
    assert word_share("...", vocab) == (0.0, 0)
    pairs = {("to", "be"), ("be", "or")}
    assert pair_share("to be or", pairs) == (1.0, 2)
    assert pair_share("be to or", pairs) == (0.0, 2)      # real words, in an order the corpus never has
    shakespeare = corpus_words()
    assert {"hamlet", "thou", "question"} <= shakespeare and "thend" not in shakespeare
    assert word_share("To be, or not to be: that is the question.")[0] == 1.0
    with pytest.raises(TypeError, match="text must be str"):
        word_share(b"bytes")


def test_sample_word_share_of_an_untrained_model_is_low(tmp_path):
    from gpt2lab.explain.samples import sample_word_share
    from gpt2lab.gpt2.checkpoint import load_model
    model, _ = load_model(_frame(tmp_path, 0))
    r = sample_word_share(model, prompts=("To be",), max_new_tokens=30)
    assert len(r["samples"]) == 1 and r["words"] > 0
    assert r["share"] < 0.85 and 0 <= r["pair_share"] <= 1      # random tokens: word pieces, rarely words
