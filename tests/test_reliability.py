"""Nothing lost, nothing silent: bad input, damaged files, signals and concurrent runs (issue 10).

Each test names the audit's case it guards. The CLI tests use a 2-layer model or the tiny preset at B=2, T=8
and a few steps, so the whole file runs in well under a minute.
"""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from gpt2lab.atomic import atomic_write
from gpt2lab.datasets import TokenData
from gpt2lab.gpt2.checkpoint import CheckpointError, load_checkpoint
from gpt2lab.gpt2.cli import main
from gpt2lab.gpt2.config import GPTConfig, OptimConfig
from gpt2lab.gpt2.guards import NonFiniteError
from gpt2lab.gpt2.train import RunConfig, RunError, TorchBackend, train
from interrupt import signal_after_two_steps

CFG = GPTConfig(block_size=16, vocab_size=61, n_layer=2, n_head=2, n_embd=32)
CORPUS = "FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\n\nALL:\nSpeak, speak.\n\n" * 40

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = ((np.arange(3000) + (rng.random(3000) < 0.1) * rng.integers(0, 61, 3000)) % 61).astype(np.uint16)
    return TokenData(train=ids[:2500], val=ids[2500:])


def run_cfg(**kw):
    return RunConfig(**{**dict(steps=4, batch=2, seq=8, lr=3e-3, eval_every=0, eval_batches=1, ckpt_every=1,
                               sample_tokens=0, seed=7), **kw})


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return path


def train_argv(tmp_path, corpus, *extra):
    return ["train", "--data", str(corpus), "--batch", "2", "--seq", "8", "--steps", "2", "--eval-every", "0",
            "--sample-tokens", "0", "--out", str(tmp_path / "run"), "--quiet", "--threads", "1", *extra]


def one_line(capsys, code, *needles, expect_code=2):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("gpt2lab train: tiny (")]
    assert code == expect_code, err
    assert len(lines) == 1 and "Traceback" not in err and "weights_only" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- 1, 2: hyper-parameters enter checked
