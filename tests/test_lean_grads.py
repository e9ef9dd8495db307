"""A lean KernelGPT2 (the default): every block's backward reuses one block's activation gradients, and the
fused classifier's path on a GPU keeps no probs buffer (buffers.BLOCK_GRAD_NAMES, KernelGPT2.lean).

Checked: a lean model trains bit for bit as the full one (the same kernels in the same order, on other
memory), on the default and the fused path, on the CPU and in numba's CUDA simulator; its buffers are the
size buffers.step_bytes says, smaller by (L-1) blocks' gradients; live parity (ParityMonitor) turns lean off,
because it reads every block's gradients; and the fused classifier refuses to write probs into no buffer.
Dropping the zeroing between blocks fails tests/test_kernel_model.py's lockstep test against PyTorch (the
blocks' sums pile up) and the comparison here.
"""
import json
import math
import textwrap

import numpy as np
import pytest

from gpt2lab.gpt2.buffers import BLOCK_GRAD_NAMES, step_bytes
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.gpt2.parity import ParityMonitor
from gpt2lab.gpt2.train import memory_needed
from simulated import run_in_simulator

CONFIG = dict(block_size=8, vocab_size=17, n_layer=3, n_head=2, n_embd=8)
B, T = 2, 8


def batches(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 17, (B, T)), rng.integers(0, 17, (B, T))) for _ in range(n)]


def train(model) -> dict:
    """Two steps of forward, backward and AdamW: the losses, the last gradients, the parameters."""
    out = {"losses": []}
    for x, y in batches():
        out["losses"].append(model.forward(x, y))
        model.zero_grad()
        model.backward()
        out["grads"] = np.array(model.grads_memory.memory)
        model.adamw_step(1e-2)
    out["params"] = np.array(model.params_memory.memory)
    return out


@pytest.mark.parametrize("fused", [False, True], ids=["default", "fused"])
def test_a_lean_model_trains_bit_for_bit_as_the_full_one(fused):
    lean = KernelGPT2(GPTConfig(**CONFIG), seed=0, fused=fused)
    full = KernelGPT2(GPTConfig(**CONFIG), seed=0, fused=fused, lean=False)
    got, want = train(lean), train(full)
    assert lean.lean and not full.lean
    assert got["losses"] == want["losses"]
    for key in ("grads", "params"):
        assert np.array_equal(got[key], want[key]), key


@pytest.mark.parametrize("fused", [False, True], ids=["default", "fused"])
def test_the_buffers_are_the_size_step_bytes_says(fused):
    config = GPTConfig(**CONFIG)
    sizes = {}
    for lean in (True, False):
        model = KernelGPT2(config, seed=0, fused=fused, lean=lean)
        model.forward(*batches(1)[0])
        counted = step_bytes(config, B, T, fused, lean)
        assert model.acts_memory.memory.nbytes == counted["acts"]
        assert model.grads_acts_memory.memory.nbytes == counted["grads_acts"]
        assert model.params_memory.memory.nbytes == counted["params"]
        assert sum(counted.values()) == memory_needed(config, B, T, fused, lean)
        assert {model.grads_acts[n].shape[0] for n in BLOCK_GRAD_NAMES} == {1 if lean else config.n_layer}
        sizes[lean] = counted["grads_acts"]
    one_block = sum(math.prod(model.grads_acts[n].shape[1:]) for n in BLOCK_GRAD_NAMES)   # 17 C floats a token
    assert one_block == 17 * config.n_embd * B * T
    assert sizes[False] - sizes[True] == 4 * (config.n_layer - 1) * one_block


def test_the_fused_gpu_path_counts_no_probs_when_lean():
    config = GPTConfig.preset("gpt2")
    V = config.vocab_size
    cpu, gpu = (step_bytes(config, 4, 1024, fused=True, fused_head=head)["acts"] for head in (False, True))
    assert cpu - gpu == 4 * 4 * 1024 * V
    assert step_bytes(config, 4, 1024, fused=True, lean=False, fused_head=True)["acts"] == cpu


def test_live_parity_turns_lean_off_and_the_next_forward_reallocates():
    config = GPTConfig(**CONFIG)
    model = KernelGPT2(config, seed=0)
    x, y = batches(1)[0]
    model.forward(x, y)
    assert model.grads_acts["fch"].shape[0] == 1
    ParityMonitor(model)
    assert not model.lean
    model.forward(x, y)
    assert model.grads_acts["fch"].shape[0] == config.n_layer


@pytest.mark.parametrize("fused", [False, True], ids=["default", "fused"])
def test_lean_switched_off_between_forward_and_backward_still_gives_the_right_gradients(fused):
    """The buffers a forward made decide the backward's zeroing, not the wish: lean turned off after a lean
    forward (a learner making a ParityMonitor mid-step) must not leave the shared block gradients unzeroed."""
    x, y = batches(1)[0]
    full = KernelGPT2(GPTConfig(**CONFIG), seed=0, fused=fused, lean=False)
    full.forward(x, y)
    full.zero_grad()
    full.backward()
    model = KernelGPT2(GPTConfig(**CONFIG), seed=0, fused=fused)
    model.forward(x, y)
    model.lean = False
    model.zero_grad()
    model.backward()
    assert np.array_equal(np.array(model.grads_memory.memory), np.array(full.grads_memory.memory))


def test_a_monitor_made_after_a_lean_forward_says_so_in_one_line():
    model = KernelGPT2(GPTConfig(**CONFIG), seed=0)
    x, y = batches(1)[0]
    model.forward(x, y)
    monitor = ParityMonitor(model)
    monitor.reference_step(x, y)
    model.zero_grad()
    model.backward()
    with pytest.raises(RuntimeError, match="last forward ran lean, before this monitor was made"):
        monitor.compare(1)
    monitor.reference_step(x, y)   # a fresh step is fine
    model.forward(x, y)
    model.zero_grad()
    model.backward()
    assert all(row.ok for row in monitor.compare(1))


SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_model import KernelGPT2
    from gpt2lab.kernels.crossentropy import fused_classifier
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 11, (2, 4)), rng.integers(0, 11, (2, 4))
    out = {}
    for lean in (True, False):
        m = KernelGPT2(GPTConfig(block_size=4, vocab_size=11, n_layer=2, n_head=2, n_embd=8), device="cudasim",
                       seed=0, fused=True, lean=lean)
        loss = m.forward(x, y)
        m.zero_grad(); m.backward()
        out[str(lean)] = {"loss": loss, "grads": m.grads_memory.memory.copy_to_host().tolist(),
                          "probs": "probs" in m.acts}
    a = m.acts
    try:
        fused_classifier(a["losses"], m.grads_acts["logits"], None, a["logits"], m.targets, m.grads_acts["losses"],
                         write_probs=True)
        out["refused"] = ""
    except ValueError as e:
        out["refused"] = str(e)
    print(json.dumps(out))
""")


def test_in_the_simulator_the_lean_fused_step_keeps_no_probs_and_equals_the_full_one():
    out = json.loads(run_in_simulator("-c", SCRIPT, timeout=600).stdout)
    lean, full = out["True"], out["False"]
    assert not lean["probs"] and full["probs"]
    assert lean["loss"] == full["loss"]
    assert lean["grads"] == full["grads"]
    assert out["refused"].startswith("fused_classifier: write_probs=True needs a probs array")
