"""KernelGPT2(fused=True): flash attention and the fused residual + LayerNorm wired into the model itself.

On the CPU (this process): after a few AdamW steps the fused model's loss, logits, gradients and parameters
equal the default model's; it allocates no T x T att (lse in its place); a wrong wiring (layer l reading the
lse of layer l-1) is caught by that same comparison; live parity passes on the fused path and catches every
fault or refuses it in one line; `gpt2lab train --fused` runs, stores the choice and --resume keeps it.
In numba's CUDA simulator (own process): a fused step (the CUDA kernels, the fused classifier and the
one-launch AdamW among them) equals the CPU's fused step, live parity passes on it, and the CUDA-only fault
variants are caught (the launches per step of both paths: tests/test_host_path_cudasim.py).
"""
import json
import textwrap

import numpy as np
import pytest

from gpt2lab.gpt2.config import GPTConfig, OptimConfig
from gpt2lab.gpt2.faults import FAULTS, inject, kernels_with
from gpt2lab.gpt2.kernel_backend import NumbaBackend, VerifiedBackend
from gpt2lab.gpt2.kernel_model import KernelGPT2, Kernels
from gpt2lab.kernels.attention import attention_backward_flash
from gpt2lab.kernels.check import compare
from simulated import run_in_simulator

MICRO = dict(block_size=8, vocab_size=17, n_layer=2, n_head=2, n_embd=8)
SIM_MICRO = dict(MICRO, n_layer=1)   # the simulator is slow: one block still runs every fused kernel
SIM_T = 4
LR, STEPS = 1e-2, 3
# The same float32 math on both paths, sums in another order. Parameters after AdamW get an absolute
# tolerance of a thousandth of a step (LR * 1e-3): the key bias's gradient is zero in exact arithmetic (the
# softmax ignores a shift of all of a row's scores), so on both paths it is rounding noise (~1e-12), which
# AdamW divides by eps = 1e-8 into steps ~1e-6 that differ between the paths.
TOL = (1e-6, 1e-5)
TOL_PARAMS = (LR * 1e-3, 1e-5)


def batches(config, B=2, T=8, n=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, config["vocab_size"], (B, T)), rng.integers(0, config["vocab_size"], (B, T)))
            for _ in range(n)]


def train_steps(model, data) -> dict:
    """STEPS steps of forward, backward and AdamW; the last loss, logits, gradients, and the parameters."""
    for x, y in data:
        loss = model.forward(x, y)
        model.zero_grad()
        model.backward()
        grads = np.array(model.grads_memory.memory)
        model.adamw_step(LR)
    return {"loss": np.array(loss), "logits": np.array(model.logits), "grads": grads,
            "params": np.array(model.params_memory.memory)}


def mismatches(got, want) -> list:
    lines = []
    for key in want:
        max_abs, max_rel, ok = compare(got[key], want[key], *(TOL_PARAMS if key == "params" else TOL))
        if not ok:
            lines.append(f"{key}: max_abs {max_abs:.1e} max_rel {max_rel:.1e}")
    return lines


@pytest.fixture(scope="module")
def default_run():
    return train_steps(KernelGPT2(GPTConfig(**MICRO), seed=0), batches(MICRO))


def test_fused_model_equals_the_default_model_after_adamw_steps(default_run):
    model = KernelGPT2(GPTConfig(**MICRO), seed=0, fused=True)
    got = train_steps(model, batches(MICRO))
    assert not mismatches(got, default_run), mismatches(got, default_run)
    assert np.abs(default_run["grads"]).max() > 1e-3   # and the steps did something


def test_fused_model_allocates_no_att():
    config = GPTConfig(**MICRO)
    fused, default = KernelGPT2(config, fused=True), KernelGPT2(config)
    for m in (fused, default):
        m.forward(*batches(MICRO, n=1)[0])
    L, B, T, NH = config.n_layer, 2, 8, config.n_head
    assert "att" not in fused.acts_memory.capacity and fused.acts["lse"].shape == (L, B, NH, T)
    assert "lse" not in default.acts_memory.capacity
    # the buffer is smaller by exactly att's T x T minus lse's T per (layer, batch, head)
    assert default.acts_memory.size - fused.acts_memory.size == L * B * NH * (T * T - T)
    assert "lse" in fused.layer_activations(0) and "att" not in fused.layer_activations(0)


def test_a_wrong_wiring_is_caught(default_run):
    """Layer l's attention backward reading the lse of layer l-1: the equality test above must fail."""
    model = KernelGPT2(GPTConfig(**MICRO), seed=0, fused=True)

    def stale_lse(dinp, dout, inp, out, lse, n_head):
        l = [la["lse"] is lse for la in model.layer_acts].index(True)   # the views are made once per shape
        attention_backward_flash(dinp, dout, inp, out, model.layer_acts[l - 1]["lse"] if l else lse, n_head)
    model.kernels = Kernels(attention_backward_flash=stale_lse)
    got = train_steps(model, batches(MICRO))
    assert mismatches(got, default_run)


