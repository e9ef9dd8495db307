"""The kernel-backed GPT-2 with every buffer a CUDA device array, run in numba's CUDA simulator.

A micro model (1 layer, 2 heads, C=8, vocab 11) does forward, backward and one AdamW step on device "cudasim"
in its own process (NUMBA_ENABLE_CUDASIM=1 is read when numba is imported and must never leak into this one);
the loss, the logits, every gradient and the grad norm must equal the CPU kernel model's, and AdamW from the
same gradients must update every parameter alike.
"""
import textwrap

import numpy as np
import pytest

from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.kernels.check import compare
from simulated import run_in_simulator

MICRO = dict(block_size=4, vocab_size=11, n_layer=1, n_head=2, n_embd=8)
IDX = [[3, 1, 7]]
TARGETS = [[1, 7, 10]]
TOL = (1e-6, 1e-5)  # the same float32 math on both sides, only the order of the sums differs

SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_model import KernelGPT2
    model = KernelGPT2(GPTConfig(**{micro}), device="cudasim", seed=0)
    assert not isinstance(model.params_memory.memory, np.ndarray)
    loss = model.forward(np.array({idx}), np.array({targets}))
    model.zero_grad()
    model.backward()
    out = dict(model.params_numpy(), loss=np.array(loss), grad_norm=np.array(model.grad_norm()),
               logits=model.logits.copy_to_host())
    out.update({{"grad:" + k: v for k, v in model._named(model.grads_memory).items()}})
    model.adamw_step(lr=1e-2)
    out.update({{"step1:" + k: v for k, v in model.params_numpy().items()}})
    np.savez(sys.argv[1], **out)
""").format(micro=MICRO, idx=IDX, targets=TARGETS)


@pytest.mark.cudasim
def test_cudasim_model_matches_cpu_model(tmp_path):
    out = tmp_path / "cudasim.npz"
    run_in_simulator("-c", SCRIPT, str(out))
    sim = dict(np.load(out))

    model = KernelGPT2(GPTConfig(**MICRO), device="cpu", seed=0)
    for name, value in model.params_numpy().items():
        assert np.array_equal(sim[name], value), f"{name}: the two processes did not start from the same weights"
    loss = model.forward(np.array(IDX), np.array(TARGETS))
    model.zero_grad()
    model.backward()
    assert abs(sim["loss"] - loss) <= 1e-6 * abs(loss), (float(sim["loss"]), loss)
    assert abs(sim["grad_norm"] - model.grad_norm()) <= 1e-5 * model.grad_norm()
    pairs = {"logits": (sim["logits"], model.logits)}
    pairs.update({"grad " + k: (sim["grad:" + k], v) for k, v in model._named(model.grads_memory).items()})
    # AdamW from the very same gradients (the simulator's): a gradient that is ~0 in exact arithmetic (the key
    # bias's) would otherwise move by +-lr on the sign of rounding noise on either side
    model._load_named(model.grads_memory, {k.removeprefix("grad:"): v for k, v in sim.items() if k.startswith("grad:")})
    model.adamw_step(lr=1e-2)
    pairs.update({"adamw " + k: (sim["step1:" + k], v) for k, v in model.params_numpy().items()})
    lines, bad = [], []
    for name, (got, want) in pairs.items():
        max_abs, max_rel, ok = compare(got, want, *TOL)
        lines.append(f"{'OK    ' if ok else 'NOT OK'} {name:<42} max_abs {max_abs:.1e}  max_rel {max_rel:.1e}")
        bad += [] if ok else [name]
    print("\n".join(lines))
    assert not bad, "\n".join(lines)