@pytest.mark.parametrize("argv, needle", [
    (["--grad-clip", "-1"], "--grad-clip: must be >= 0"),
    (["--grad-clip", "nan"], "--grad-clip: must be a finite number"),
    (["--lr", "inf"], "--lr: must be a finite number"),
    (["--lr", "nan"], "--lr: must be a finite number"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--weight-decay", "nan"], "--weight-decay: must be a finite number"),
    (["--weight-decay", "-0.1"], "--weight-decay: must be >= 0"),
])
def test_bad_hyper_parameters_are_one_line(argv, needle, capsys, tmp_path, corpus):
    one_line(capsys, main(train_argv(tmp_path, corpus, *argv)), needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_generate_temperature_must_be_finite_and_non_negative(value, capsys):
    one_line(capsys, main(["generate", "--ckpt", "x.pt", "--temperature", value]), "--temperature")


@pytest.mark.parametrize("kw, field", [(dict(grad_clip=-1.0), "grad_clip"), (dict(grad_clip=math.nan), "grad_clip"),
                                       (dict(weight_decay=math.inf), "weight_decay"), (dict(eps=0.0), "eps"),
                                       (dict(beta1=1.0), "beta1")])
def test_optim_config_checks_its_fields(kw, field):
    with pytest.raises(ValueError, match=f"OptimConfig: {field} must be"):
        OptimConfig(**kw)


@pytest.mark.parametrize("kw, field", [(dict(lr=math.nan), "lr"), (dict(lr=-1e-3), "lr"), (dict(batch=0), "batch"),
                                       (dict(steps=2.5), "steps"), (dict(schedule="linear"), "schedule"),
                                       (dict(min_lr_frac=2.0), "min_lr_frac")])
def test_run_config_checks_its_fields(kw, field):
    with pytest.raises(ValueError, match=f"RunConfig: {field} must be"):
        run_cfg(**kw)


class NanAt(TorchBackend):
    """A torch backend whose loss (where="loss") or gradients (where="grad") turn nan at optimizer step `at`."""

    def __init__(self, at, where, **kw):
        super().__init__(CFG, OptimConfig(grad_clip=1.0), seed=0, **kw)
        self.at, self.where = at, where

    def loss_and_grads(self, x, y):
        loss = super().loss_and_grads(x, y)
        if self.t + 1 == self.at:
            if self.where == "loss":
                return math.nan
            next(iter(self.params.values())).grad[0] = math.inf
        return loss


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_a_nan_loss_or_grad_norm_stops_before_the_update_and_saves_nothing(where, data, tmp_path):
    backend, messages = NanAt(3, where), []
    r = train(backend, data, run_cfg(steps=6), tmp_path, progress=False, log=messages.append)
    assert r.stopped == "non-finite" and r.step == 2 and r.saved_step == 2 and not r.interrupted
    kept = load_checkpoint(tmp_path / "latest.pt")
    assert kept["step"] == 2
    # the params in memory are still those of step 2: the bad update never happened
    assert all(np.array_equal(kept["params"][n], p) for n, p in backend.state_dict()["params"].items())
    assert "at step 3" in messages[-1] and "holds step 2" in messages[-1]


def test_cli_exits_4_on_a_diverging_run_and_keeps_the_last_good_checkpoint(capsys, tmp_path, corpus):
    code = main(train_argv(tmp_path, corpus, "--lr", "1e6", "--steps", "3", "--ckpt-every", "1"))
    err = capsys.readouterr().err
    assert code == 4, err
    assert "stopped: the loss is nan at step 2" in err and "Traceback" not in err
    ckpt = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert ckpt["step"] == 1 and all(np.isfinite(v).all() for v in ckpt["params"].values())


def test_numba_backend_checks_the_grad_norm_before_adamw():
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    backend = NumbaBackend(CFG, OptimConfig(grad_clip=1.0), seed=0)
    x = np.arange(16).reshape(2, 8) % 61
    backend.model.params["wpe"][1, 0] = np.nan   # a bad weight: every gradient of the step turns nan
    before = backend.model.params_numpy()
    backend.loss_and_grads(x, x)                 # the norm is reduced with the loss (one read-back on a GPU)
    with pytest.raises(NonFiniteError, match="gradient norm is nan at step 1"):
        backend.optimizer_step(1e-3)
    assert backend.model.step == 0
    assert all(np.array_equal(before[n], p, equal_nan=True) for n, p in backend.model.params_numpy().items())


def test_checkpoints_never_hold_non_finite_params(data, tmp_path):
    backend = TorchBackend(CFG, seed=0)
    with torch.no_grad():
        next(iter(backend.params.values()))[0] = math.nan
    r = train(backend, data, run_cfg(steps=1), tmp_path, progress=False, log=lambda s: None)
    assert r.stopped == "non-finite" and not (tmp_path / "latest.pt").exists()


# ---------------------------------------------------------------- 3: one run per folder
def test_an_existing_run_is_refused_without_resume_or_overwrite(capsys, tmp_path, corpus):
    argv = train_argv(tmp_path, corpus, "--keep-every", "1")
    assert main(argv) == 0
    capsys.readouterr()
    before = (tmp_path / "run" / "latest.pt").read_bytes()
    one_line(capsys, main(argv), "already holds a run", "--resume", "--overwrite")
    assert (tmp_path / "run" / "latest.pt").read_bytes() == before
    assert main(argv[:argv.index("--steps")] + ["--steps", "1", "--overwrite"] + argv[argv.index("--steps") + 2:]) == 0
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["step"] == 1
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt_*.pt")) == ["ckpt_000000.pt", "ckpt_000001.pt"]
    capsys.readouterr()
    one_line(capsys, main(argv + ["--resume", "--overwrite"]), "not allowed with argument")


def test_a_run_folder_in_use_names_the_other_process(capsys, tmp_path, corpus):
    (tmp_path / "run").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom gpt2lab.lock import file_lock\n"
         f"with file_lock({str(tmp_path / 'run' / '.lock')!r}, wait=False):\n"
         "    print('held', flush=True)\n    time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line(capsys, main(train_argv(tmp_path, corpus)), "is in use by process", str(holder.pid))
    finally:
        holder.kill()
        holder.wait()
    assert main(train_argv(tmp_path, corpus)) == 0  # the lock went with its holder


def test_the_lock_is_reentrant_in_one_thread_but_not_across_threads(tmp_path):
    import threading

    from gpt2lab.lock import LockedError, file_lock
    errors = []

    def other_thread():
        try:
            with file_lock(tmp_path / ".lock", wait=False):
                pass
        except LockedError as e:
            errors.append(str(e))
    with file_lock(tmp_path / ".lock", wait=False):
        with file_lock(tmp_path / ".lock", wait=False):
            pass
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        with file_lock(tmp_path / ".lock", wait=False):
            pass
    assert len(errors) == 1 and f"in use by process {os.getpid()}" in errors[0]
    other_thread()  # released: now it is free
    assert len(errors) == 1


# ---------------------------------------------------------------- 4: damaged checkpoints
def damaged(tmp_path, how):
    """A checkpoint file broken in one way: empty, truncated, garbage, or a frame where latest.pt belongs."""
    good = tmp_path / "good"
    train(TorchBackend(CFG, seed=0), torch_data(), run_cfg(steps=1, keep_every=1), good, progress=False,
          log=lambda s: None)
    path = tmp_path / "run" / "latest.pt"
    path.parent.mkdir(exist_ok=True)
    raw = (good / "latest.pt").read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "garbage": os.urandom(5000),
                      "bitflip": raw[:2000] + bytes(b ^ 0xFF for b in raw[2000:2400]) + raw[2400:],
                      "frame": (good / "ckpt_000001.pt").read_bytes()}[how])
    return path


