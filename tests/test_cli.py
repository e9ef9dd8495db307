"""`gpt2lab`: the subcommand registry, one-line errors with exit code 2, train -> resume -> generate end to end."""
import json
import signal
import subprocess
import sys

import pytest

from gpt2lab.gpt2.cli import COMMANDS, main
from gpt2lab.gpt2.checkpoint import load_checkpoint
from interrupt import signal_after_two_steps
from oneline import one_line_error

CORPUS = ("FIRST CITIZEN:\nBefore we proceed any further, hear me speak.\n\nALL:\nSpeak, speak.\n\n"
          "FIRST CITIZEN:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """`--threads 1` sets torch's global thread count; give the next test what it had."""
    import torch
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return path


def test_registry_names_the_other_teams_modules():
    assert COMMANDS["verify"][0] == "gpt2lab.kernels.verify_cli"
    assert COMMANDS["bench"][0] == "gpt2lab.gpt2.bench_cli"
    assert {"train", "generate"} <= set(COMMANDS)


def test_help_lists_commands_without_importing_torch():
    code = ("import sys, contextlib, io\nfrom gpt2lab.gpt2.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    rc = main(['--help'])\n"
            "assert rc == 0 and 'torch' not in sys.modules, rc\nprint(buf.getvalue())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert name in out.stdout


def test_a_missing_command_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "later", ("gpt2lab.kernels.not_written_yet", "a future command"))
    one_line_error(capsys, main(["later", "--x", "1"]), "gpt2lab later", "not available yet")


@pytest.mark.parametrize("argv, needle", [
    (["--config", "huge"], "unknown --config 'huge'"),
    (["--seq", "129"], "longer than the tiny model's context"),
    (["--data", "no/such/file.txt"], "no such file"),
    (["--steps", "0"], "--steps"),
    (["--batch", "-3"], "--batch"),
    (["--steps", "many"], "--steps"),
    (["--backend", "jax"], "--backend"),
    (["--resume"], "--resume: no checkpoint"),
])
def test_train_bad_arguments_end_in_one_line(argv, needle, capsys, tmp_path, corpus):
    base = ["train", "--steps", "2", "--out", str(tmp_path / "run"), "--data", str(corpus)]
    one_line_error(capsys, main(base + argv), needle)


def _no_gpu() -> bool:
    import torch
    from numba import cuda
    return not torch.cuda.is_available() and not cuda.is_available()


@pytest.mark.skipif(not _no_gpu(), reason="this machine has a GPU")
@pytest.mark.parametrize("backend, needle", [("torch", "no NVIDIA GPU that PyTorch can use"),
                                             ("numba", "no NVIDIA GPU and driver found here")])
def test_train_on_cuda_without_a_gpu_is_one_line(backend, needle, capsys, tmp_path, corpus):
    argv = ["train", "--backend", backend, "--device", "cuda", "--steps", "2", "--out", str(tmp_path / "run"),
            "--data", str(corpus)]
    one_line_error(capsys, main(argv), "--device cuda:", needle)
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_train_on_cuda_says_its_first_step_compiles(monkeypatch, capsys, tmp_path, corpus):
    """Every process compiles the CUDA kernels it launches at their first launch (tens of seconds at 124M on
    v7's kernels): `gpt2lab train --device cuda` says so before the first step, and on the CPU it does not.
    The GPU is stood in for: the run itself is the CPU's."""
    from gpt2lab.gpt2 import train as train_mod
    make_backend = train_mod.make_backend
    monkeypatch.setattr(train_mod, "_check_resources", lambda args, config: None)
    monkeypatch.setattr(train_mod, "make_backend", lambda *a, device="cpu", **k: make_backend(*a, **k))
    for device in ("cuda", "cpu"):
        argv = ["train", "--backend", "numba", "--device", device, "--config", "tiny", "--steps", "1", "--batch",
                "2", "--seq", "8", "--eval-every", "0", "--sample-tokens", "0", "--quiet", "--out",
                str(tmp_path / device), "--data", str(corpus)]
        assert main(argv) == 0
        said = "the first step compiles the CUDA kernels" in capsys.readouterr().err
        assert said == (device == "cuda"), device


@pytest.mark.skipif(not _no_gpu(), reason="this machine has a GPU")
def test_bench_on_cuda_without_a_gpu_is_one_line(capsys):
    one_line_error(capsys, main(["bench", "--device", "cuda", "--no-ops", "--no-tokenizer", "--steps", "tiny"]),
                   "gpt2lab bench: --device cuda", "no")


def test_an_unregistered_backend_is_one_line(monkeypatch, capsys, tmp_path, corpus):
    from gpt2lab.gpt2 import train
    monkeypatch.delitem(train.BACKENDS, "numba")
    argv = ["train", "--backend", "numba", "--out", str(tmp_path / "run"), "--data", str(corpus)]
    one_line_error(capsys, main(argv), "--backend numba is not available yet (available: torch)")


def test_generate_bad_arguments_end_in_one_line(capsys, tmp_path):
    one_line_error(capsys, main(["generate", "--ckpt", str(tmp_path / "nope.pt")]), "no such checkpoint")
    one_line_error(capsys, main(["generate", "--ckpt", "x.pt", "--tokens", "0"]), "--tokens")


def test_train_resume_generate_end_to_end(capsys, tmp_path, corpus):
    out, log = tmp_path / "run", tmp_path / "log.jsonl"
    common = ["train", "--config", "tiny", "--data", str(corpus), "--batch", "2", "--seq", "16", "--out", str(out),
              "--json-log", str(log), "--eval-every", "2", "--eval-batches", "1", "--sample-tokens", "4",
              "--keep-every", "2", "--quiet", "--threads", "1", "--schedule", "constant"]
    assert main(common + ["--steps", "3"]) == 0
    assert main(common + ["--steps", "5", "--resume"]) == 0
    records = [json.loads(ln) for ln in open(log)]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 3, 4, 5]
    assert sorted(p.name for p in out.glob("ckpt_*.pt")) == [
        "ckpt_000000.pt", "ckpt_000002.pt", "ckpt_000003.pt", "ckpt_000004.pt", "ckpt_000005.pt"]
    assert load_checkpoint(out / "latest.pt")["step"] == 5
    err = capsys.readouterr().err
    assert "step 5, train loss" in err and "tokens/s" in err
    argv = ["generate", "--ckpt", str(out / "latest.pt"), "--prompt", "Speak,", "--tokens", "5", "--seed", "3"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    assert first.startswith("Speak,") and capsys.readouterr().out == first


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, corpus):
    out, log = tmp_path / "run", tmp_path / "log.jsonl"
    cmd = [sys.executable, "-m", "gpt2lab.gpt2.cli", "train", "--data", str(corpus), "--batch", "2", "--seq", "8",
           "--steps", "100000", "--out", str(out), "--json-log", str(log), "--eval-every", "0", "--quiet",
           "--threads", "1"]
    returncode, err = signal_after_two_steps(cmd, log, signal.SIGINT)
    assert returncode == 130, err
    assert "Traceback" not in err and "checkpoint saved" in err
    step = load_checkpoint(out / "latest.pt")["step"]
    assert step >= 2 and json.loads(log.read_text().splitlines()[-1])["step"] == step