def verified(fused=True, config=MICRO, **kw):
    return VerifiedBackend(NumbaBackend(GPTConfig(**config), OptimConfig(grad_clip=1.0), seed=0, fused=fused, **kw),
                           every=1, log=lambda s: None)


def test_live_parity_passes_on_the_fused_path():
    backend = verified()
    for x, y in batches(MICRO):
        backend.loss_and_grads(x, y)
        backend.optimizer_step(1e-3)
    assert len(backend.reports) == STEPS and all(r.ok for r in backend.reports), \
        [r.describe() for r in backend.reports[-1].failures]
    ops = {r.op for r in backend.reports[-1].rows}
    assert "residual_layernorm" in ops and "residual" not in ops
    assert {"att", "dattproj", "dfcproj"} <= {r.tensor for r in backend.reports[-1].rows}


# the faults whose kernel the fused path does not call and that have no fused counterpart
REFUSED = {"residual_backward_one_branch", "residual_backward_scaled"}


def test_every_fault_is_caught_or_refused_on_the_fused_path():
    x, y = batches(MICRO, n=1)[0]
    table = []
    for name, fault in FAULTS.items():
        backend = verified()
        if name in REFUSED:
            with pytest.raises(ValueError, match=f"fault {name} breaks residual_backward, which the fused path"):
                with inject(name, backend):
                    pass
            continue
        with inject(name, backend):
            backend.loss_and_grads(x, y)
            backend.optimizer_step(1e-3)
        first = backend.reports[-1].first_failure
        table.append(f"{name}: {first.op if first else None}")
        assert first is not None and first.op == fault.op, "\n".join(table)
    with pytest.raises(ValueError, match="residual_backward_scaled breaks residual_backward, which the fused"):
        kernels_with(FAULTS["residual_backward_scaled"], fused=True)
    assert kernels_with(FAULTS["residual_backward_scaled"]).residual_backward.__name__ == "residual_backward_scaled"


def cli_args(tmp_path, *extra):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be: that is the question.\n" * 60)
    return ["train", "--backend", "numba", "--config", "tiny", "--data", str(text), "--batch", "2", "--seq", "8",
            "--eval-every", "0", "--sample-tokens", "0", "--out", str(tmp_path / "run"), "--quiet",
            "--ckpt-every", "1", *extra]


def test_cli_train_fused_runs_and_resume_keeps_it(tmp_path, capsys, monkeypatch):
    from gpt2lab.gpt2 import kernel_backend
    from gpt2lab.gpt2.checkpoint import load_checkpoint
    from gpt2lab.gpt2.cli import main
    made = []
    real = kernel_backend.NumbaBackend.__init__

    def spy(self, *a, **kw):   # which path each run's backend was made with
        real(self, *a, **kw)
        made.append(self.model.fused)
    monkeypatch.setattr(kernel_backend.NumbaBackend, "__init__", spy)
    assert main(cli_args(tmp_path, "--fused", "--steps", "3", "--json-log", str(tmp_path / "a.jsonl"))) == 0
    assert "(fused path)" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["run"]["fused"] is True
    assert main(cli_args(tmp_path, "--steps", "4", "--resume", "--json-log", str(tmp_path / "b.jsonl"))) == 0
    assert made == [True, True]
    assert [json.loads(r)["step"] for r in (tmp_path / "b.jsonl").read_text().splitlines()] == [4]
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["run"]["fused"] is True
    # --no-fused takes a fused run back to the default kernels, and says so
    assert main(cli_args(tmp_path, "--steps", "5", "--resume", "--no-fused")) == 0
    assert made == [True, True, False]
    assert "resuming with fused=False (the saved run had True)" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["run"]["fused"] is False


