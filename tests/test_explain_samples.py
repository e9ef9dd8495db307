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
