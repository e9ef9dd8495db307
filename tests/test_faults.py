"""Injected faults: live parity during training flags each one at the first verified step and names its op."""
import contextlib
import json

import numpy as np
import pytest

from gpt2lab.datasets import TokenData
from gpt2lab.gpt2.config import GPTConfig
from gpt2lab.gpt2.faults import FAULTS, inject
from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.gpt2.kernel_backend import NumbaBackend, VerifiedBackend
from gpt2lab.gpt2.parity import ParityMismatch
from gpt2lab.gpt2.train import OptimConfig, RunConfig, train
from gpt2lab.kernels import gelu

TINY = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32)


def token_data(seed=0) -> TokenData:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, TINY.vocab_size, 3000).astype(np.uint16)  # 32 tokens per batch from 64: repeats
    return TokenData(train=ids[:2700], val=ids[2700:])


def verified_training(tmp_path, fault=None, on_mismatch="stop", steps=4):
    """Train TINY with every step verified, with `fault` injected; returns (VerifiedBackend, TrainResult, log
    records, messages)."""
    messages = []
    backend = VerifiedBackend(NumbaBackend(TINY, OptimConfig(grad_clip=1.0), seed=0), every=1,
                              on_mismatch=on_mismatch, log=messages.append)
    run = RunConfig(steps=steps, batch=2, seq=16, lr=1e-3, eval_every=0, eval_batches=1, ckpt_every=0,
                    sample_tokens=0)
    with (inject(fault, backend) if fault else contextlib.nullcontext()):
        result = train(backend, token_data(), run, tmp_path, json_log=tmp_path / "log.jsonl", progress=False,
                       on_step=backend.on_step, log=messages.append)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    return backend, result, records, messages


def test_each_fault_is_caught_at_the_first_verified_step_and_named(tmp_path):
    caught, table = [], []
    for i, (name, fault) in enumerate(FAULTS.items()):
        out = tmp_path / name
        backend, result, records, messages = verified_training(out, name)
        first = backend.mismatch.first_failure if backend.mismatch else None
        ok = (first is not None and backend.mismatch.step == 1 and first.op == fault.op
              and result.stopped == "mismatch" and not result.interrupted and result.step == 1
              and not (out / "latest.pt").exists() and (out / "mismatch_step000001.pt").is_file()
              and records[0]["parity"]["summary"]["ok"] is False
              and any(fault.op in m and first.tensor in m for m in messages))
        caught += [name] if ok else []
        table.append(f"{name:34s} -> {first.op if first else None} {first.tensor if first else ''}")
    summary = f"{len(FAULTS)} injected / {len(caught)} caught\n" + "\n".join(table)
    print(summary)
    assert len(caught) == len(FAULTS) == 17, summary
    assert {f.op for f in FAULTS.values() if f.subtle} == {f.op for f in FAULTS.values()}   # a subtle one per op


def test_adamw_fault_shows_only_after_the_step(tmp_path):
    """Forward and backward are fine; only the parameters after the update differ from torch.optim.AdamW."""
    backend, *_ = verified_training(tmp_path, "adamw_no_bias_correction")
    failures = backend.mismatch.failures
    assert failures and {r.direction for r in failures} == {"step"} and {r.op for r in failures} == {"adamw"}
    assert not any(r.tensor.endswith((".m", ".v")) for r in failures)   # the moments themselves are right


def test_warn_keeps_training_and_logs_every_mismatch(tmp_path):
    backend, result, records, messages = verified_training(tmp_path, "gelu_backward_off", "warn", steps=3)
    assert not result.interrupted and result.step == 3 and not backend.stopped
    assert [r["parity"]["summary"]["first_failure"]["op"] for r in records] == ["gelu"] * 3
    assert sum("parity MISMATCH" in m for m in messages) == 3


def test_stop_report_names_op_layer_tensor_and_error(tmp_path):
    backend, *_ = verified_training(tmp_path, "residual_backward_one_branch")
    text = backend.stop_report()
    assert text.startswith("training stopped: parity MISMATCH at step 1: residual (layer 1, bwd) tensor dfcproj")
    assert "max abs err" in text
    err = ParityMismatch(backend.mismatch)  # a plain error the trainer catches by name, not a Ctrl-C
    assert isinstance(err, RuntimeError) and not isinstance(err, KeyboardInterrupt)