def torch_data():
    ids = (np.arange(3000) % 61).astype(np.uint16)
    return TokenData(train=ids[:2500], val=ids[2500:])


@pytest.mark.parametrize("how, needle", [("empty", "is empty"), ("truncated", "is damaged"),
                                         ("garbage", "is damaged"), ("bitflip", "is damaged")])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(how, needle, tmp_path, capsys):
    path = damaged(tmp_path, how)
    with pytest.raises(CheckpointError, match=needle) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "weights_only" not in str(e.value)
    one_line(capsys, main(["generate", "--ckpt", str(path), "--tokens", "2"]), str(path), needle)


@pytest.mark.parametrize("how, needle", [("truncated", "is damaged"), ("empty", "is empty"),
                                         ("frame", "not a full one")])
def test_resume_from_a_damaged_or_frame_checkpoint_is_one_line(how, needle, tmp_path, capsys):
    path = damaged(tmp_path, how)
    text = tmp_path / "corpus.txt"
    text.write_text(CORPUS)
    argv = train_argv(tmp_path, text, "--resume")
    one_line(capsys, main(argv), str(path), needle)


def test_the_course_cache_trains_again_over_a_damaged_latest(tmp_path, monkeypatch, capsys):
    from gpt2lab.gpt2 import course
    folder = tmp_path / "course-tiny"
    folder.mkdir()
    (folder / "key").write_text(course._key())
    (folder / "latest.pt").write_bytes(b"PK\x03\x04 cut short")
    assert course._can_resume(folder) is False
    err = capsys.readouterr().err
    assert str(folder / "latest.pt") in err and "training it again from the start" in err


def test_the_course_cache_rebuilds_over_a_damaged_frame(tmp_path, monkeypatch, capsys):
    from gpt2lab.gpt2 import course
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 60)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path / "cache"))
    for k, v in dict(data=str(corpus), steps=2, batch=2, seq=8, keep_every=1).items():
        monkeypatch.setitem(course.COURSE, k, v)
    model, _ = course.course_model()
    frame = course.course_dir() / "ckpt_000002.pt"
    frame.write_bytes(frame.read_bytes()[:100])
    capsys.readouterr()
    again, info = course.course_model()
    err = capsys.readouterr().err
    assert str(frame) in err and "rebuilding the course cache" in err
    assert info["step"] == 2 and all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


