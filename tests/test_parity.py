"""The live parity monitor: the op-by-op reference, the comparison, and lock-step training with no fault."""
import json

import numpy as np
import pytest
import torch

from gpt2lab.datasets import BatchSampler, TokenData
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.gpt2.model import GPT2, init_params
from gpt2lab.gpt2.parity import (BLOCK_BACKWARD, BLOCK_FORWARD, HEAD_BACKWARD, ParityMonitor, ParityReport,
                                 ParityRow, format_mismatch)
from gpt2lab.gpt2.reference_ops import reference_forward
from gpt2lab.kernels.check import FLOOR, K, judge

TINY = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32)


def pattern_data(n=4000, V=64, seed=0) -> TokenData:
    """A learnable corpus: a fixed cycle through the vocabulary with 10% random tokens (repeats guaranteed)."""
    rng = np.random.default_rng(seed)
    ids = (np.arange(n) * 5) % V
    noise = rng.random(n) < 0.1
    ids[noise] = rng.integers(0, V, noise.sum())
    ids = ids.astype(np.uint16)
    return TokenData(train=ids[: n * 9 // 10], val=ids[n * 9 // 10:])


def test_reference_forward_is_the_reference_model():
    model = GPT2(TINY).double()
    model.load_params_numpy(init_params(TINY, seed=3))
    idx = torch.randint(0, 64, (3, 11))
    targets = torch.randint(0, 64, (3, 11))
    loss, acts = reference_forward(model, idx, targets)
    logits, ref_loss = model(idx, targets)
    torch.testing.assert_close(acts["logits"], logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert set(acts) >= {name for name, _ in BLOCK_FORWARD} | {"encoded", "lnf", "probs", "losses"}
    assert len(acts["att"]) == TINY.n_layer and acts["att"][0].shape == (3, 2, 11, 11)
    assert float(acts["att"][1][0, 0, 0, 1:].detach().abs().max()) == 0.0       # causal: row 0 sees only key 0
    torch.testing.assert_close(acts["ln1_rstd"][0], 1 / acts["encoded"].var(-1, unbiased=False).add(1e-5).sqrt())


def test_judge_measures_ours_in_units_of_torch32():
    ref = np.array([1.0, -2.0, 1e-9])
    torch32 = ref + np.array([1e-6, 0, 0])                  # PyTorch float32 is 1e-6 off
    v = judge(ref + 4e-6, torch32, ref)
    assert v.ok and v.ratio == pytest.approx(4) and v.torch32_abs == pytest.approx(1e-6) and v.scale == 2
    assert not judge(ref + (K + 1) * 1e-6, torch32, ref).ok
    # where PyTorch is exact, one float32 ulp of the scale is the unit: K ulps pass, more fail
    assert judge(ref + K * FLOOR * 2 * 0.99, ref, ref).ok
    assert not judge(ref + K * FLOOR * 2 * 1.01, ref, ref).ok
    assert judge(ref, ref, ref).ratio == 0
    nan = judge(ref * np.nan, ref, ref)
    assert not nan.ok and nan.ratio == np.inf
    assert not judge(ref[:2], ref, ref).ok


def test_rows_cover_every_op_and_tensor_and_serialise():
    model = KernelGPT2(TINY, seed=0)
    sampler = BatchSampler(pattern_data(), B=2, T=8, seed=0)
    report = ParityMonitor(model).verify_step(*sampler.next("train"), lr=1e-3)
    assert report.ok, format_mismatch(report)
    ops = {r.op for r in report.rows}
    assert ops == {"encoder", "layernorm", "matmul", "attention", "gelu", "residual", "crossentropy", "adamw"}
    L = TINY.n_layer
    n_fwd = 1 + L * len(BLOCK_FORWARD) + 7        # encoded, the blocks, lnf/mean/rstd, logits, probs, losses, loss
    n_bwd = len(HEAD_BACKWARD) + L * len(BLOCK_BACKWARD) + 2
    n_step = 16 * 3                               # every parameter tensor and both moments
    assert [sum(r.direction == d for r in report.rows) for d in ("fwd", "bwd", "step")] == [n_fwd, n_bwd, n_step]
    assert {r.layer for r in report.rows} == {None, 0, 1}
    back = json.loads(json.dumps(report.to_dict()))
    assert back["summary"]["ok"] and back["summary"]["checked"] == len(report.rows)
    assert back["rows"][0] == {"step": 1, "op": "encoder", "layer": None, "direction": "fwd", "tensor": "encoded",
                               **{k: back["rows"][0][k] for k in ("max_abs", "torch32_abs", "scale", "ratio")},
                               "ok": True}


def test_a_perturbed_kernel_tensor_is_named():
    """The monitor compares the kernel's own buffers: spoil one gradient and exactly that row fails."""
    model = KernelGPT2(TINY, seed=0)
    monitor = ParityMonitor(model)
    x, y = BatchSampler(pattern_data(), B=2, T=8, seed=1).next("train")
    monitor.reference_step(x, y)
    model.forward(x, y)
    model.zero_grad()
    model.backward()
    model.grads["fcb"][1] *= 1.01
    report = ParityReport(1, monitor.compare(1))
    assert [(r.op, r.layer, r.tensor) for r in report.failures] == [("matmul", 1, "dfcb")]
    assert "matmul (layer 1, bwd) tensor dfcb" in format_mismatch(report)


def test_lock_step_parity_over_20_steps():
    """Twenty verified training steps with no fault: every tensor of every step within tolerance, and the
    model learns (so the comparison is made on a moving, not a frozen, model)."""
    torch.manual_seed(0)
    model = KernelGPT2(TINY, seed=0)
    monitor = ParityMonitor(model)
    sampler = BatchSampler(pattern_data(), B=4, T=16, seed=0)
    losses, worst = [], 0.0    # worst ours/torch32
    for step in range(1, 21):
        x, y = sampler.next("train")
        report = monitor.verify_step(x, y, lr=3e-3, grad_clip=1.0)
        assert report.ok, format_mismatch(report)
        assert report.step == step and model.step == step
        losses.append(monitor.ref_loss.item())
        worst = max(worst, max(r.ratio for r in report.rows))
    assert losses[-1] < losses[0] - 0.5
    assert worst < K / 2         # the margin: correct kernels are within a few float32 errors of PyTorch


def test_row_describe_names_op_layer_tensor():
    row = ParityRow(7, "gelu", 1, "bwd", "dfch", 2.5e-4, 1e-6, 0.01, 250.0, False)
    text = row.describe()
    assert "gelu" in text and "layer 1" in text and "dfch" in text and "2.500e-04" in text
    assert "ours/torch32 250" in text


def test_trainer_json_log_gains_parity_on_verified_steps(tmp_path):
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    from gpt2lab.gpt2.kernel_backend import VerifiedBackend
    from gpt2lab.gpt2.train import OptimConfig, RunConfig, train
    backend = VerifiedBackend(NumbaBackend(TINY, OptimConfig(grad_clip=1.0), seed=0), every=2, on_mismatch="stop")
    run = RunConfig(steps=4, batch=2, seq=8, eval_every=0, eval_batches=1, ckpt_every=0, sample_tokens=0)
    result = train(backend, pattern_data(), run, tmp_path, json_log=tmp_path / "log.jsonl", progress=False,
                   on_step=backend.on_step)
    assert result.step == 4 and not result.interrupted and backend.mismatch is None
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert ["parity" in r for r in records] == [True, False, True, False]      # steps 1 and 3 of every=2
    assert all(r["parity"]["summary"]["ok"] for r in records if "parity" in r)
    assert records[2]["parity"]["summary"]["step"] == 3 and records[2]["parity"]["rows"][0]["step"] == 3


def test_a_correct_float32_run_of_1000_steps_reports_no_mismatch():
    """The other direction: correct kernels at a high learning rate (3e-3) for 1000 steps, every 10th step
    verified, never fail -- the rule moves with PyTorch float32's own error as the logits grow."""
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    from gpt2lab.gpt2.kernel_backend import VerifiedBackend
    from gpt2lab.gpt2.train import OptimConfig, RunConfig, train
    messages = []
    backend = VerifiedBackend(NumbaBackend(TINY, OptimConfig(grad_clip=1.0), seed=0), every=10, log=messages.append)
    run = RunConfig(steps=1000, batch=4, seq=16, lr=3e-3, warmup=20, eval_every=0, eval_batches=1, ckpt_every=0,
                    sample_tokens=0)
    result = train(backend, pattern_data(8000), run, progress=False, log=messages.append)
    worst = max(r.ratio for report in backend.reports for r in report.rows)
    assert len(backend.reports) == 100 and result.train_loss < 2.0
    assert all(report.ok for report in backend.reports), "\n".join(messages)
    print(f"1000 steps, 100 verified: worst ours/torch32 {worst:.2f} (K = {K:g})")


def test_own_param_grad_is_the_exact_sum_of_the_models_own_inputs():
    """What a parameter-gradient row is judged against: the float64 sum over rows of the kernel model's own
    inputs. It must equal the reference gradient up to float32 inputs (so it can stand in for it), and a
    kernel that drops one row's add must miss it by that row (so the row can fail)."""
    from gpt2lab.gpt2.buffers import PARAM_NAMES
    from gpt2lab.gpt2.parity import own_param_grad
    model = KernelGPT2(TINY, seed=0)
    monitor = ParityMonitor(model)
    x, y = BatchSampler(pattern_data(), B=2, T=8, seed=2).next("train")
    monitor.reference_step(x, y)
    model.forward(x, y)
    model.zero_grad()
    model.backward()
    for name in PARAM_NAMES:
        for layer in ((None,) if name in ("wte", "wpe", "lnfw", "lnfb") else range(TINY.n_layer)):
            own = own_param_grad(model, name, layer)
            ref = monitor.ref64.param_grad(name, layer).numpy()
            ours = np.asarray(model.grads[name] if layer is None else model.grads[name][layer])
            assert own.shape == ref.shape, name
            assert np.abs(own - ref).max() <= 1e-5 * np.abs(ref).max() + 1e-12, (name, layer)
            assert np.abs(ours - own).max() <= 1e-5 * np.abs(ref).max() + 1e-12, (name, layer)
    d = np.asarray(model.grads_acts["ln2"][1]).reshape(-1, TINY.n_embd)[-1]
    model.grads["ln2b"][1] -= d                       # one row's add lost
    row = next(r for r in monitor.compare(1) if r.tensor == "dln2b" and r.layer == 1)
    assert not row.ok and row.max_abs == pytest.approx(np.abs(d).max(), rel=1e-3)
