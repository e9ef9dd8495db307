"""TorchBackend's GPU path (fused torch.optim.AdamW, its state in checkpoints) checked on the CPU.

On device "cuda" TorchBackend steps with torch.optim.AdamW(fused=True) and the decay groups instead of its
hand-written AdamW. The logic is the same on the CPU (fused AdamW runs there too), so it is checked here
without a GPU: the fused optimizer follows the hand-written one, and its state survives state_dict ->
load_state_dict (a checkpoint), so a resumed run continues exactly.
"""
import numpy as np
import torch

from gpt2lab.gpt2.config import GPTConfig, OptimConfig
from gpt2lab.gpt2.train import TorchBackend

CFG = GPTConfig(block_size=8, vocab_size=29, n_layer=1, n_head=2, n_embd=8)


def fused(seed=0):
    b = TorchBackend(CFG, OptimConfig(), seed=seed)
    b.opt = b._fused_adamw()   # what device="cuda" sets up
    return b


def batches(n):
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 29, (2, 8)), rng.integers(0, 29, (2, 8))) for _ in range(n)]


def step(b, x, y, lr=1e-2):
    loss = b.loss_and_grads(x, y)
    return loss, b.optimizer_step(lr)


def test_fused_adamw_follows_the_hand_written_one():
    hand, fast = TorchBackend(CFG, OptimConfig(), seed=0), fused()
    for x, y in batches(3):
        (l1, n1), (l2, n2) = step(hand, x, y), step(fast, x, y)
        assert abs(l1 - l2) <= 1e-5 * abs(l1) and abs(n1 - n2) <= 1e-4 * n1
    # atol: the key bias's gradient is ~0 in exact arithmetic, so AdamW moves it by rounding noise (here up to
    # 5e-6 at lr 1e-2); every other parameter agrees to float32 rounding
    for name, p in hand.state_dict()["params"].items():
        np.testing.assert_allclose(fast.state_dict()["params"][name], p, rtol=1e-4, atol=2e-5, err_msg=name)
    # the decay groups: a bias is not decayed, a matrix is
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in fast.opt.param_groups}
    assert id(fast.params["transformer.h.0.attn.c_attn.bias"]) in groups[0.0]
    assert id(fast.params["transformer.h.0.attn.c_attn.weight"]) in groups[OptimConfig().weight_decay]


def test_fused_adamw_state_survives_a_checkpoint():
    data = batches(4)
    a = fused()
    for x, y in data[:2]:
        step(a, x, y)
    state = a.state_dict()
    assert state["optim"]["step"] == 2 and np.abs(state["optim"]["v"]["transformer.wte.weight"]).max() > 0
    b = fused(seed=1)   # other weights: everything must come from the state
    b.load_state_dict(state)
    for x, y in data[2:]:
        assert step(a, x, y) == step(b, x, y)
    for name, p in a.state_dict()["params"].items():
        assert np.array_equal(b.state_dict()["params"][name], p), name


def test_torch_backend_refuses_cuda_without_a_gpu():
    import pytest
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="device 'cuda' but torch sees no CUDA GPU"):
        TorchBackend(CFG, OptimConfig(), device="cuda")
