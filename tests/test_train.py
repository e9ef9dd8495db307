"""The trainer, the torch backend's AdamW, checkpoints and exact resume, on a tiny model and synthetic tokens."""
import json
import os
import signal

import numpy as np
import pytest
import torch

from gpt2lab.datasets import TokenData
from gpt2lab.gpt2.checkpoint import load_checkpoint, load_model
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.model import GPT2
from gpt2lab.gpt2.train import OptimConfig, RunConfig, TorchBackend, decays, lr_at, make_backend, train

CFG = GPTConfig(block_size=16, vocab_size=61, n_layer=2, n_head=2, n_embd=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    """A learnable synthetic corpus: a noisy counter mod 61."""
    rng = np.random.default_rng(0)
    ids = (np.arange(6000) + (rng.random(6000) < 0.1) * rng.integers(0, 61, 6000)) % 61
    ids = ids.astype(np.uint16)
    return TokenData(train=ids[:5000], val=ids[5000:])


def run_cfg(**kw):
    return RunConfig(**{**dict(steps=8, batch=4, seq=12, lr=3e-3, eval_every=4, eval_batches=2, ckpt_every=0,
                               sample_tokens=5, seed=7), **kw})


def losses(result_or_path):
    if isinstance(result_or_path, (str, os.PathLike)):
        return [json.loads(ln)["loss"] for ln in open(result_or_path)]
    return [r["loss"] for r in result_or_path.history]


def test_lr_schedules():
    assert lr_at(0, 1.0, 100, "constant") == lr_at(99, 1.0, 100, "constant") == 1.0
    assert lr_at(0, 1.0, 100) == 1.0 and lr_at(99, 1.0, 100) == pytest.approx(0.1)
    assert lr_at(49, 1.0, 99) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(0, 1.0, 100, warmup=10) == pytest.approx(0.1) and lr_at(10, 1.0, 100, warmup=10) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 1.0, 10, "linear")


def test_weight_decay_applies_to_matrices_only():
    names = {n for n, p in GPT2(CFG).named_parameters() if decays(n, p.shape)}
    assert names == {"transformer.wte.weight", "transformer.wpe.weight"} | {
        f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                        "mlp.c_proj")}


def test_adamw_equals_torch_adamw_with_nanogpt_groups(data):
    ours = TorchBackend(CFG, OptimConfig(), seed=1)
    ref = GPT2(CFG)
    ref.load_params_numpy(ours.state_dict()["params"])
    named = dict(ref.named_parameters())
    groups = [{"params": [p for n, p in named.items() if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for n, p in named.items() if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    rng = np.random.default_rng(0)
    # step 1 sees identical grads: the updates agree to rounding. Later steps drift apart a little, because the
    # key bias's true gradient is 0 (softmax ignores a shift shared by all keys) and Adam normalises its
    # round-off noise to steps of size ~lr.
    for step, atol in ((1, 1e-7), (2, 5e-5), (3, 5e-5)):
        x, y = data.batch("train", 4, 12, rng)
        ours.loss_and_grads(x, y)
        ours.optimizer_step(1e-2)
        opt.zero_grad()
        ref(torch.from_numpy(x), torch.from_numpy(y))[1].backward()
        opt.step()
        mine = ours.state_dict()["params"]
        for n, p in named.items():
            np.testing.assert_allclose(mine[n], p.detach().numpy(), rtol=0, atol=atol, err_msg=f"{n} step {step}")


def test_grad_clipping_scales_the_update(data):
    x, y = data.batch("train", 4, 12, np.random.default_rng(1))
    a = TorchBackend(CFG, OptimConfig(grad_clip=1e-3), seed=0)
    b = TorchBackend(CFG, OptimConfig(grad_clip=None), seed=0)
    a.loss_and_grads(x, y)
    b.loss_and_grads(x, y)
    norm = a.optimizer_step(1e-2)
    assert norm > 1e-3 and norm == pytest.approx(b.optimizer_step(1e-2), rel=1e-6)
    # Adam is scale-invariant except for eps, so compare the first moments: clipped m = unclipped m * 1e-3/norm
    ma, mb = a.state_dict()["optim"]["m"], b.state_dict()["optim"]["m"]
    np.testing.assert_allclose(ma["transformer.wte.weight"], mb["transformer.wte.weight"] * 1e-3 / norm,
                               rtol=1e-4, atol=1e-12)


def test_backend_state_dict_round_trip():
    a = TorchBackend(CFG, seed=3)
    state = a.state_dict()
    assert all(v.dtype == np.float32 for v in state["params"].values())
    assert set(state["params"]) == set(state["optim"]["m"]) == {n for n, _ in GPT2(CFG).named_parameters()}
    b = make_backend("torch", CFG, seed=4)
    b.load_state_dict(state)
    assert all(np.array_equal(state["params"][n], v) for n, v in b.state_dict()["params"].items())
    with pytest.raises(ValueError, match="'jax' is not available yet"):
        make_backend("jax", CFG)


def test_training_lowers_the_loss_and_logs_evals(data, tmp_path):
    log = tmp_path / "log.jsonl"
    r = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=30, eval_every=10), tmp_path, json_log=log,
              progress=False, log=lambda s: None)
    records = [json.loads(ln) for ln in open(log)]
    assert [rec["step"] for rec in records] == list(range(1, 31))
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(records[0])
    assert [rec["step"] for rec in records if "val_loss" in rec] == [10, 20, 30]
    assert np.mean(losses(r)[-5:]) < losses(r)[0] - 0.5
    assert r.val_loss == records[-1]["val_loss"] and not r.interrupted and r.step == 30


def test_resume_continues_exactly(data, tmp_path):
    """2N steps in one run == N steps, interrupted, + resume for N more: the same losses, bit for bit."""
    N = 5
    whole = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=2 * N), tmp_path / "a", progress=False,
                  log=lambda s: None)

    def stop_at_n(record):
        if record["step"] == N:
            raise KeyboardInterrupt  # what Ctrl-C does, at a step boundary

    out, log = tmp_path / "b", tmp_path / "b.jsonl"
    first = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=2 * N), out, json_log=log, progress=False,
                  on_step=stop_at_n, log=lambda s: None)
    assert first.interrupted and first.step == N and load_checkpoint(out / "latest.pt")["step"] == N
    # a fresh backend with a different init seed: everything must come from the checkpoint
    second = train(TorchBackend(CFG, seed=99), data, run_cfg(steps=2 * N), out, json_log=log, resume=True,
                   progress=False, log=lambda s: None)
    assert losses(first) + losses(second) == losses(whole)
    assert losses(log) == losses(whole)  # the JSON log was appended to, not restarted
    assert second.val_loss == whole.val_loss
    a, b = load_checkpoint(tmp_path / "a" / "latest.pt"), load_checkpoint(out / "latest.pt")
    assert all(np.array_equal(a["params"][n], b["params"][n]) for n in a["params"])