def test_cli_fused_refuses_torch_and_a_fault_it_cannot_show(tmp_path, capsys):
    from gpt2lab.gpt2.cli import main
    torch_args = cli_args(tmp_path, "--fused", "--steps", "1")
    torch_args[torch_args.index("numba")] = "torch"
    assert main(torch_args) == 2
    assert "--fused is the numba kernel model's fused path: it needs --backend numba" in capsys.readouterr().err
    assert main(cli_args(tmp_path, "--fused", "--steps", "1", "--inject-fault", "residual", "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "--inject-fault: fault residual_backward_one_branch breaks residual_backward, which the fused path" in err


def _gpu_default_here(monkeypatch):
    """The GPU's default (the fused path for a new run) on this CPU machine: train's own decision, nothing else."""
    from gpt2lab.gpt2 import train
    monkeypatch.setattr(train, "default_fused", lambda backend, device: backend == "numba")


def test_a_new_run_takes_the_devices_default_path_and_a_fault_it_cannot_show_goes_per_op(tmp_path, capsys,
                                                                                          monkeypatch):
    from gpt2lab.gpt2.checkpoint import load_checkpoint
    from gpt2lab.gpt2.cli import main
    _gpu_default_here(monkeypatch)
    assert main(cli_args(tmp_path, "--steps", "1")) == 0   # no flag: the default path, here the fused one
    assert "(fused path)" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["run"]["fused"] is True
    # a fault of a kernel the fused path does not call: the run goes per-op (it is not asked to be fused)
    assert main(cli_args(tmp_path, "--steps", "1", "--inject-fault", "residual", "--overwrite")) == 0
    err = capsys.readouterr().err
    assert "does not call: training on the per-op path" in err and "(fused path)" not in err
    # asked for in so many words, the fused path still refuses it (test_cli_fused_refuses_...)
    assert main(cli_args(tmp_path, "--fused", "--steps", "1", "--inject-fault", "residual", "--overwrite")) == 2


def test_resume_decides_the_path_from_the_saved_run_before_its_checks(tmp_path, capsys, monkeypatch):
    """A fused run resumed without a flag is fused before the checks that depend on it (the memory a step needs,
    the flags it allows); resumed on the torch backend, which has one path, it is not refused."""
    import argparse

    from gpt2lab.gpt2 import train
    from gpt2lab.gpt2.cli import main
    assert main(cli_args(tmp_path, "--fused", "--steps", "2")) == 0
    args = argparse.Namespace(backend="numba", resume=True, device="cpu")
    assert train._fused_of(args, tmp_path / "run", None) is True
    assert train._fused_of(argparse.Namespace(backend="torch", resume=True, device="cpu"), tmp_path / "run",
                           None) is False
    checked = []
    real = train._check_resources
    monkeypatch.setattr(train, "_check_resources", lambda a, c: (checked.append(a.fused), real(a, c)))
    assert main(cli_args(tmp_path, "--steps", "3", "--resume")) == 0
    assert checked == [True]
    resumed = cli_args(tmp_path, "--steps", "4", "--resume")
    resumed[resumed.index("numba")] = "torch"
    assert main(resumed) == 0, capsys.readouterr().err


SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.gpt2.config import GPTConfig, OptimConfig
    from gpt2lab.gpt2.faults import inject
    from gpt2lab.gpt2.kernel_backend import NumbaBackend, VerifiedBackend
    cfg, (x, y) = GPTConfig(**{sim}), [(np.array(x), np.array(y)) for x, y in {data}][0]
    out = {{}}
    # a verified step (live parity on the CUDA kernels) whose loss, gradients and parameters are kept
    v = VerifiedBackend(NumbaBackend(cfg, OptimConfig(grad_clip=None), seed=0, device="cudasim", fused=True),
                        every=1, log=lambda s: None)
    m = v.backend.model
    out["loss"] = np.array(v.loss_and_grads(x, y))
    out["grads"] = m.grads_memory.memory.copy_to_host()
    v.optimizer_step({lr})
    out["logits"], out["params"] = m.logits.copy_to_host(), m.params_memory.memory.copy_to_host()
    out["parity_failures"] = np.array([r.describe() for r in v.reports[-1].failures], dtype=str)
    # the faults whose fused variants run on CUDA only (the fused classifier's, the one-launch AdamW's), both
    # in one step: the classifier's shows first (dlogits), AdamW's in its own rows (judged on its own inputs)
    v = VerifiedBackend(NumbaBackend(cfg, OptimConfig(grad_clip=1.0), seed=0, device="cudasim", fused=True),
                        every=1, log=lambda s: None)
    with inject("crossentropy_backward_no_onehot", v), inject("adamw_no_bias_correction", v):
        v.loss_and_grads(x, y)
        v.optimizer_step(1e-3)
    failures = v.reports[-1].failures
    out["fault_ops"] = np.array([failures[0].op] + sorted({{r.op for r in failures}}) if failures else [])
    np.savez(sys.argv[1], **out)
""").format(sim=SIM_MICRO, data=[(x.tolist(), y.tolist()) for x, y in batches(SIM_MICRO, B=1, T=SIM_T, n=1)],
           lr=LR)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("fused") / "fused.npz"
    run_in_simulator("-c", SCRIPT, str(path), timeout=900)
    return dict(np.load(path))


@pytest.mark.cudasim
def test_simulated_fused_step_equals_the_cpu_fused_step(simulated):
    """One step on the CUDA kernels (flash v4, residual_layernorm v1, the fused classifier, the one-launch
    AdamW) against the CPU's fused step (the CPU loops, crossentropy and AdamW per tensor)."""
    want = train_steps(KernelGPT2(GPTConfig(**SIM_MICRO), seed=0, fused=True),
                       batches(SIM_MICRO, B=1, T=SIM_T, n=1))
    got = {k: simulated[k] for k in want}
    assert not mismatches(got, want), mismatches(got, want)


@pytest.mark.cudasim
def test_simulated_live_parity_passes_and_the_cuda_only_faults_are_caught(simulated):
    assert simulated["parity_failures"].size == 0, simulated["parity_failures"]
    first, *failing = list(simulated["fault_ops"])   # the first failure's op, then every failing op
    assert first == "crossentropy" and {"crossentropy", "adamw"} <= set(failing), simulated["fault_ops"]