# ---------------------------------------------------------------- 5: a torn last line of the JSON log
def test_resume_drops_a_torn_last_log_line_and_says_so(data, tmp_path):
    log = tmp_path / "log.jsonl"
    train(TorchBackend(CFG, seed=0), data, run_cfg(steps=2), tmp_path, json_log=log, progress=False,
          log=lambda s: None)
    with log.open("a") as f:
        f.write('{"step": 3, "loss": 4.1, "parity": {"rows": [1, 2')  # killed mid-line
    messages = []
    r = train(TorchBackend(CFG, seed=0), data, run_cfg(steps=4), tmp_path, json_log=log, resume=True,
              progress=False, log=messages.append)
    assert r.step == 4 and [json.loads(ln)["step"] for ln in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert any("dropped its last line" in m and str(log) in m for m in messages)


def test_a_damaged_log_line_in_the_middle_is_one_line(data, tmp_path):
    log = tmp_path / "log.jsonl"
    train(TorchBackend(CFG, seed=0), data, run_cfg(steps=2), tmp_path, json_log=log, progress=False,
          log=lambda s: None)
    log.write_text("not json\n" + log.read_text())
    with pytest.raises(RunError, match="line 1 is not JSON"):
        train(TorchBackend(CFG, seed=0), data, run_cfg(steps=3), tmp_path, json_log=log, resume=True,
              progress=False, log=lambda s: None)


# ---------------------------------------------------------------- 6: interruptions
def test_sigterm_saves_like_the_first_ctrl_c(tmp_path, corpus):
    out, log = tmp_path / "run", tmp_path / "log.jsonl"
    cmd = [sys.executable, "-m", "gpt2lab.gpt2.cli", *train_argv(tmp_path, corpus, "--steps", "100000",
                                                                 "--json-log", str(log))]
    returncode, err = signal_after_two_steps(cmd, log, signal.SIGTERM)
    assert returncode == 143, err
    assert "Traceback" not in err and "(SIGTERM): checkpoint saved" in err
    step = load_checkpoint(out / "latest.pt")["step"]
    assert step >= 2 and json.loads(log.read_text().splitlines()[-1])["step"] == step
    assert f"holds step {step}" in err.strip().splitlines()[-1]


class CtrlCTwiceInUpdate(TorchBackend):
    """Ctrl-C, then Ctrl-C again, both while AdamW updates the parameters of step `at`."""

    def __init__(self, at):
        super().__init__(CFG, seed=0)
        self.at = at

    def optimizer_step(self, lr):
        if self.t + 1 == self.at:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return super().optimizer_step(lr)


def test_a_second_ctrl_c_in_the_update_reports_the_step_on_disk(data, tmp_path):
    messages = []
    r = train(CtrlCTwiceInUpdate(at=4), data, run_cfg(steps=8, ckpt_every=2), tmp_path, progress=False,
              log=messages.append)
    assert r.interrupted and r.stopped == "SIGINT" and r.saved_step == 2
    assert load_checkpoint(tmp_path / "latest.pt")["step"] == 2
    assert "inside the update of step 4" in messages[-1] and "holds step 2" in messages[-1]


# ---------------------------------------------------------------- 7: temp files, fsync
def test_stale_temp_files_are_removed_at_start(data, tmp_path):
    stale = tmp_path / ".latest.pt.k1ll3d.tmp"
    stale.write_bytes(b"x" * 1000)
    messages = []
    train(TorchBackend(CFG, seed=0), data, run_cfg(steps=1), tmp_path, progress=False, log=messages.append)
    assert not stale.exists() and not list(tmp_path.glob(".*.tmp"))
    assert any("removed 1 temp file(s)" in m for m in messages)


def test_atomic_write_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real(fd)))
    atomic_write(tmp_path / "f.bin", lambda f: f.write(b"data"))
    import stat
    assert [stat.S_ISREG(m) for m in synced] == [True, False]  # the file, then its folder


# ---------------------------------------------------------------- 9: token ids are checked before any cast
@pytest.mark.parametrize("ids, error, needle", [
    (np.array([[1.7, 2.0]]), TypeError, "integer token ids, got dtype float64"),
    (np.array([[True, False]]), TypeError, "got dtype bool"),
    (np.array([[1 + 0j, 2]]), TypeError, "got dtype complex128"),
    (np.array([["a", "b"]]), TypeError, "got dtype <U1"),
    (np.array([[2**32 + 5, 1]]), ValueError, "got values in [1, 4294967301]"),
    (np.array([[-2**32 + 5, 1]]), ValueError, "got values in [-4294967291, 1]"),
])
def test_kernel_model_checks_token_ids_before_casting(ids, error, needle):
    from gpt2lab.gpt2.kernel_model import KernelGPT2
    model = KernelGPT2(CFG, seed=0)
    with pytest.raises(error, match=f"KernelGPT2.forward: idx must be .*{needle.replace('[', '.').replace(']', '.')}"):
        model.forward(ids)
    assert model.forward(np.array([[1, 2]], dtype=np.uint8)) is None  # any integer dtype in range is fine


