"""The fused residual + LayerNorm kernels wired into a whole model, exactly as kernels/residual_layernorm.py's
docstring says gpt2/kernel_model.py calls them, give the model's own (unfused) loss, logits and gradients.

`fused_forward` and `fused_backward` are KernelGPT2's default forward and backward with only this fusion's
replacement lines, by hand (one fusion at a time; the model's own fused path, flash attention and the rest
included, is KernelGPT2(fused=True), tested in tests/test_fused_model.py). Two layers, so both kinds of fusion
run: residual2 with ln_2, and residual3 with the next block's ln_1 and, after the last block, with ln_f.
On the CPU here; in numba's CUDA simulator in its own process (the CUDA kernels; one layer, for time),
against the CPU model.
"""
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gpt2lab.gpt2.buffers import fill, is_cuda
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.kernels._validate import to_host
from gpt2lab.kernels.check import compare
from gpt2lab.kernels.layernorm import layernorm_backward, layernorm_forward
from gpt2lab.kernels.residual_layernorm import residual_layernorm_backward, residual_layernorm_forward
from simulated import run_in_simulator

MICRO = dict(block_size=4, vocab_size=11, n_layer=2, n_head=2, n_embd=8)
SIM_MICRO = dict(MICRO, n_layer=1)  # the simulator is slow: one block still runs both fused kernels
IDX = [[3, 1, 7]]
TARGETS = [[1, 7, 10]]
TOL = (1e-6, 1e-5)  # the same float32 math on both sides, only the order of some sums differs


def fused_forward(model, idx, targets):
    """KernelGPT2.forward with each residual add fused into the LayerNorm that reads it; returns the loss."""
    B, T = np.shape(idx)
    model._ensure_capacity(B, T)
    model.inputs, model.targets = model._batch(idx, "idx"), model._batch(targets, "targets")
    if is_cuda(model.device):   # on a GPU the batch goes into the model's preallocated device buffer
        model._upload(model.inputs, model.targets)
    L, NH = model.config.n_layer, model.config.n_head
    p, a, k = model.params, model.acts, model.kernels
    k.encoder_forward(a["encoded"], model.inputs, p["wte"], p["wpe"])
    layernorm_forward(a["ln1"][0], a["ln1_mean"][0], a["ln1_rstd"][0], a["encoded"], p["ln1w"][0], p["ln1b"][0])
    for l in range(L):
        residual = a["encoded"] if l == 0 else a["residual3"][l - 1]
        k.matmul_forward(a["qkv"][l], a["ln1"][l], p["qkvw"][l], p["qkvb"][l])
        k.attention_forward(a["atty"][l], a["att"][l], a["qkv"][l], NH)
        k.matmul_forward(a["attproj"][l], a["atty"][l], p["attprojw"][l], p["attprojb"][l])
        residual_layernorm_forward(a["residual2"][l], a["ln2"][l], a["ln2_mean"][l], a["ln2_rstd"][l],
                                   residual, a["attproj"][l], p["ln2w"][l], p["ln2b"][l])
        k.matmul_forward(a["fch"][l], a["ln2"][l], p["fcw"][l], p["fcb"][l])
        k.gelu_forward(a["fch_gelu"][l], a["fch"][l])
        k.matmul_forward(a["fcproj"][l], a["fch_gelu"][l], p["fcprojw"][l], p["fcprojb"][l])
        if l + 1 < L:  # the next block's ln_1
            nxt = (a["ln1"][l + 1], a["ln1_mean"][l + 1], a["ln1_rstd"][l + 1], p["ln1w"][l + 1], p["ln1b"][l + 1])
        else:          # ln_f
            nxt = (a["lnf"], a["lnf_mean"], a["lnf_rstd"], p["lnfw"], p["lnfb"])
        residual_layernorm_forward(a["residual3"][l], nxt[0], nxt[1], nxt[2], a["residual2"][l], a["fcproj"][l],
                                   nxt[3], nxt[4])
    k.matmul_forward(a["logits"], a["lnf"], p["wte"], None)
    k.crossentropy_forward(a["losses"], a["probs"], a["logits"], model.targets)
    model.mean_loss = float(to_host(a["losses"]).astype(np.float64).mean())
    return model.mean_loss