def test_resume_with_constant_lr_from_a_shorter_run(data, tmp_path):
    N = 4
    whole = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=2 * N, schedule="constant"), tmp_path / "a",
                  progress=False, log=lambda s: None)
    first = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=N, schedule="constant"), tmp_path / "b",
                  progress=False, log=lambda s: None)
    second = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=2 * N, schedule="constant"), tmp_path / "b",
                   resume=True, progress=False, log=lambda s: None)
    assert losses(first) + losses(second) == losses(whole)


def test_sigint_saves_a_checkpoint_after_the_current_step(data, tmp_path):
    def ctrl_c(record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    messages = []
    r = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=50), tmp_path, progress=False, on_step=ctrl_c,
              log=messages.append)
    assert r.interrupted and r.step == 3
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 3
    assert "interrupted at step 3" in messages[-1] and "--resume" in messages[-1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_checkpoints_frames_and_atomic_writes(data, tmp_path):
    backend = TorchBackend(CFG, seed=0)
    train(backend, data, run_cfg(steps=7, ckpt_every=3, keep_every=3), tmp_path, progress=False,
          log=lambda s: None)
    names = sorted(p.name for p in tmp_path.iterdir())  # no temp files left; .lock is the run folder's lock
    assert names == [".lock", "ckpt_000000.pt", "ckpt_000003.pt", "ckpt_000006.pt", "ckpt_000007.pt", "latest.pt"]
    full, frame = load_checkpoint(tmp_path / "latest.pt"), load_checkpoint(tmp_path / "ckpt_000003.pt")
    assert full["kind"] == "full" and full["step"] == 7 and full["optim"]["step"] == 7
    assert full["config"] == CFG and full["backend"] == "torch" and full["run"]["keep_every"] == 3
    assert frame["kind"] == "frame" and frame["step"] == 3 and frame.get("optim") is None
    model, _ = load_model(tmp_path / "ckpt_000007.pt")
    assert all(np.array_equal(v, backend.state_dict()["params"][n]) for n, v in model.params_numpy().items())
    init = load_checkpoint(tmp_path / "ckpt_000000.pt")["params"]
    assert all(np.array_equal(init[n], v) for n, v in TorchBackend(CFG, seed=0).state_dict()["params"].items())


def test_resume_rejects_a_missing_or_mismatched_checkpoint(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a checkpoint"):
        train(TorchBackend(CFG), data, run_cfg(), tmp_path, resume=True, progress=False)
    train(TorchBackend(CFG), data, run_cfg(steps=1), tmp_path, progress=False, log=lambda s: None)
    other = GPTConfig(block_size=16, vocab_size=61, n_layer=1, n_head=2, n_embd=32)
    with pytest.raises(ValueError, match="differs"):
        train(TorchBackend(other), data, run_cfg(steps=2), tmp_path, resume=True, progress=False)


def test_course_model_trains_once_then_loads(tmp_path, monkeypatch):
    from gpt2lab.gpt2 import course
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 60)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(course.COURSE, "data", str(corpus))
    monkeypatch.setitem(course.COURSE, "steps", 4)
    monkeypatch.setitem(course.COURSE, "batch", 2)
    monkeypatch.setitem(course.COURSE, "seq", 8)
    monkeypatch.setitem(course.COURSE, "keep_every", 2)
    model, info = course.course_model()
    assert info["step"] == 4 and info["val_loss"] is not None and len(info["history"]["train_loss"]) == 4
    assert [s for s, _ in course.course_checkpoints()] == [0, 2, 4]
    assert not (course.course_dir() / "latest.pt").exists()  # the resume state is dropped once done
    assert course.course_dir() == tmp_path / "cache" / "course-tiny"

    def no_training(*a, **k):
        raise AssertionError("the cached course model was trained again")

    monkeypatch.setattr(course, "_train_course", no_training)
    again, info2 = course.course_model()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    first, info0 = course.course_model(step=0)
    assert info0["train_loss"] is None and not torch.equal(first.transformer.wte.weight, model.transformer.wte.weight)
    with pytest.raises(ValueError, match=r"no frame at step 3; frames exist at steps \[0, 2, 4\]"):
        course.course_model(step=3)
    monkeypatch.setitem(course.COURSE, "steps", 6)  # a changed recipe is never served from a stale cache
    with pytest.raises(AssertionError, match="trained again"):
        course.course_model()