# ---------------------------------------------------------------- 10: the user's umask
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "f.bin", lambda f: f.write(b"data"))
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == mode


# ---------------------------------------------------------------- 11: the smaller ones
def test_out_pointing_at_a_file_is_one_line_before_training(capsys, tmp_path, corpus):
    (tmp_path / "run").write_text("not a folder")
    one_line(capsys, main(train_argv(tmp_path, corpus)), "is a file, not a folder")


def test_json_log_pointing_at_a_folder_is_one_line(capsys, tmp_path, corpus):
    one_line(capsys, main(train_argv(tmp_path, corpus, "--json-log", str(tmp_path))), "--json-log", "is a folder")
    with pytest.raises(RunError, match="is a folder"):
        train(TorchBackend(CFG, seed=0), torch_data(), run_cfg(steps=1), json_log=tmp_path, progress=False)


def test_device_cuda_without_a_gpu_is_one_line(capsys, tmp_path, corpus):
    from numba import cuda
    if cuda.is_available():
        pytest.skip("a GPU is present")
    one_line(capsys, main(train_argv(tmp_path, corpus, "--backend", "numba", "--device", "cuda")),
             "--device cuda: no NVIDIA GPU")


def test_bench_unknown_step_config_is_one_line(capsys):
    one_line(capsys, main(["bench", "--steps", "nosuch", "--no-ops", "--no-tokenizer"]), "--steps nosuch",
             "unknown config")


def test_a_batch_too_big_for_memory_says_how_much_it_needs(capsys, tmp_path, corpus):
    line = one_line(capsys, main(train_argv(tmp_path, corpus, "--batch", "10000000")), "--batch 10000000",
                    "GiB", "lower --batch or --seq")
    assert not (tmp_path / "run").exists(), line


def test_matmul_forward_refuses_an_output_aliasing_its_input():
    from gpt2lab.kernels.matmul import matmul_forward
    buf = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)
    weight = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="matmul_forward: out must not share memory with inp"):
        matmul_forward(buf, buf, weight, None)
    with pytest.raises(ValueError, match="out must not share memory with weight"):
        matmul_forward(weight.reshape(1, 8, 8), np.ones((1, 8, 8), np.float32), weight, None)


@pytest.mark.parametrize("name", ["lr", "beta1", "eps", "weight_decay"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_adamw_update_refuses_non_finite_hyper_parameters(name, bad):
    from gpt2lab.kernels.adamw import adamw_update
    p, g, m, v = (np.ones(4, np.float32) for _ in range(4))
    with pytest.raises(ValueError, match=f"adamw_update: {name} must be a finite number"):
        adamw_update(p, g, m, v, 1, **{name: bad})
    assert np.array_equal(p, np.ones(4, np.float32))


def test_resume_refuses_another_batch_or_seq_and_warns_for_another_lr(capsys, tmp_path, corpus):
    assert main(train_argv(tmp_path, corpus)) == 0
    capsys.readouterr()
    one_line(capsys, main(train_argv(tmp_path, corpus, "--resume", "--steps", "3", "--batch", "3")),
             "--batch 3 differs from the checkpoint's 2")
    one_line(capsys, main(train_argv(tmp_path, corpus, "--resume", "--steps", "3", "--seq", "6")),
             "--seq 6 differs from the checkpoint's 8")
    assert main(train_argv(tmp_path, corpus, "--resume", "--steps", "3", "--lr", "2e-3")) == 0
    err = capsys.readouterr().err
    assert "resuming with lr 0.002 (the saved run had 0.001)" in err
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["step"] == 3


def test_running_out_of_memory_mid_run_is_one_line(capsys, tmp_path, corpus, monkeypatch):
    def no_memory(self, x, y):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 123456789 bytes")
    monkeypatch.setattr(TorchBackend, "loss_and_grads", no_memory)
    one_line(capsys, main(train_argv(tmp_path, corpus)), "out of memory: --batch 2 --seq 8 needs about", "GiB")
