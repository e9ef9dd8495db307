"""The GPU's own launch configurations, run in numba's CUDA simulator.

Some launchers pick a smaller launch in the simulator than on a GPU, because the simulator runs every CUDA
thread in Python: the fused classifier (32 threads a row there, BLOCK = 256 on a GPU), the step's
loss and grad-norm reduction (StepScalars: blocks of 32, not 256), the grid-stride kernels of
gpt2/buffers.py (one block of 32, not as many blocks of 256 as the data needs) and flash attention v5 (blocks
of 8 rows x 4 threads and 8-key tiles, not 32 rows and 32 keys). Every other test then checks
these kernels at a launch the GPU never makes: a shared array too small for 256 threads, a tree reduction
wrong past 32, or a grid-stride loop wrong across several blocks would pass them all. Here each runs once
with the GPU's configuration (kernels/resources.py's table lists the same blocks), against float64 numpy.
"""
import json
import textwrap

import numpy as np
import pytest

from simulated import run_in_simulator

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import config, cuda
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.kernels._cudasim import install
    install()
    from gpt2lab.kernels.crossentropy import BLOCK, fused_classifier
    from gpt2lab.gpt2.buffers import (SCALAR_BLOCK, StepScalars, fill_kernel, launch_config, scale_kernel,
                                      sumsq_kernel)
    rng, out = np.random.default_rng(0), {}

    # the fused classifier: V = 300 > BLOCK, so each thread takes a strided share and the tree spans all 256
    B, T, V = 1, 2, 300
    logits = (rng.standard_normal((B, T, V)) * 3).astype(np.float32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    dlosses = rng.standard_normal((B, T)).astype(np.float32)
    for threads in (BLOCK, 32):
        d = {k: cuda.to_device(np.zeros(s, np.float32)) for k, s in
             (("losses", (B, T)), ("dlogits", (B, T, V)), ("probs", (B, T, V)))}
        fused_classifier(d["losses"], d["dlogits"], d["probs"], cuda.to_device(logits), cuda.to_device(targets),
                         cuda.to_device(dlosses), write_probs=True, threads=threads)
        out[f"classifier_{threads}"] = {k: v.copy_to_host().tolist() for k, v in d.items()}
    try:
        fused_classifier(d["losses"], d["dlogits"], d["probs"], cuda.to_device(logits), cuda.to_device(targets),
                         cuda.to_device(dlosses), threads=48)
    except ValueError as e:
        out["classifier_bad_threads"] = str(e)

    # the step's two scalars at the GPU's block, over three grad blocks
    losses = rng.standard_normal(37).astype(np.float32)
    grads = rng.standard_normal(__N__).astype(np.float32)
    out["scalars"] = StepScalars(block=SCALAR_BLOCK, grad_blocks=3).read(cuda.to_device(losses), cuda.to_device(grads))
    try:
        StepScalars(block=48)
    except ValueError as e:
        out["scalars_bad_block"] = str(e)

    # the grid-stride kernels at the GPU's launch for n elements: several blocks of 256
    n = __N__
    grid = launch_config(n, simulated=False)
    out["grid"] = list(grid)
    a = cuda.to_device(np.zeros(n, np.float32))
    fill_kernel[grid](a, np.float32(2.5), n)
    scale_kernel[grid](a, np.float32(-2.0), n)
    out["filled_scaled"] = sorted(set(a.copy_to_host().tolist()))
    total = cuda.to_device(np.zeros(1, np.float64))
    sumsq_kernel[grid](total, cuda.to_device(grads), n)
    out["sumsq"] = float(total.copy_to_host()[0])

    # flash attention v5 at the GPU's block (FLASH_ROWS rows x LANES threads; the other tests run the simulator's
    # 8 rows): T = 40 spans two 32-row tiles, the second partly past T. One head: 128 simulated threads are slow
    from gpt2lab.kernels.attention import FLASH_ROWS, _flash_launch
    B, T, C, NH = 1, 40, 8, 1
    qkv = cuda.to_device((rng.standard_normal((B, T, 3 * C)) * 2).astype(np.float32))
    dout = cuda.to_device(rng.standard_normal((B, T, C)).astype(np.float32))
    (fwd, dkv, dq), launch = _flash_launch("v5", B, T, C, NH, rows=FLASH_ROWS)
    d = {k: cuda.to_device(np.zeros(s, np.float32)) for k, s in
         (("out", (B, T, C)), ("lse", (B, NH, T)), ("dinp", (B, T, 3 * C)))}
    fwd[launch](d["out"], d["lse"], qkv, NH)
    dkv[launch](d["dinp"], dout, qkv, d["out"], d["lse"], NH)
    dq[launch](d["dinp"], dout, qkv, d["out"], d["lse"], NH)
    out["flash_v5_32"] = {"launch": [list(launch[0]), launch[1]], "qkv": qkv.copy_to_host().tolist(),
                          "dout": dout.copy_to_host().tolist(), **{k: v.copy_to_host().tolist() for k, v in d.items()}}
    print(json.dumps(out))
""")
N = 1000   # 4 blocks of 256 at the GPU's launch, the last one partly past the end


def reference_classifier(seed=0):
    """The same draws as the script, in float64: losses, probs and dlogits."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((1, 2, 300)) * 3).astype(np.float32).astype(np.float64)
    targets = rng.integers(0, 300, (1, 2)).astype(np.int32)
    dlosses = rng.standard_normal((1, 2)).astype(np.float32).astype(np.float64)
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    onehot = np.zeros_like(probs)
    np.put_along_axis(onehot, targets[..., None].astype(np.int64), 1.0, -1)
    losses = -np.log(np.take_along_axis(probs, targets[..., None].astype(np.int64), -1))[..., 0]
    rest = rng   # the script draws losses and grads next, from the same generator
    return {"losses": losses, "probs": probs, "dlogits": (probs - onehot) * dlosses[..., None]}, rest


@pytest.fixture(scope="module")
def simulated():
    proc = run_in_simulator("-c", SCRIPT.replace("__N__", str(N)), timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.cudasim
@pytest.mark.parametrize("threads", [256, 32])
def test_the_fused_classifier_at_the_gpus_block_and_the_simulators(simulated, threads):
    ref, _ = reference_classifier()
    got = simulated[f"classifier_{threads}"]
    for name in ("losses", "probs", "dlogits"):
        np.testing.assert_allclose(np.array(got[name]), ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.cudasim
def test_a_block_that_is_not_a_power_of_two_is_refused_in_one_line(simulated):
    assert simulated["classifier_bad_threads"] == "fused_classifier: threads must be a power of two <= 256, got 48"
    assert simulated["scalars_bad_block"] == "StepScalars: block must be a power of two <= 256, got 48"


@pytest.mark.cudasim
def test_the_step_scalars_and_grid_stride_kernels_at_the_gpus_launch(simulated):
    _, rng = reference_classifier()
    losses = rng.standard_normal(37).astype(np.float32).astype(np.float64)
    grads = rng.standard_normal(N).astype(np.float32).astype(np.float64)
    loss_sum, grad_sq = simulated["scalars"]
    assert loss_sum == pytest.approx(losses.sum(), rel=1e-12)
    assert grad_sq == pytest.approx((grads ** 2).sum(), rel=1e-12)
    assert simulated["grid"] == [4, 256]
    assert simulated["filled_scaled"] == [-5.0]   # every element written, each once
    assert simulated["sumsq"] == pytest.approx((grads ** 2).sum(), rel=1e-12)


@pytest.mark.cudasim
def test_flash_attention_v5_at_the_gpus_block(simulated):
    """v5 against the CPU's flash loops (the same math, checked against PyTorch by the harness)."""
    from gpt2lab.kernels.attention import attention_backward_flash, attention_forward_flash
    got = simulated["flash_v5_32"]
    assert got["launch"] == [[2, 1], 128]
    qkv, dout = (np.array(got[k], np.float32) for k in ("qkv", "dout"))
    out, lse, dinp = np.zeros_like(dout), np.zeros((1, 1, 40), np.float32), np.zeros_like(qkv)
    attention_forward_flash(out, lse, qkv, 1)
    attention_backward_flash(dinp, dout, qkv, out, lse, 1)
    for name, want in (("out", out), ("lse", lse), ("dinp", dinp)):
        np.testing.assert_allclose(np.array(got[name]), want, rtol=1e-4, atol=1e-5, err_msg=name)
