"""Training: a Trainer loop that is generic over a small backend protocol, the PyTorch backend, and `gpt2lab train`.

The backend protocol (any object with these methods; TorchBackend is the reference, a numba backend follows):

    config: GPTConfig
    name: str                                            "torch", "numba", ...
    loss_and_grads(x, y) -> float                        x, y: (B, T) int64 numpy; forward + backward, keeps grads
    optimizer_step(lr) -> float                          clip (if OptimConfig.grad_clip) + AdamW; returns the grad norm
                                                         (guards.NonFiniteError, before any update, if it is nan/inf)
    eval_loss(x, y) -> float                             forward only
    generate(idx, max_new_tokens, temperature=1.0, top_k=None, seed=0) -> (B, T + new) int64 numpy
    state_dict() -> {"params": {name: float32 ndarray}, "optim": {"step": int, "m": {...}, "v": {...}}}
    load_state_dict(state)                               the same dict back (a checkpoint's params + optim)

Parameter names are the reference GPT2's (see model.py). Constructor convention: Backend(config, optim, seed),
initialised from `init_params(config, seed)` so both backends start from the very same weights.

AdamW (as nanoGPT and llm.c): betas (0.9, 0.95), eps 1e-8, decoupled weight decay 0.1 on every parameter with
2 or more dimensions -- wte (tied to lm_head), wpe, and all four Linear weights per block (c_attn, attn.c_proj,
c_fc, mlp.c_proj) -- and none on the 1-D ones: every bias and every LayerNorm weight and bias.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import numbers
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from gpt2lab.datasets import EOT_ID, BatchSampler, TokenData
from gpt2lab.signals import STOP_CODES, handling

from .buffers import step_bytes
from .checkpoint import load_checkpoint, save_checkpoint, saved_run
from .choices import FLASHES, MATMULS, default_fused
from .cli import CommandError, finite_non_negative_float, non_negative_int, positive_float, positive_int
from .config import PRESETS, GPTConfig, OptimConfig, check_number, decays  # noqa: F401 (re-exported)
from .faults import kernels_with
from .guards import NonFiniteError, check_finite
from .model import GPT2, init_params
from .parity import ParityMismatch


def lr_at(step: int, lr: float, steps: int, schedule: str = "cosine", warmup: int = 0,
          min_lr_frac: float = 0.1) -> float:
    """Learning rate for optimizer step `step` (0-based) of `steps`.

    "constant": lr throughout. "cosine": linear warm-up over `warmup` steps, then a cosine from lr down to
    lr * min_lr_frac at the last step.
    """
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"lr_at: schedule must be 'cosine' or 'constant', got {schedule!r}")
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # 1 -> 0
    return lr * (min_lr_frac + (1.0 - min_lr_frac) * coeff)


class Backend(Protocol):
    """What the trainer needs from a model implementation (see the module docstring)."""
    config: GPTConfig
    name: str

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float: ...
    def optimizer_step(self, lr: float) -> float: ...
    def eval_loss(self, x: np.ndarray, y: np.ndarray) -> float: ...
    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0) -> np.ndarray: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class TorchBackend:
    """The reference backend: GPT2 in PyTorch eager mode.

    device "cpu": a hand-written AdamW (so the numba one can match it line for line). device "cuda": the model,
    its batches and the optimizer on the GPU, float32 with TF32 off (so its matmuls round like ours),
    torch.optim.AdamW(fused=True) (one kernel for the whole update, what a PyTorch user would run) with the
    same decay groups, betas, eps and clipping; state_dict() is numpy on the CPU either way, so a checkpoint of
    a GPU run loads anywhere.
    """
    name = "torch"

    def __init__(self, config: GPTConfig, optim: OptimConfig = OptimConfig(), seed: int = 0, device: str = "cpu"):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"TorchBackend: device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("TorchBackend: device 'cuda' but torch sees no CUDA GPU (torch.cuda.is_available() "
                             "is False)")
        # tiny gradients squared in AdamW's v fall into the denormal range and slow CPU steps several-fold
        torch.set_flush_denormal(True)
        self.config, self.optim, self.device = config, optim, torch.device(device)
        self.model = GPT2(config)
        self.model.load_params_numpy(init_params(config, seed))
        self.model.to(self.device)
        self.params = dict(self.model.named_parameters())
        self.t = 0                                                          # AdamW steps taken
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False  # float32 matmuls, as our kernels compute them
            torch.backends.cudnn.allow_tf32 = False
            self.opt = self._fused_adamw()
        else:
            self.opt = None
            self.m = {n: torch.zeros_like(p) for n, p in self.params.items()}  # AdamW first moment
            self.v = {n: torch.zeros_like(p) for n, p in self.params.items()}  # AdamW second moment

    def _fused_adamw(self):
        o = self.optim
        groups = [{"params": [p for n, p in self.params.items() if decays(n, p.shape) == d],
                   "weight_decay": o.weight_decay if d else 0.0} for d in (True, False)]
        return torch.optim.AdamW(groups, lr=1e-3, betas=(o.beta1, o.beta2), eps=o.eps, fused=True)

    def _tokens(self, x) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.int64)).to(self.device)

    def loss_and_grads(self, x, y) -> float:
        """Forward and backward on one batch x, y: (B, T) int64; leaves .grad on every parameter."""
        self.model.train()
        for p in self.params.values():
            p.grad = None
        _, loss = self.model(self._tokens(x), self._tokens(y))
        loss.backward()
        return loss.item()

    @torch.no_grad()
    def optimizer_step(self, lr: float) -> float:
        """Clip (optional) and one AdamW update at learning rate lr. Returns the global grad norm before clipping."""
        o = self.optim
        grads = [p.grad for p in self.params.values()]
        if self.opt is None:
            norm = torch.sqrt(sum((g * g).sum() for g in grads)).item()
        else:  # clip_grad_norm_'s way on a GPU: one norm per tensor in one foreach launch, then their norm
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))).item()
        check_finite("gradient norm", norm, self.t + 1)  # before AdamW: the params stay as they were
        scale = 1.0
        if o.grad_clip is not None and norm > o.grad_clip:
            scale = o.grad_clip / (norm + 1e-6)  # torch.nn.utils.clip_grad_norm_'s formula
        self.t += 1
        if self.opt is not None:
            if scale != 1.0:
                torch._foreach_mul_(grads, scale)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.step()
            return norm
        bc1, bc2 = 1.0 - o.beta1 ** self.t, 1.0 - o.beta2 ** self.t  # bias corrections of the zero-started moments
        for name, p in self.params.items():
            g = p.grad if scale == 1.0 else p.grad * scale
            m, v = self.m[name], self.v[name]
            m.mul_(o.beta1).add_(g, alpha=1.0 - o.beta1)
            v.mul_(o.beta2).addcmul_(g, g, value=1.0 - o.beta2)
            if decays(name, p.shape):
                p.mul_(1.0 - lr * o.weight_decay)  # decoupled decay: shrink the weight, not the gradient
            p.addcdiv_(m / bc1, (v / bc2).sqrt_().add_(o.eps), value=-lr)
        return norm

    @torch.no_grad()
    def eval_loss(self, x, y) -> float:
        self.model.eval()
        _, loss = self.model(self._tokens(x), self._tokens(y))
        return loss.item()

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0) -> np.ndarray:
        self.model.eval()
        generator = torch.Generator().manual_seed(seed)
        if self.device.type == "cpu":
            out = self.model.generate(torch.from_numpy(np.asarray(idx, dtype=np.int64)), max_new_tokens,
                                      temperature, top_k, generator=generator)
            return out.numpy()
        # on a GPU: the forward there, the draw on the CPU with the CPU generator (as the numba backend does),
        # so the same weights and seed give the same tokens on either device
        from .model import sample_next
        idx = np.asarray(idx, dtype=np.int64)
        for _ in range(max_new_tokens):
            logits, _ = self.model(self._tokens(idx[:, -self.config.block_size:]))
            idx_next = sample_next(logits[:, -1, :].float().cpu(), temperature, top_k, generator)
            idx = np.concatenate([idx, idx_next.numpy()], axis=1)
        return idx

    def _moments(self) -> tuple[dict, dict]:
        """AdamW's m and v by parameter name (the fused optimizer's state on a GPU; zeros before its first step)."""
        if self.opt is None:
            return self.m, self.v
        state = [self.opt.state.get(p, {}) for p in self.params.values()]
        m = {n: s.get("exp_avg", torch.zeros_like(p)) for (n, p), s in zip(self.params.items(), state)}
        v = {n: s.get("exp_avg_sq", torch.zeros_like(p)) for (n, p), s in zip(self.params.items(), state)}
        return m, v

    def state_dict(self) -> dict:
        def np_copy(d):
            return {n: t.detach().cpu().numpy().copy() for n, t in d.items()}
        m, v = self._moments()
        return {"params": np_copy(self.params), "optim": {"step": self.t, "m": np_copy(m), "v": np_copy(v)}}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.model.load_params_numpy(state["params"])
        o = state.get("optim")
        if o is None:
            return
        self.t = int(o["step"])

        def tensor(a, like):
            return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(like.device)
        if self.opt is None:
            for name in self.params:
                self.m[name].copy_(tensor(o["m"][name], self.m[name]))
                self.v[name].copy_(tensor(o["v"][name], self.v[name]))
            return
        for name, p in self.params.items():  # the fused optimizer's own state layout (step: a float32 tensor)
            self.opt.state[p] = {"step": torch.tensor(float(self.t), dtype=torch.float32, device=p.device),
                                 "exp_avg": tensor(o["m"][name], p), "exp_avg_sq": tensor(o["v"][name], p)}


# name -> "module:Class", imported only when chosen. Adding a backend is one line here; its class takes
# (config, optim, seed, **options), e.g. device="cuda" for the numba one.
BACKENDS = {
    "torch": "gpt2lab.gpt2.train:TorchBackend",
    "numba": "gpt2lab.gpt2.kernel_backend:NumbaBackend",
}
BACKEND_CHOICES = ("torch", "numba")
DEVICES = {"torch": ("cpu", "cuda"), "numba": ("cpu", "cuda")}


def make_backend(name: str, config: GPTConfig, optim: OptimConfig = OptimConfig(), seed: int = 0, **options):
    """A backend by name; ValueError (one line) for one that does not exist yet."""
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not available yet (available: {', '.join(BACKENDS)}); "
                         f"register it in BACKENDS in gpt2lab/gpt2/train.py")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(config, optim, seed, **options)


# ---- the trainer ----

@dataclass
class RunConfig:
    """One training run's settings (the model shape is the backend's GPTConfig)."""
    steps: int = 200
    batch: int = 8
    seq: int = 64
    lr: float = 1e-3
    schedule: str = "cosine"     # or "constant"
    warmup: int = 0
    min_lr_frac: float = 0.1
    seed: int = 1337
    eval_every: int = 50         # 0 = only at the end
    eval_batches: int = 4
    ckpt_every: int = 100        # 0 = only at the end (and on Ctrl-C)
    keep_every: int = 0          # >0: also keep ckpt_{step:06d}.pt frames every K steps (and at 0 and the end)
    sample_tokens: int = 32      # 0 = no text sample at eval time
    data: str = "shakespeare"
    fused: bool = False          # numba backend: KernelGPT2's fused path (--fused); kept by --resume

    # Changed on --resume, these change which batches are drawn: refused, the run could not continue exactly.
    EXACT = ("batch", "seq", "data")
    # Changed on --resume, these change the learning rate from there on: allowed (extending a run is normal), with
    # a warning. The rest (eval, checkpoints, samples) do not touch the training itself.
    SCHEDULE = ("lr", "schedule", "warmup", "min_lr_frac", "steps")

    def __post_init__(self):
        """Checked once, here, so the CLI and the Python API both get a one-line ValueError naming the field."""
        for name, low in (("steps", 1), ("batch", 1), ("seq", 1), ("eval_batches", 1), ("warmup", 0),
                          ("eval_every", 0), ("ckpt_every", 0), ("keep_every", 0), ("sample_tokens", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise ValueError(f"RunConfig: {name} must be an int >= {low}, got {v!r}")
        check_number("RunConfig", "lr", self.lr, low=0.0, low_open=True)
        check_number("RunConfig", "min_lr_frac", self.min_lr_frac, low=0.0, high=1.0)
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"RunConfig: schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not isinstance(self.fused, bool):
            raise ValueError(f"RunConfig: fused must be True or False, got {self.fused!r}")


@dataclass
class TrainResult:
    step: int
    interrupted: bool
    train_loss: float | None
    val_loss: float | None
    tokens_per_s: float
    seconds: float
    history: list = field(default_factory=list)   # the JSON-log records of this call
    stopped: str | None = None       # why it ended early: one of INTERRUPTS, "mismatch", "non-finite"; None = done
    saved_step: int | None = None    # the step of OUT/latest.pt on disk now (None: there is none)
    message: str | None = None       # for an early stop: one line saying what happened and what was kept


INTERRUPTS = ("SIGINT", "SIGTERM", "interrupt")  # Ctrl-C, SIGTERM, KeyboardInterrupt from on_step: all save first


class RunError(ValueError):
    """A run that cannot start as asked (folder taken, a resume that would not be exact); one line."""


class _StopFlag:
    """First Ctrl-C (or SIGTERM: a timeout, a container stop) asks the loop to stop after the current step, then it
    saves; a second one interrupts at once."""
    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.requested, self.signal = False, None
        self._handling = handling(self.SIGNALS, self._handle)

    def __enter__(self):
        self._handling.__enter__()
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signal.Signals(signum).name

    def __exit__(self, *exc):
        return self._handling.__exit__(*exc)


def val_loss(backend, data: TokenData, run: RunConfig) -> float:
    """Mean loss over run.eval_batches val batches, the same batches at every evaluation (own seeded sampler)."""
    sampler = BatchSampler(data, run.batch, run.seq, seed=run.seed + 1)
    return float(np.mean([backend.eval_loss(*sampler.next("val")) for _ in range(run.eval_batches)]))


def sample_text(backend, run: RunConfig, step: int, encoding=None) -> str:
    """A short sample from <|endoftext|>, seeded by the step so a resumed run prints the same text."""
    start = EOT_ID if EOT_ID < backend.config.vocab_size else 0
    ids = backend.generate(np.array([[start]]), run.sample_tokens, temperature=1.0, top_k=40,
                           seed=run.seed + step)[0, 1:].tolist()
    if encoding is None or backend.config.vocab_size > encoding.n_vocab:
        return " ".join(map(str, ids))
    return encoding.decode(ids)


def _rewrite_log_upto(path: Path, step: int, say: Callable[[str], None]) -> None:
    """On resume: drop log lines past the checkpoint's step (written after it, then lost in a crash).

    A crash can also cut the last line in half (a verified step's line is ~55 KB): that line is dropped, and
    the learner told. A damaged line anywhere else is not a crash's doing: RunError naming the line.
    """
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = []
    for i, ln in enumerate(lines):
        try:
            record = json.loads(ln)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                say(f"--json-log {path}: dropped its last line, cut short by a crash ({len(ln):,} characters)")
                break
            raise RunError(f"--json-log {path}: line {i + 1} is not JSON; fix or remove the file") from None
        if record.get("step", 0) <= step:
            keep.append(ln)
    path.write_text("".join(ln + "\n" for ln in keep))


def _checkpoint_files(out: Path) -> list[Path]:
    """A run folder's checkpoints: latest.pt, the frames and any mismatch states."""
    return [p for p in [out / "latest.pt", *out.glob("ckpt_*.pt"), *out.glob("mismatch_step*.pt")] if p.is_file()]


@contextlib.contextmanager
def run_folder(out, *, resume: bool = False, overwrite: bool = False, say: Callable[[str], None] = print):
    """Hold run folder `out` for one run: its lock, no stale temp files, and no other run's checkpoints.

    LockedError (gpt2lab.lock) names the process already training there. Without resume, a folder that holds
    checkpoints is refused (RunError), unless overwrite, which deletes them (latest.pt, ckpt_*.pt,
    mismatch_step*.pt: nothing else). Taking it again inside the same process is free (the CLI holds it, then
    the trainer).
    """
    from gpt2lab.atomic import remove_stale_temps
    from gpt2lab.lock import file_lock
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {str(out)!r} is a file, not a folder: checkpoints go in a folder")
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".lock", wait=False, what=f"run folder {str(out)!r}"):
        stale = remove_stale_temps(out)  # only a killed writer leaves these; the lock says none is alive
        if stale:
            say(f"removed {len(stale)} temp file(s) left in {out} by a killed run "
                f"({sum(stale.values()) / 1e6:,.1f} MB)")
        old = [] if resume else _checkpoint_files(out)
        if old and not overwrite:
            raise RunError(f"{str(out)!r} already holds a run ({len(old)} checkpoint file(s)): continue it with "
                           f"--resume, start over with --overwrite, or choose another --out")
        for p in old:
            p.unlink()
        if old:
            say(f"--overwrite: deleted {len(old)} checkpoint file(s) of the previous run in {out}")
        yield out


