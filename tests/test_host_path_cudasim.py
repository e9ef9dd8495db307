"""The lean host path of the CUDA model and its fused options, in numba's CUDA simulator (own process).

One training step (NumbaBackend.loss_and_grads + optimizer_step) of a micro model on device "cudasim", once
as the default path and once with fused=True (flash attention, residual + LayerNorm fused, the fused
classifier and the one-launch AdamW). Checked:

* the step allocates no device memory (the buffers are made for the batch shape first, as the first forward
  would; kernel scratch is made once per shape, _cuda.scratch), uploads the batch in one host-to-device copy and copies one thing back (the loss and grad norm);
* the launch counter (kernels._cuda.launch_count) sees every kernel launch and memset of the step, and the
  fused options take fewer (the classifier's forward + backward + dlosses fill become one kernel, AdamW's 16
  launches one, the residual adds go into the LayerNorms: 62 -> 42 for this 1-layer model);
* the fused step computes what the default one does: loss, grad norm, per-token losses, probs (written
  because write_probs is set, as live parity sets it), dlogits, every gradient and every parameter after
  AdamW, within the simulator test's rule (the same float32 math, sums in another order);
* live parity (VerifiedBackend) passes on the fused path, reading probs, losses and dlogits from the fused
  classifier itself.
"""
import textwrap

import numpy as np
import pytest

from gpt2lab.kernels.check import compare
from simulated import run_in_simulator

MICRO = dict(block_size=4, vocab_size=11, n_layer=1, n_head=2, n_embd=8)
X = [[3, 1, 7, 2], [0, 5, 9, 4]]
Y = [[1, 7, 10, 3], [2, 2, 8, 6]]
TOL = (1e-6, 1e-5)
# Parameters after the step (lr 1e-2): a thousandth of a step. The key bias's gradient is zero in exact
# arithmetic (the softmax ignores a shift of a whole row of scores), so on each path it is rounding noise
# (~1e-12); AdamW divides that by eps = 1e-8 into steps ~1e-6, different on the two paths since flash
# attention's backward rounds differently (tests/test_fused_model.py, the same rule).
TOL_PARAMS = (1e-2 * 1e-3, 1e-5)
# launches of one step of this model (kernels and memsets), its buffers made: a change in the model's kernel
# calls shows here. Default: 46 in loss_and_grads (encoder, the blocks' and head's forward and backward,
# 2 memsets, the one read-back reduction) + 16 AdamW launches, one per tensor. Fused: crossentropy forward +
# backward become one kernel (plus a once-per-batch-shape fill of dlosses, this being the first step), the
# per-backward dlosses fill goes, and AdamW is one launch; flash attention takes as many launches as the
# default attention (1 forward, 2 backward), and the residual add fused into the LayerNorm after it saves
# the 2 residual forwards and the 2 residual backwards.
LAUNCHES = {"default": 46 + 16, "fused": 41 + 1}

SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    from numba import cuda
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    from gpt2lab.kernels._cuda import launch_count
    from gpt2lab.kernels.attention import datt_scratch
    from gpt2lab.kernels.matmul import _no_bias
    calls = {{}}

    def counted(owner, attr):   # count calls of owner.attr (device allocations and copies)
        fn = getattr(owner, attr)
        def wrapper(*a, **k):
            calls[attr] = calls.get(attr, 0) + 1
            return fn(*a, **k)
        setattr(owner, attr, wrapper)
    for attr in ("to_device", "device_array", "device_array_like", "pinned_array"):
        counted(cuda, attr)
    for attr in ("copy_to_host", "copy_to_device"):
        counted(FakeCUDAArray, attr)
    out = {{}}
    x, y = np.array({x}), np.array({y})
    for name, fused in (("default", False), ("fused", True)):
        b = NumbaBackend(GPTConfig(**{micro}), seed=0, device="cudasim", fused=fused)
        m = b.model
        m.lean, m.write_probs = False, True   # the probs buffer, and probs written, as live parity sets them
        m._ensure_capacity(*x.shape)   # the buffers for this batch shape, as the first forward makes them
        _no_bias()                     # matmul's placeholder for a missing bias: made once per process
        datt_scratch(*x.shape[:1], {micro_nh}, x.shape[1])   # attention backward's D: made once per shape
        n0, calls = launch_count(), {{}}
        out[name + ":loss"] = np.array(b.loss_and_grads(x, y))
        norm = b.optimizer_step(1e-2)
        out[name + ":launches"] = np.array(launch_count() - n0)
        out[name + ":calls"] = np.array(sorted(calls.items()), dtype=object).astype(str)
        out[name + ":grads"] = m.grads_memory.memory.copy_to_host()
        out[name + ":norm"] = np.array(norm)
        for k in ("losses", "probs"):
            out[name + ":" + k] = m.acts[k].copy_to_host()
        out[name + ":dlogits"] = m.grads_acts["logits"].copy_to_host()
        out[name + ":params"] = m.params_memory.memory.copy_to_host()
    # live parity on the fused path: a second step, verified (probs are written because the step is verified)
    from gpt2lab.gpt2.kernel_backend import VerifiedBackend
    verified = VerifiedBackend(b, every=1)
    m.write_probs = False
    verified.loss_and_grads(x, y)
    verified.optimizer_step(1e-2)
    report = verified.reports[-1]
    out["parity:rows"] = np.array(sorted({{r.tensor for r in report.rows}}))
    out["parity:failures"] = np.array([r.describe() for r in report.failures], dtype=str)
    np.savez(sys.argv[1], **out)
    print(out["default:calls"], out["fused:calls"])
""").format(micro=MICRO, x=X, y=Y, micro_nh=MICRO["n_head"])


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    path = tmp_path_factory.mktemp("host") / "steps.npz"
    run_in_simulator("-c", SCRIPT, str(path), timeout=600)
    return dict(np.load(path))


@pytest.mark.cudasim
@pytest.mark.parametrize("name", ["default", "fused"])
def test_a_step_allocates_nothing_and_copies_once_each_way(steps, name):
    calls = {k: int(v) for k, v in steps[name + ":calls"]}
    # copy_to_host: the loss and grad norm (buffers.StepScalars.read); copy_to_device: the batch and its token
    # runs (KernelGPT2._upload); allocated: nothing (attention_backward v3's scratch D is made once per shape,
    # _cuda.scratch; the fused path's flash backward needs none).
    assert calls == {"copy_to_host": 1, "copy_to_device": 1}, calls


@pytest.mark.cudasim
def test_launch_counter_counts_a_step_and_fusing_cuts_it(steps):
    got = {name: int(steps[name + ":launches"]) for name in LAUNCHES}
    assert got == LAUNCHES, got
    assert got["fused"] < got["default"]


@pytest.mark.cudasim
def test_fused_step_equals_the_default_step(steps):
    lines, bad = [], []
    for key in ("loss", "norm", "losses", "probs", "dlogits", "grads", "params"):
        got, want = steps["fused:" + key], steps["default:" + key]
        max_abs, max_rel, ok = compare(got, want, *(TOL_PARAMS if key == "params" else TOL))
        lines.append(f"{'OK    ' if ok else 'NOT OK'} {key:<8} max_abs {max_abs:.1e}  max_rel {max_rel:.1e}")
        bad += [] if ok else [key]
    assert not bad, "\n".join(lines)
    # and the step did something: the parameters moved, the gradients are not all zero
    assert np.abs(steps["default:grads"]).max() > 1e-3
    assert np.abs(steps["fused:dlogits"]).max() > 1e-3


@pytest.mark.cudasim
def test_live_parity_checks_the_fused_path(steps):
    assert {"probs", "losses", "dlogits", "loss"} <= set(steps["parity:rows"])
    assert steps["parity:failures"].size == 0, steps["parity:failures"]