def fused_backward(model):
    """KernelGPT2.backward with the residual backward adds gone: each LayerNorm backward takes the stream's
    gradient from above (dresidual) and the branch matmuls read the stream's gradient as their dout."""
    B, T, L, NH = model.B, model.T, model.config.n_layer, model.config.n_head
    p, g, a, ga, k = model.params, model.grads, model.acts, model.grads_acts, model.kernels
    fill(model.grads_acts_memory.memory, 0.0)
    fill(ga["losses"], 1.0 / (B * T))
    k.crossentropy_backward(ga["logits"], ga["losses"], a["probs"], model.targets)
    k.matmul_backward(ga["lnf"], g["wte"], None, ga["logits"], a["lnf"], p["wte"])
    layernorm_backward(ga["residual3"][L - 1], g["lnfw"], g["lnfb"], ga["lnf"], a["residual3"][L - 1],
                       p["lnfw"], a["lnf_mean"], a["lnf_rstd"])
    for l in reversed(range(L)):
        residual = a["encoded"] if l == 0 else a["residual3"][l - 1]
        dresidual = ga["encoded"] if l == 0 else ga["residual3"][l - 1]
        k.matmul_backward(ga["fch_gelu"][l], g["fcprojw"][l], g["fcprojb"][l], ga["residual3"][l],
                          a["fch_gelu"][l], p["fcprojw"][l])
        k.gelu_backward(ga["fch"][l], a["fch"][l], ga["fch_gelu"][l])
        k.matmul_backward(ga["ln2"][l], g["fcw"][l], g["fcb"][l], ga["fch"][l], a["ln2"][l], p["fcw"][l])
        residual_layernorm_backward(ga["residual2"][l], g["ln2w"][l], g["ln2b"][l], ga["ln2"][l], ga["residual3"][l],
                                    a["residual2"][l], p["ln2w"][l], a["ln2_mean"][l], a["ln2_rstd"][l])
        k.matmul_backward(ga["atty"][l], g["attprojw"][l], g["attprojb"][l], ga["residual2"][l],
                          a["atty"][l], p["attprojw"][l])
        k.attention_backward(ga["qkv"][l], ga["atty"][l], a["qkv"][l], a["att"][l], NH)
        k.matmul_backward(ga["ln1"][l], g["qkvw"][l], g["qkvb"][l], ga["qkv"][l], a["ln1"][l], p["qkvw"][l])
        residual_layernorm_backward(dresidual, g["ln1w"][l], g["ln1b"][l], ga["ln1"][l], ga["residual2"][l],
                                    residual, p["ln1w"][l], a["ln1_mean"][l], a["ln1_rstd"][l])
    k.encoder_backward(g["wte"], g["wpe"], ga["encoded"], model.inputs)


def run_model(model, fused):
    """Loss, logits and every parameter gradient (numpy) of one forward and backward."""
    model.zero_grad()
    if fused:
        model.lean = False   # this file's own wiring indexes every block's activation gradients, [l]
        loss = fused_forward(model, np.array(IDX), np.array(TARGETS))
        fused_backward(model)
    else:
        loss = model.forward(np.array(IDX), np.array(TARGETS))
        model.backward()
    out = {"loss": np.array(loss), "logits": to_host(model.logits)}
    out.update({"grad " + k: v for k, v in model._named(model.grads_memory).items()})
    return out


def mismatches(got, want):
    lines = []
    for name in want:
        max_abs, max_rel, ok = compare(got[name], want[name], *TOL)
        if not ok:
            lines.append(f"{name}: max_abs {max_abs:.1e} max_rel {max_rel:.1e}")
    return lines


def test_fused_model_equals_unfused_on_cpu():
    want = run_model(KernelGPT2(GPTConfig(**MICRO), device="cpu", seed=0), fused=False)
    got = run_model(KernelGPT2(GPTConfig(**MICRO), device="cpu", seed=0), fused=True)
    assert not mismatches(got, want), mismatches(got, want)


def test_a_wrong_wiring_is_caught():
    """Dropping the stream's gradient from above in ln_2's fused backward must show in the gradients."""
    global residual_layernorm_backward
    right = residual_layernorm_backward

    def forgets_dresidual(dinp, dweight, dbias, dout, dresidual, *rest):
        right(dinp, dweight, dbias, dout, np.zeros_like(dresidual), *rest)
    want = run_model(KernelGPT2(GPTConfig(**MICRO), device="cpu", seed=0), fused=False)
    residual_layernorm_backward = forgets_dresidual
    try:
        got = run_model(KernelGPT2(GPTConfig(**MICRO), device="cpu", seed=0), fused=True)
    finally:
        residual_layernorm_backward = right
    assert mismatches(got, want)


SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    sys.path.insert(0, sys.argv[2])
    from test_residual_layernorm_model import SIM_MICRO, run_model
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_model import KernelGPT2
    np.savez(sys.argv[1], **run_model(KernelGPT2(GPTConfig(**SIM_MICRO), device="cudasim", seed=0), fused=True))
""")


@pytest.mark.cudasim
@pytest.mark.slow   # the model's own fused path runs these kernels in the simulator in test_fused_model.py
def test_fused_model_in_the_simulator_equals_the_cpu_model(tmp_path):
    out = tmp_path / "fused.npz"
    run_in_simulator("-c", SCRIPT, str(out), str(Path(__file__).parent))
    want = run_model(KernelGPT2(GPTConfig(**SIM_MICRO), device="cpu", seed=0), fused=False)
    got = dict(np.load(out))
    assert not mismatches(got, want), mismatches(got, want)