class Trainer:
    """The training loop over any backend: sample a batch, loss_and_grads, optimizer_step, then log, evaluate,
    checkpoint. Its state between steps is exactly what a full checkpoint holds, so a resumed run continues
    bit for bit."""

    def __init__(self, backend, data: TokenData, run: RunConfig, out=None, *, json_log=None, encoding=None,
                 log: Callable[[str], None] | None = None):
        self.backend, self.data, self.run, self.encoding = backend, data, run, encoding
        self.out = Path(out) if out is not None else None
        self.log_path = Path(json_log) if json_log else None
        self.say = log or _tqdm_write
        self.sampler = BatchSampler(data, run.batch, run.seq, seed=run.seed)
        self.sampler_state = self.sampler.state()  # the sampler's state after `step` completed steps
        self.step, self.last_loss, self.last_val = 0, None, None
        self.saved_step = None  # the step of out/latest.pt on disk (None: none written or found)
        self.updating = False

    def resume(self) -> None:
        """Load out/latest.pt: params, AdamW moments, step, batch sampler and torch RNG state."""
        path = self.out / "latest.pt" if self.out is not None else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"train: --resume needs a checkpoint, none at {str(path)!r}")
        ckpt = load_checkpoint(path, kind="full")
        if ckpt["config"] != self.backend.config:
            raise RunError(f"train: the checkpoint's config {ckpt['config']} differs from {self.backend.config}")
        self._check_resumed_settings(ckpt)
        self.backend.load_state_dict(ckpt)
        self.sampler.set_state(json.loads(ckpt["sampler_state"]))
        self.sampler_state = self.sampler.state()
        torch.set_rng_state(ckpt["torch_rng_state"])
        self.step, self.last_val, self.last_loss = ckpt["step"], ckpt.get("val_loss"), ckpt.get("train_loss")
        self.saved_step = self.step

    def _check_resumed_settings(self, ckpt: dict) -> None:
        """A resumed run continues the saved one exactly only with the same batches: a changed batch, seq or
        data is refused (RunError); a changed lr schedule (RunConfig.SCHEDULE) or optimizer setting is allowed
        (extending a run is normal) with one line each saying that the run now differs from an uninterrupted one."""
        saved = dict(ckpt.get("run") or {})
        now = asdict(self.run)
        changed = {k: (saved[k], now[k]) for k in now if k in saved and saved[k] != now[k]}
        exact = [k for k in RunConfig.EXACT if k in changed]
        if exact:
            raise RunError("--resume: " + ", ".join(f"--{k} {changed[k][1]} differs from the checkpoint's "
                                                    f"{changed[k][0]}" for k in exact)
                           + ": the batches would change; pass the saved value(s) or start a new --out")
        if self.run.schedule == "constant":
            changed.pop("steps", None)  # more steps at a constant lr: exactly the longer run
        if "fused" in changed:   # the same math on other kernels: the numbers differ from there on by rounding
            self.say(f"resuming with fused={self.run.fused} (the saved run had {not self.run.fused}): from step "
                     f"{ckpt['step']} on the kernels differ, so the numbers do by float32 rounding")
        for k, (was, new) in changed.items():
            if k not in RunConfig.SCHEDULE:
                continue
            self.say(f"resuming with {k} {new} (the saved run had {was}): from step {ckpt['step']} on this is not "
                     f"the run an uninterrupted one would have been")
        optim_now = asdict(self.backend.optim) if hasattr(self.backend, "optim") else None
        optim_saved = ckpt.get("optim_config")
        if optim_now is not None and optim_saved is not None:
            for k in optim_now:
                if k in optim_saved and optim_saved[k] != optim_now[k]:
                    self.say(f"resuming with {k} {optim_now[k]} (the saved run had {optim_saved[k]})")

    def save(self, kind: str, path: Path) -> None:
        """kind "full" (everything to resume) or "frame" (weights only); see checkpoint.py for the format.
        Parameters that are not finite are never written (NonFiniteError): they would replace good ones."""
        state = self.backend.state_dict()
        if not all(np.isfinite(p).all() for p in state["params"].values()):
            raise NonFiniteError(f"the parameters hold nan or inf after step {self.step}")
        ckpt = {"kind": kind, "config": self.backend.config.to_dict(), "step": self.step,
                "backend": self.backend.name, "train_loss": self.last_loss, "val_loss": self.last_val,
                "params": state["params"]}
        if kind == "full":
            ckpt.update(optim=state["optim"], sampler_state=json.dumps(self.sampler_state),
                        torch_rng_state=torch.get_rng_state(), run=asdict(self.run))
            if hasattr(self.backend, "optim"):
                ckpt["optim_config"] = asdict(self.backend.optim)
        save_checkpoint(path, ckpt)
        if path == self._latest:
            self.saved_step = self.step

    @property
    def _latest(self) -> Path | None:
        return self.out / "latest.pt" if self.out is not None else None

    def save_frame(self) -> None:
        if self.out is not None and self.run.keep_every:
            self.save("frame", self.out / f"ckpt_{self.step:06d}.pt")

    def train_step(self) -> dict:
        """One optimizer step; returns its log record {step, loss, lr, tokens_per_s, grad_norm}.

        NonFiniteError (before any parameter changes) for a nan/inf loss or gradient norm."""
        run, t0 = self.run, time.perf_counter()
        lr = lr_at(self.step, run.lr, run.steps, run.schedule, run.warmup, run.min_lr_frac)
        x, y = self.sampler.next("train")
        loss = check_finite("loss", self.backend.loss_and_grads(x, y), self.step + 1)
        self.updating = True  # an interrupt now could leave the params half-updated
        try:
            grad_norm = self.backend.optimizer_step(lr)
        except NonFiniteError:
            self.updating = False  # raised before the update: nothing was changed
            raise
        self.step, self.sampler_state, self.last_loss, self.updating = self.step + 1, self.sampler.state(), loss, False
        record = {"step": self.step, "loss": loss, "lr": lr, "tokens_per_s": x.size / (time.perf_counter() - t0),
                  "grad_norm": grad_norm}
        record.update(getattr(self.backend, "step_extras", dict)())  # e.g. parity figures (gpt2/parity.py)
        return record

    def evaluate(self, record: dict) -> None:
        """Val loss (and a text sample) into `record`, and a line for the learner."""
        self.last_val = record["val_loss"] = check_finite("val loss", val_loss(self.backend, self.data, self.run),
                                                          self.step)
        msg = f"step {self.step}: train loss {record['loss']:.4f}, val loss {self.last_val:.4f}"
        if self.run.sample_tokens:
            record["sample"] = sample_text(self.backend, self.run, self.step, self.encoding)
            msg += f"\n  sample: {record['sample']!r}"
        self.say(msg)

    def after_step(self, record: dict) -> None:
        """Evaluate and log as the RunConfig asks, at this step (checkpoints come after on_step: `checkpoint`)."""
        run, step, last = self.run, self.step, self.step == self.run.steps
        if (run.eval_every and step % run.eval_every == 0) or last:
            self.evaluate(record)
        if self.log_path:
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint(self, force: bool = False) -> None:
        """latest.pt (every run.ckpt_every steps, at the end, or `force`) and a frame when one is due."""
        run, step, last = self.run, self.step, self.step == self.run.steps
        if self.out is not None and ((run.ckpt_every and step % run.ckpt_every == 0) or last or force):
            self.save("full", self._latest)
        if run.keep_every and (step % run.keep_every == 0 or last):
            self.save_frame()

    def fit(self, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
            on_step: Callable[[dict], None] | None = None) -> TrainResult:
        """Run until run.steps steps are done, or stop early (see TrainResult.stopped):

        Ctrl-C or SIGTERM (or KeyboardInterrupt from on_step): save latest.pt, then return.
        ParityMismatch from on_step: latest.pt stays as it was (the last good one); the mismatching state goes
        to out/mismatch_stepNNNNNN.pt. A nan/inf loss or gradient norm: nothing is saved.
        """
        if self.log_path and self.log_path.is_dir():
            raise RunError(f"--json-log {str(self.log_path)!r} is a folder; give a file name")
        if self.out is None:
            return self._fit(resume, progress, on_step)
        with run_folder(self.out, resume=resume, overwrite=overwrite, say=self.say):
            return self._fit(resume, progress, on_step)

    def _fit(self, resume: bool, progress: bool, on_step) -> TrainResult:
        from tqdm.auto import tqdm
        if resume:
            self.resume()
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            _rewrite_log_upto(self.log_path, self.step, self.say) if resume else self.log_path.write_text("")
        if not resume:
            self.save_frame()  # frame 0: the initialisation
        history, t_start, tokens_done, stopped, message = [], time.perf_counter(), 0, None, None
        bar = tqdm(total=self.run.steps, initial=self.step, disable=not progress, desc="train", unit="step",
                   file=sys.stderr)
        stop = _StopFlag()
        try:
            with stop:
                while self.step < self.run.steps:
                    record = self.train_step()
                    tokens_done += self.run.batch * self.run.seq
                    self.after_step(record)
                    history.append(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    if on_step is not None:
                        on_step(record)  # before the checkpoint: a mismatch it raises must not be saved as latest
                    self.checkpoint()
                    if stop.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            # params, AdamW state, `step` and `sampler_state` agree everywhere except inside optimizer_step (only
            # a second Ctrl-C lands there): a half-finished forward/backward is simply dropped
            stopped = stop.signal or "interrupt"  # no signal: on_step raised it (a notebook's Stop button)
        except ParityMismatch:
            stopped = "mismatch"
        except NonFiniteError as e:
            stopped, message = "non-finite", self._non_finite_message(e)
        finally:
            bar.close()
        if stopped in INTERRUPTS:
            message = self._save_on_interrupt(stopped)
        elif stopped == "mismatch":
            message = self._save_mismatch()
        if message:
            self.say(message)
        seconds = time.perf_counter() - t_start
        return TrainResult(step=self.step, interrupted=stopped in INTERRUPTS, train_loss=self.last_loss,
                           val_loss=self.last_val, tokens_per_s=tokens_done / seconds if seconds > 0 else 0.0,
                           seconds=seconds, history=history, stopped=stopped, saved_step=self.saved_step,
                           message=message)

    def _on_disk(self) -> str:
        if self.out is None:
            return "no checkpoint folder"
        if self.saved_step is None:
            return f"no checkpoint in {self.out} (none was written before this)"
        return f"{self._latest} holds step {self.saved_step}"

    def _non_finite_message(self, e: NonFiniteError) -> str:
        return (f"stopped: {e}, so nothing from it was saved; {self._on_disk()}. A learning rate too high? "
                f"Try a lower --lr (and --grad-clip 1 if clipping is off)")

    def _save_mismatch(self) -> str:
        """The post-mismatch state to its own file; latest.pt keeps the last state saved before the mismatch."""
        if self.out is None:
            return "stopped at a parity mismatch (no checkpoint folder: nothing saved)"
        path = self.out / f"mismatch_step{self.step:06d}.pt"
        try:
            self.save("full", path)
        except NonFiniteError as e:
            return f"stopped at a parity mismatch; its state was not saved ({e}); kept: {self._on_disk()}"
        return (f"stopped at a parity mismatch at step {self.step}; kept: {self._on_disk()} (the last checkpoint "
                f"before the mismatch); the mismatching state is in {path}, for inspection only")

    def _save_on_interrupt(self, signame: str) -> str:
        what = {"SIGINT": "Ctrl-C", "interrupt": "stopped"}.get(signame, signame)
        if self.out is None:
            return f"interrupted at step {self.step} ({what})"
        if self.updating:
            return (f"interrupted inside the update of step {self.step + 1} ({what}): no checkpoint written; "
                    f"{self._on_disk()}")
        try:
            if self.saved_step != self.step:  # not saved by this step's own checkpoint already
                self.checkpoint(force=True)
        except NonFiniteError as e:
            return f"interrupted ({what}); not saved: {e}; {self._on_disk()}"
        return f"interrupted at step {self.step} ({what}): checkpoint saved to {self._latest}; continue with --resume"


def _tqdm_write(s: str) -> None:
    from tqdm.auto import tqdm
    tqdm.write(s, file=sys.stderr)


def train(backend, data: TokenData, run: RunConfig, out=None, *, resume: bool = False, overwrite: bool = False,
          json_log=None, progress: bool = True, on_step: Callable[[dict], None] | None = None, encoding=None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train `backend` on `data` for run.steps optimizer steps (in total, counting resumed ones).

    out: folder for latest.pt (every run.ckpt_every steps, at the end, on Ctrl-C) and frames ckpt_NNNNNN.pt;
    locked while training (LockedError names another process using it). A folder that already holds
    checkpoints is refused (RunError) unless resume or overwrite (which deletes them first).
    resume: continue from out/latest.pt exactly (params, AdamW moments, step, batch sampler and torch RNG).
    json_log: file of JSON lines {step, loss, lr, tokens_per_s, grad_norm[, val_loss, sample]}; appended on resume.
    on_step(record): called after every step, before its checkpoint (a notebook's live plot); raising
    KeyboardInterrupt in it stops the run like Ctrl-C does: a checkpoint is saved, result.interrupted=True;
    raising ParityMismatch stops it without touching latest.pt (result.stopped="mismatch").
    A nan/inf loss or gradient norm stops the run before the update and saves nothing (stopped="non-finite").
    log(text): where progress lines go (default: above the tqdm bar on stderr).
    """
    trainer = Trainer(backend, data, run, out, json_log=json_log, encoding=encoding, log=log)
    return trainer.fit(resume=resume, overwrite=overwrite, progress=progress, on_step=on_step)


# ---- gpt2lab train ----

def add_arguments(p) -> None:
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="torch", help="model implementation")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: an NVIDIA GPU (numba: our CUDA kernels; torch: PyTorch on CUDA, fp32, TF32 off)")
    p.add_argument("--config", default="tiny", help=f"model shape: one of {', '.join(PRESETS)}")
    p.add_argument("--data", default="shakespeare",
                   help='"shakespeare" (9 plays), "shakespeare-full" (all 38) or a UTF-8 text file')
    p.add_argument("--steps", type=positive_int, default=200, help="optimizer steps in total")
    p.add_argument("--batch", type=positive_int, default=8, help="sequences per batch B")
    p.add_argument("--seq", type=positive_int, default=64, help="tokens per sequence T (<= the context)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (finite, > 0)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="learning-rate schedule")
    p.add_argument("--warmup", type=non_negative_int, default=0, help="linear warm-up steps (cosine only)")
    p.add_argument("--grad-clip", type=finite_non_negative_float, default=1.0,
                   help="clip the grad norm to this (finite, >= 0); 0 = off")
    p.add_argument("--weight-decay", type=finite_non_negative_float, default=0.1,
                   help="AdamW decay of the 2-D weights (finite, >= 0)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: runs/<config>)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt")
    start.add_argument("--overwrite", action="store_true",
                       help="start over in an OUT that holds a run: delete its checkpoints first")
    p.add_argument("--json-log", default=None, help="write one JSON line per step to this file")
    p.add_argument("--seed", type=int, default=1337, help="seed of the init and the batch sampler")
    p.add_argument("--eval-every", type=non_negative_int, default=50, help="val loss + sample every K steps")
    p.add_argument("--eval-batches", type=positive_int, default=4, help="val batches averaged per evaluation")
    p.add_argument("--ckpt-every", type=non_negative_int, default=100, help="save OUT/latest.pt every K steps")
    p.add_argument("--keep-every", type=non_negative_int, default=0, help="also keep ckpt_NNNNNN.pt every K steps")
    p.add_argument("--sample-tokens", type=non_negative_int, default=32, help="tokens in each eval sample")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verify-every", type=non_negative_int, default=0,
                   help="numba: check every kernel against PyTorch on steps 1, 1+K, ... (0 = never)")
    p.add_argument("--on-mismatch", choices=("warn", "stop"), default="warn",
                   help="a parity mismatch: print it and go on, or stop (exit code 3; OUT/latest.pt keeps the last "
                        "state saved before it, the mismatching one goes to OUT/mismatch_stepNNNNNN.pt)")
    p.add_argument("--fused", action="store_const", const=True, default=None,
                   help="numba: the fused path (flash attention, residual+LayerNorm in one kernel; on cuda also the "
                        "fused classifier and one-launch AdamW): the default on cuda (on an H200 5.6x faster for "
                        "GPT-2 at T=1024, 1.5x at T=64), not on the cpu. Stored in the run: --resume keeps it, "
                        "--resume --no-fused goes back to the per-op kernels")
    p.add_argument("--no-fused", dest="fused", action="store_const", const=False,
                   help="numba: the per-op kernels, one per op (the default on the cpu); with --resume, takes a "
                        "fused run back to them")
    p.add_argument("--matmul", choices=MATMULS, default="numba",
                   help="numba backend on cuda: our matmul kernels (default: v8), one of our versions by name (e.g. "
                        "v3, to time it again; v1, v2 are the teaching versions, less accurate than PyTorch on long "
                        "sums, and live parity flags them), or cuBLAS on the same device memory for the linear "
                        "layers and attention's q k^T and att v (llm.c's choice; the fused path keeps flash "
                        "attention), to see what our kernels leave on the table. Not stored in the run: give it "
                        "again with --resume")
    p.add_argument("--flash", choices=FLASHES, default=None,
                   help="numba backend on cuda, fused path (the default there): the flash attention version "
                        "(default v6, each row in registers; v5 the same without its lean loader, v4 before it). "
                        "Not stored in the run: give it again with --resume")
    p.add_argument("--inject-fault", metavar="OP", default=None,
                   help="numba: break one kernel on purpose and watch live parity catch it: an op (encoder, "
                        "layernorm, matmul, attention, gelu, residual, crossentropy, adamw) or a fault name; "
                        "'list' prints them")
    p.epilog = ("exit codes: 0 done; 2 bad argument, unusable checkpoint, or OUT in use / holding another run "
                "(--resume or --overwrite); 3 parity mismatch with --on-mismatch stop; 4 nan/inf loss or gradient "
                "norm (nothing saved); 130 Ctrl-C, 143 SIGTERM (latest.pt saved first)")


def _config_from_args(args) -> GPTConfig:
    if args.config not in PRESETS:
        raise CommandError(f"unknown --config {args.config!r}; choose from {', '.join(PRESETS)}")
    config = GPTConfig.preset(args.config)
    if args.seq > config.block_size:
        raise CommandError(f"--seq {args.seq} is longer than the {args.config} model's context "
                           f"(block_size {config.block_size})")
    return config


def _data_from_args(args) -> TokenData:
    from gpt2lab.datasets import load_tokens
    try:
        data = load_tokens(args.data)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from None
    for split in ("train", "val"):
        n = len(getattr(data, split))
        if n < args.seq + 1:
            raise CommandError(f"--data {args.data!r}: the {split} split has {n} tokens, fewer than --seq+1 = "
                               f"{args.seq + 1}")
    return data


def _fmt(loss: float | None) -> str:
    return f"{loss:.4f}" if loss is not None else "n/a"


def memory_needed(config: GPTConfig, B: int, T: int, fused: bool = False, lean: bool = True,
                  device: str = "cpu") -> int:
    """Bytes a training step needs, roughly: the kernel model's buffers (buffers.step_bytes: parameters,
    grads, AdamW's two moments, activations and their gradients; lean unless live parity runs); PyTorch
    eager keeps about as much."""
    return sum(step_bytes(config, B, T, fused, lean, fused_head=fused and device == "cuda").values())


def _memory_needed(config: GPTConfig, args) -> int:
    """memory_needed for a `train` command line (--verify-every: live parity keeps the full buffers)."""
    return memory_needed(config, args.batch, args.seq, bool(args.fused), lean=not args.verify_every,
                         device=args.device)


def _memory_available(device: str = "cpu") -> int | None:
    """Bytes of memory the run can have: the GPU's for device "cuda", else the machine's RAM (None: unknown)."""
    try:
        if device == "cuda":
            from numba import cuda
            return int(cuda.current_context().get_memory_info()[1])
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except Exception:  # noqa: BLE001 -- no figure: no check, the run will tell
        return None


# --matmul and --flash (gpt2/choices.py): which matmuls and flash attention the numba backend calls on the GPU,
# through the model's one swap point (Kernels).
# The ops whose products cuBLAS takes over, as in llm.c: the linear layers, and the per-op path's attention
# (q k^T and att v as batched GEMMs; the fused path's flash attention stays ours)
CUBLAS_OPS = ("matmul", "attention")


def matmul_kernels(choice: str, kernels=None, flash: str | None = None):
    """`kernels` (None: the defaults) with `choice`'s matmuls in place: "numba" leaves them as they are (None
    stays None), a version name ("v5") puts in that version of our matmul, "cublas" the "cublas" versions of
    matmul and attention (CUBLAS_OPS: cuBLAS via torch on the same device arrays). flash: a flash attention
    version for the fused path (None: its default)."""
    if choice not in MATMULS:
        raise ValueError(f"matmul must be one of {MATMULS}, got {choice!r}")
    if flash is not None and flash not in FLASHES:
        raise ValueError(f"flash must be one of {FLASHES}, got {flash!r}")
    if choice == "numba" and flash is None:
        return kernels
    import dataclasses
    import functools

    from gpt2lab.kernels.attention import (attention_backward, attention_backward_flash, attention_forward,
                                           attention_forward_flash)
    from gpt2lab.kernels.matmul import matmul_backward, matmul_forward

    from .kernel_model import Kernels
    swapped = {}
    if choice != "numba":
        ops = [matmul_forward, matmul_backward]
        if choice == "cublas":
            ops += [attention_forward, attention_backward]
        swapped.update({fn.__name__: functools.partial(fn, version=choice) for fn in ops})
    if flash is not None:
        swapped.update({fn.__name__: functools.partial(fn, version=flash)
                        for fn in (attention_forward_flash, attention_backward_flash)})
    return dataclasses.replace(kernels or Kernels(), **swapped)


def check_cublas_usable(flag: str = "--matmul cublas") -> None:
    """One line (CommandError) unless cuBLAS can run here: a GPU for numba and a CUDA build of PyTorch."""
    from numba import cuda
    if not cuda.is_available():
        raise CommandError(f"{flag}: no NVIDIA GPU and driver found here (numba.cuda.is_available() is False)")
    if not torch.cuda.is_available():
        raise CommandError(f"{flag}: this PyTorch has no CUDA (torch.cuda.is_available() is False); install a "
                           f"CUDA build of torch (make setup TORCH=... TORCH_PIP_ARGS=...)")


def _check_matmul(args, fault) -> None:
    if args.flash is not None:
        if args.backend != "numba" or args.device != "cuda" or not args.fused:
            raise CommandError(f"--flash {args.flash} picks the fused path's flash attention on the GPU: it needs "
                               f"--backend numba --device cuda on the fused path (not --no-fused, nor a resumed "
                               f"per-op run without --fused)")
        if fault is not None and fault.op == "attention":
            raise CommandError(f"--inject-fault {fault.name} breaks our flash attention, which --flash {args.flash} "
                               f"replaces: run it without --flash")
    if args.matmul == "numba":
        return
    if args.backend != "numba" or args.device != "cuda":
        raise CommandError(f"--matmul {args.matmul} swaps the numba backend's matmul on the GPU: it needs "
                           f"--backend numba --device cuda")
    # what --matmul swaps in replaces the faulty kernel; the fused path keeps flash attention, so an attention
    # fault still hits our kernel there
    replaced = CUBLAS_OPS if args.matmul == "cublas" else ("matmul",)
    if fault is not None and fault.op in replaced and not (fault.op == "attention" and args.fused):
        raise CommandError(f"--inject-fault {fault.name} breaks our {fault.op} kernel, which --matmul {args.matmul} "
                           f"replaces: run it without --matmul {args.matmul}")
    if args.matmul == "cublas":
        check_cublas_usable(f"--matmul {args.matmul}")


def _check_resources(args, config: GPTConfig) -> None:
    """One line, before anything is built, for a run this machine cannot do: no GPU, or too little memory."""
    if args.device == "cuda":
        if args.backend == "torch":
            if not torch.cuda.is_available():
                raise CommandError("--device cuda: no NVIDIA GPU that PyTorch can use here "
                                   "(torch.cuda.is_available() is False); use --device cpu")
        else:
            from numba import cuda
            if not cuda.is_available():
                raise CommandError("--device cuda: no NVIDIA GPU and driver found here (numba.cuda.is_available() "
                                   "is False); use --device cpu")
    need, have = _memory_needed(config, args), _memory_available(args.device)
    if have is not None and need > have:
        where = "the GPU" if args.device == "cuda" else "this machine"
        raise CommandError(f"--batch {args.batch} --seq {args.seq} needs about {need / 2**30:,.1f} GiB for the "
                           f"{args.config} model's activations and parameters; {where} has "
                           f"{have / 2**30:,.1f} GiB: lower --batch or --seq")


def _summary(result: TrainResult, out: Path) -> str:
    on_disk = (f"{out / 'latest.pt'} holds step {result.saved_step}" if result.saved_step is not None
               else f"no latest.pt in {out}")
    mismatch = out / f"mismatch_step{result.step:06d}.pt"
    if result.stopped == "mismatch" and mismatch.is_file():
        on_disk += f"; the mismatching state of step {result.step} is in {mismatch}"
    return (f"gpt2lab train: step {result.step}, train loss {_fmt(result.train_loss)}, "
            f"val loss {_fmt(result.val_loss)}, {result.tokens_per_s:,.0f} tokens/s, {result.seconds:.1f} s; "
            f"{on_disk}")


# how `gpt2lab train` ends (also in its --help)
EXIT_CODES = {None: 0, "mismatch": 3, "non-finite": 4, "interrupt": 130, **STOP_CODES}   # SIGINT 130, SIGTERM 143


def run(args) -> int:
    """`gpt2lab train`. Exit codes: 0 done; 2 a bad argument, an unusable checkpoint, or a run folder that is in
    use or holds another run; 3 stopped at a parity mismatch (--on-mismatch stop); 4 stopped at a nan/inf loss or
    gradient norm (nothing saved); 130 stopped by Ctrl-C, 143 by SIGTERM (both after saving latest.pt)."""
    fault = _fault_from_args(args)
    if args.inject_fault == "list":
        return 0
    return _run(args, fault)


def _fault_from_args(args):
    """The Fault of --inject-fault (None without it); prints the list for 'list'. Injecting needs the numba
    backend, and turns on --verify-every 1 unless a K was given: a fault nobody checks for teaches nothing."""
    from .faults import describe_faults, fault_for
    if args.inject_fault is None:
        return None
    if args.inject_fault == "list":
        print(describe_faults())
        return None
    try:
        fault = fault_for(args.inject_fault)
    except ValueError as e:
        raise CommandError(f"--inject-fault: {e}") from None
    if args.backend != "numba":
        raise CommandError(f"--inject-fault breaks one of the numba kernels: it needs --backend numba, "
                           f"not {args.backend!r}")
    if not args.verify_every:
        args.verify_every = 1
    print(f"gpt2lab train: injected fault {fault.name} ({fault.op}): {fault.doc}; verifying every "
          f"{args.verify_every} step(s)", file=sys.stderr)
    return fault


def _fused_of(args, out: Path, fault) -> bool:
    """The path a run takes when neither --fused nor --no-fused was given. The torch backend has one path. A
    resumed run keeps the one saved in it. A new run takes the device's default (choices.default_fused: the
    fused path on a GPU), but not for an injected fault the fused path has no counterpart of (the residual
    faults: residual + LayerNorm is one kernel there): that run takes the per-op path, and says so."""
    if args.backend != "numba":
        return False
    if args.resume:
        return bool(saved_run(out / "latest.pt").get("fused", False))
    fused = default_fused(args.backend, args.device)
    if fused and fault is not None:
        try:
            kernels_with(fault, True, args.device)
        except ValueError:
            print(f"gpt2lab train: the fault {fault.name} breaks a kernel the fused path (the default on "
                  f"{args.device}) does not call: training on the per-op path", file=sys.stderr)
            return False
    return fused


def _run(args, fault) -> int:
    from gpt2lab.lock import LockedError

    from .checkpoint import CheckpointError
    config = _config_from_args(args)
    if args.backend not in BACKENDS:
        raise CommandError(f"--backend {args.backend} is not available yet (available: {', '.join(BACKENDS)})")
    if args.device not in DEVICES.get(args.backend, ("cpu",)):
        raise CommandError(f"--device {args.device} is not supported by --backend {args.backend} "
                           f"(it runs on: {', '.join(DEVICES.get(args.backend, ('cpu',)))})")
    out = Path(args.out or Path("runs") / args.config)
    if args.fused is None:   # before the checks below: the flags allowed and the memory needed depend on it
        args.fused = _fused_of(args, out, fault)
    _check_matmul(args, fault)
    _check_resources(args, config)
    if args.resume and not (out / "latest.pt").is_file():
        raise CommandError(f"--resume: no checkpoint at {str(out / 'latest.pt')!r}")
    say = _tqdm_write
    try:
        with run_folder(out, resume=args.resume, overwrite=args.overwrite, say=say):
            result, verified = _run_in(args, config, out, fault)
    except (RunError, CheckpointError, LockedError) as e:
        raise CommandError(str(e)) from None
    except (MemoryError, RuntimeError) as e:  # torch's CPU allocator raises RuntimeError "can't allocate memory"
        if not isinstance(e, MemoryError) and "allocate memory" not in str(e):
            raise
        raise CommandError(f"out of memory: --batch {args.batch} --seq {args.seq} needs about "
                           f"{_memory_needed(config, args) / 2**30:,.1f} GiB for the "
                           f"{args.config} model; lower --batch or --seq") from None
    if verified is not None:
        if verified.stopped:
            print(verified.stop_report(), file=sys.stderr)
        bad = sum(not r.ok for r in verified.reports)
        print(f"gpt2lab train: parity vs PyTorch on {len(verified.reports)} verified steps: "
              f"{'all OK' if not bad else f'{bad} with mismatches'}", file=sys.stderr)
    print(_summary(result, out), file=sys.stderr)  # last: what is on disk now
    return EXIT_CODES[result.stopped]


def _run_in(args, config: GPTConfig, out: Path, fault=None):
    """The run itself, inside its locked folder: (TrainResult, the VerifiedBackend or None)."""
    saved_settings = {}
    if args.resume:
        ckpt = load_checkpoint(out / "latest.pt", kind="full")
        saved, saved_settings = ckpt["config"], dict(ckpt.get("run") or {})
        if saved != config:
            raise CommandError(f"--resume: {out / 'latest.pt'} was trained with a different model shape "
                               f"({saved}); pass the --config it was trained with")
    # resolved by _fused_of before the run folder was taken (None only for a caller that skipped _run)
    fused = args.fused if args.fused is not None else bool(saved_settings.get("fused", False))
    if fused and args.backend != "numba":
        raise CommandError(f"--fused is the numba kernel model's fused path: it needs --backend numba, "
                           f"not {args.backend!r}")
    data = _data_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        optim = OptimConfig(weight_decay=args.weight_decay, grad_clip=args.grad_clip or None)
        run_cfg = RunConfig(steps=args.steps, batch=args.batch, seq=args.seq, lr=args.lr, schedule=args.schedule,
                            warmup=args.warmup, seed=args.seed, eval_every=args.eval_every,
                            eval_batches=args.eval_batches, ckpt_every=args.ckpt_every, keep_every=args.keep_every,
                            sample_tokens=args.sample_tokens, data=args.data, fused=fused)
        faulty = kernels_with(fault, fused, args.device) if fault is not None else None
    except ValueError as e:
        raise CommandError(str(e) if fault is None else f"--inject-fault: {e}") from None
    options = {"device": args.device} if args.device != "cpu" else {}
    kernels = matmul_kernels(args.matmul, faulty, args.flash)
    if kernels is not None:
        options["kernels"] = kernels
    if fused:
        options["fused"] = True
    backend = make_backend(args.backend, config, optim, args.seed, **options)
    from gpt2lab.datasets import gpt2_encoding
    print(f"gpt2lab train: {args.config} ({config.num_params():,} params), backend {args.backend}"
          f"{' (fused path)' if fused else ''}, "
          f"B={args.batch} T={args.seq}, {len(data.train):,} train tokens, {torch.get_num_threads()} threads",
          file=sys.stderr)
    if args.backend == "numba" and args.device == "cuda":   # no on-disk cache: every process compiles its kernels
        print("gpt2lab train: the first step compiles the CUDA kernels it launches (tens of seconds; "
              "later steps do not)", file=sys.stderr)
    verified = None
    if args.verify_every:
        from .kernel_backend import verified_backend
        backend = verified = verified_backend(backend, args.verify_every, args.on_mismatch, fault=fault)
    result = train(backend, data, run_cfg, out, resume=args.resume, json_log=args.json_log,
                   progress=not args.quiet, encoding=gpt2_encoding(), on_step=verified and verified.on_step)
    return result, verified