def test_inject_swaps_one_models_kernel_and_restores_it():
    model, other = KernelGPT2(TINY), KernelGPT2(TINY)
    assert model.kernels.gelu_backward is gelu.gelu_backward
    with pytest.raises(RuntimeError):
        with inject("gelu_backward_off", model) as fault:
            assert model.kernels.gelu_backward is fault.variant
            assert other.kernels.gelu_backward is gelu.gelu_backward     # only that model: one swap point
            assert gelu.gelu_backward.__name__ == "gelu_backward"        # the library is never patched
            raise RuntimeError("restored even on an error")
    assert model.kernels.gelu_backward is gelu.gelu_backward
    with pytest.raises(ValueError, match="unknown fault 'nope'; choose from layernorm_backward_no_mean"):
        with inject("nope", model):
            pass


def cli_args(tmp_path, *extra):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be: that is the question.\n" * 60)
    return ["train", "--config", "tiny", "--data", str(text), "--steps", "3", "--batch", "2", "--seq", "8",
            "--eval-every", "0", "--sample-tokens", "0", "--out", str(tmp_path / "run"),
            "--json-log", str(tmp_path / "log.jsonl"), "--quiet", *extra]


def test_cli_stop_on_mismatch_keeps_the_last_good_checkpoint_and_exits_3(tmp_path, capsys):
    from gpt2lab.gpt2.checkpoint import load_checkpoint
    from gpt2lab.gpt2.cli import main
    run = tmp_path / "run"
    assert main(cli_args(tmp_path, "--backend", "numba", "--steps", "2", "--ckpt-every", "1")) == 0
    good = load_checkpoint(run / "latest.pt")
    capsys.readouterr()
    code = main(cli_args(tmp_path, "--backend", "numba", "--inject-fault", "gelu_backward_off", "--verify-every", "1",
                         "--on-mismatch", "stop", "--ckpt-every", "1", "--resume"))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "parity MISMATCH at step 3: gelu (layer 3, bwd) tensor dfch: ours/torch32 " in err
    assert "training stopped: " in err
    # latest.pt is the step-2 state, untouched; the step-3 state went to its own file
    kept = load_checkpoint(run / "latest.pt")
    assert kept["step"] == 2 and all(np.array_equal(kept["params"][n], v) for n, v in good["params"].items())
    assert load_checkpoint(run / "mismatch_step000003.pt")["step"] == 3
    assert f"kept: {run / 'latest.pt'} holds step 2" in err and str(run / "mismatch_step000003.pt") in err
    assert "continue with --resume" not in err   # the mismatching state is not a place to go on from
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[-1]["parity"]["summary"]["first_failure"]["tensor"] == "dfch"


def test_cli_verify_needs_the_numba_backend(tmp_path, capsys):
    from gpt2lab.gpt2.cli import main
    assert main(cli_args(tmp_path, "--backend", "torch", "--verify-every", "1")) == 2
    assert "--verify-every checks the numba kernels against PyTorch: it needs --backend numba" in capsys.readouterr().err


def test_cli_inject_fault_list_prints_every_fault(capsys):
    from gpt2lab.gpt2.cli import main
    assert main(["train", "--inject-fault", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(FAULTS) and all(any(name in line for line in out) for name in FAULTS)


def test_cli_inject_fault_by_op_is_caught_named_and_logged(tmp_path, capsys):
    from gpt2lab.gpt2.cli import main
    code = main(cli_args(tmp_path, "--backend", "numba", "--inject-fault", "gelu", "--on-mismatch", "stop"))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "injected fault gelu_backward_off (gelu)" in err and "verifying every 1 step(s)" in err
    assert "parity MISMATCH at step 1: gelu" in err
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert record["parity"]["injected_fault"]["name"] == "gelu_backward_off"
    assert record["parity"]["summary"]["first_failure"]["op"] == "gelu"
    assert gelu.gelu_backward.__name__ == "gelu_backward"          # restored after the run


def test_cli_inject_fault_subtle_one_by_name(tmp_path, capsys):
    from gpt2lab.gpt2.cli import main
    code = main(cli_args(tmp_path, "--backend", "numba", "--inject-fault", "attention_backward_scaled",
                         "--verify-every", "2"))
    err = capsys.readouterr().err
    assert code == 0, err    # --on-mismatch warn: training goes on, each verified step reports the fault
    assert "parity MISMATCH at step 1: attention (layer 3, bwd) tensor dqkv" in err
    assert "parity vs PyTorch on 2 verified steps: 2 with mismatches" in err


@pytest.mark.parametrize("extra, message", [
    (["--backend", "numba", "--inject-fault", "nosuch"], "--inject-fault: unknown fault 'nosuch'; choose an op"),
    (["--backend", "torch", "--inject-fault", "gelu"], "--inject-fault breaks one of the numba kernels"),
])
def test_cli_inject_fault_bad_choice_is_one_line(tmp_path, capsys, extra, message):
    from gpt2lab.gpt2.cli import main
    assert main(cli_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
