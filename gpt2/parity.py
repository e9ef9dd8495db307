"""Live parity: the kernel-backed GPT-2 checked against PyTorch, op by op and layer by layer, while it trains.

On a verified step the monitor

1. loads a float64 copy of the reference GPT2 with the kernel model's current parameters (reloaded before
   every verified step, so errors never compound across steps: each step is judged on its own),
2. runs the same batch through `reference_forward` -- GPT-2's forward written out op by op, recording every
   activation under the kernel model's names (encoded, ln1, ln1_mean, ln1_rstd, qkv, att, atty, ...) -- and
   autograd's backward, keeping the gradient of every recorded activation,
3. lets the kernel model take its step and compares every activation (fwd), every parameter and activation
   gradient (bwd), and -- for AdamW -- the parameters and moments after the update against torch.optim.AdamW
   run on the very inputs the kernel's update saw (its gradients and moments), so an optimizer bug shows on
   its own instead of hiding behind Adam's amplification of tiny gradient differences.

Rows come in the order the kernels *finish* each tensor (the forward in order; the backward from the loss
back to the embeddings), each named by the op that finished it. Errors flow downstream, so the first
failing row names the faulty op: a wrong GELU backward first shows in dfch, even though every gradient
below it is then wrong too. (A tensor that two ops add into -- dresidual2 gets the residual's copy of the
stream gradient and then LayerNorm's share -- is named by the one that adds last.)

The rule is the verification harness's allclose rule, |ours - ref| <= atol + rtol |ref|, elementwise, with
one change: atol is relative to the tensor's largest |ref| ("atol * scale"). The kernel SPEC tolerances are
stated for unit-scale random inputs; a model's gradients are ~1e-4 and shrink as the loss falls, so a fixed
atol would pass anything (or nothing). max_rel is likewise max|ours - ref| / max|ref|. The PyTorch side runs
in float64, so the error reported is the kernels' float32 error alone. See TOLERANCES.
"""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .model import GPT2, LN_EPS

# ---------------------------------------------------------------- what is checked, and in which order
# (tensor, op) of every block, in forward order; the per-layer activations of the kernel model.
BLOCK_FORWARD = (
    ("ln1", "layernorm"), ("ln1_mean", "layernorm"), ("ln1_rstd", "layernorm"), ("qkv", "matmul"),
    ("att", "attention"), ("atty", "attention"), ("attproj", "matmul"), ("residual2", "residual"),
    ("ln2", "layernorm"), ("ln2_mean", "layernorm"), ("ln2_rstd", "layernorm"), ("fch", "matmul"),
    ("fch_gelu", "gelu"), ("fcproj", "matmul"), ("residual3", "residual"),
)
HEAD_FORWARD = (("lnf", "layernorm"), ("lnf_mean", "layernorm"), ("lnf_rstd", "layernorm"),
                ("logits", "matmul"), ("probs", "crossentropy"), ("losses", "crossentropy"))

# The backward of one block, in the order its kernels finish each gradient: (tensor, op, where) with where
# "act" (a grads_acts view), "param" (a grads view) or "stream" (the block's input-stream gradient:
# dresidual3[l-1], or dencoded for block 0; LayerNorm ln1's dinp is the last thing added to it).
BLOCK_BACKWARD = (
    ("dfcproj", "residual", "act"),
    ("dfch_gelu", "matmul", "act"), ("dfcprojw", "matmul", "param"), ("dfcprojb", "matmul", "param"),
    ("dfch", "gelu", "act"),
    ("dln2", "matmul", "act"), ("dfcw", "matmul", "param"), ("dfcb", "matmul", "param"),
    ("dresidual2", "layernorm", "act"), ("dln2w", "layernorm", "param"), ("dln2b", "layernorm", "param"),
    ("dattproj", "residual", "act"),
    ("datty", "matmul", "act"), ("dattprojw", "matmul", "param"), ("dattprojb", "matmul", "param"),
    ("dqkv", "attention", "act"),
    ("dln1", "matmul", "act"), ("dqkvw", "matmul", "param"), ("dqkvb", "matmul", "param"),
    ("dresidual", "layernorm", "stream"), ("dln1w", "layernorm", "param"), ("dln1b", "layernorm", "param"),
)
HEAD_BACKWARD = (("dlogits", "crossentropy", "act"), ("dlnf", "matmul", "act"),
                 ("dresidual3", "layernorm", "act"), ("dlnfw", "layernorm", "param"),
                 ("dlnfb", "layernorm", "param"))
EMBED_BACKWARD = (("dwte", "encoder", "param"), ("dwpe", "encoder", "param"))

# (atol relative to max|ref|, rtol) per tensor kind. Measured on the CPU kernels (2-4 layers, C 32-128):
# forward errors are ~1e-7 of the scale, gradients ~1e-6 after a 4-layer backward; the margins are 10-100x,
# and the injected faults (gpt2/faults.py) miss them by 100x or more. The SPECs' unit-scale tolerances
# (matmul dweight 5e-4 abs, attention dinp 1e-4 abs + 1e-3 rel, ...) are the same order.
TOLERANCES = {
    "fwd": (1e-5, 1e-4),    # activations: one kernel's rounding plus what flows in from upstream
    "stat": (1e-5, 1e-4),   # LayerNorm mean / rstd
    "loss": (1e-6, 1e-5),
    "bwd": (1e-4, 1e-3),    # gradients: summed over B*T rows and fed back through every layer
    "step": (1e-5, 1e-4),   # parameters and moments after AdamW (same inputs on both sides)
}


def tolerance(direction: str, tensor: str) -> tuple[float, float]:
    """(atol relative to the tensor's scale, rtol) for one checked tensor."""
    if direction == "fwd":
        if tensor == "loss":
            return TOLERANCES["loss"]
        return TOLERANCES["stat"] if tensor.endswith(("_mean", "_rstd")) else TOLERANCES["fwd"]
    return TOLERANCES[direction]


# ---------------------------------------------------------------- rows and reports
@dataclass
class ParityRow:
    """One checked tensor. layer: the block index, or None for the embeddings, the head and AdamW."""
    step: int
    op: str
    layer: int | None
    direction: str          # "fwd", "bwd" or "step" (after the optimizer)
    tensor: str
    max_abs: float
    max_rel: float          # max_abs / max|ref|
    tol: tuple              # (atol relative to max|ref|, rtol)
    ok: bool

    def describe(self) -> str:
        where = (f"layer {self.layer}" if self.layer is not None else
                 {"encoder": "embeddings", "adamw": "optimizer"}.get(self.op, "head: ln_f, lm_head, loss"))
        return (f"{self.op} ({where}, {self.direction}) tensor {self.tensor}: max abs err {self.max_abs:.3e}, "
                f"max rel err {self.max_rel:.3e}, tol atol {self.tol[0]:.0e} x scale + rtol {self.tol[1]:.0e}")


@dataclass
class ParityReport:
    """Every row of one verified step, and a summary of it."""
    step: int
    rows: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failures(self) -> list:
        return [r for r in self.rows if not r.ok]

    @property
    def first_failure(self):
        """The first failing row in pass order: the op most likely at fault (see the module docstring)."""
        return next((r for r in self.rows if not r.ok), None)

    def summary(self) -> dict:
        """{step, ok, checked, failed, first_failure, worst: op -> direction -> max_rel} (JSON-ready)."""
        worst = {}
        for r in self.rows:
            d = worst.setdefault(r.op, {})
            d[r.direction] = max(d.get(r.direction, 0.0), _finite(r.max_rel))
        first = self.first_failure
        return {"step": self.step, "ok": self.ok, "checked": len(self.rows), "failed": len(self.failures),
                "first_failure": None if first is None else _row_dict(first), "worst": worst}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "rows": [_row_dict(r) for r in self.rows]}


def _finite(x: float) -> float:
    """JSON has no inf/NaN: a non-finite error is reported as 1e30."""
    return float(x) if math.isfinite(x) else 1e30


def _row_dict(r: ParityRow) -> dict:
    d = asdict(r)
    d["max_abs"], d["max_rel"], d["tol"] = _finite(r.max_abs), _finite(r.max_rel), list(r.tol)
    return d


def compare_scaled(ours, ref, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs err, max abs err / max|ref|, ok) with ok = all |ours - ref| <= atol * max|ref| + rtol |ref|.

    ours, ref: numpy arrays or tensors of one shape. Computed in float64 with torch (multithreaded, in place):
    the logits and their gradient are (B, T, 50257) and a numpy version took seconds per verified step.
    """
    ours, ref = torch.as_tensor(np.asarray(ours) if not torch.is_tensor(ours) else ours), torch.as_tensor(ref)
    if ours.shape != ref.shape:
        return math.inf, math.inf, False
    ref = ref.to(torch.float64)
    err = (ours.to(torch.float64) - ref).abs_()    # a new tensor: ours may be the model's own buffer
    max_abs = float(err.max()) if err.numel() else 0.0
    if not math.isfinite(max_abs):  # a NaN or inf in ours
        return math.inf, math.inf, False
    bound = ref.abs()
    scale = max(float(bound.max()) if bound.numel() else 0.0, 1e-30)
    ok = bool(err.le_(bound.mul_(rtol).add_(atol * scale)).all())
    return max_abs, max_abs / scale, ok


def check_row(step, op, layer, direction, tensor, ours, ref) -> ParityRow:
    atol, rtol = tolerance(direction, tensor)
    max_abs, max_rel, ok = compare_scaled(ours, ref, atol, rtol)
    return ParityRow(step, op, layer, direction, tensor, max_abs, max_rel, (atol, rtol), ok)


# ---------------------------------------------------------------- the reference, op by op
def layernorm(x, weight, bias):
    """x: (B, T, C) -> (out (B, T, C), mean (B, T), rstd (B, T)), the kernel's cache written out."""
    mean = x.mean(-1)
    xc = x - mean[..., None]
    rstd = (xc.pow(2).mean(-1) + LN_EPS).rsqrt()
    return xc * rstd[..., None] * weight + bias, mean, rstd


def causal_attention(qkv, n_head: int):
    """qkv: (B, T, 3C) in llm.c's layout -> (atty (B, T, C), att (B, NH, T, T) softmax, 0 above the diagonal)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in qkv.split(C, dim=2))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(C // n_head)                   # (B, NH, T, T)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=qkv.device), diagonal=1)
    att = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return (att @ v).transpose(1, 2).reshape(B, T, C), att


def reference_forward(model: GPT2, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """GPT-2's forward with the reference module's weights, one op at a time, recording every activation.

    idx, targets: (B, T) int64. Returns (loss, acts) where acts uses the kernel model's names: global tensors
    (encoded, lnf, lnf_mean, lnf_rstd, logits, probs, losses) directly and per-layer ones (ln1, qkv, att, ...)
    as lists of L tensors. Every float activation keeps its .grad after loss.backward() (retain_grad).
    """
    tr, n_head = model.transformer, model.config.n_head
    B, T = idx.shape
    acts = {name: [] for name, _ in BLOCK_FORWARD}

    def keep(name, x, layer=None):
        if x.requires_grad:
            x.retain_grad()
        if layer is None:
            acts[name] = x
        else:
            acts[name].append(x)
        return x

    x = keep("encoded", tr.wte.weight[idx] + tr.wpe.weight[:T])                    # (B, T, C)
    for l, block in enumerate(tr.h):
        ln1, mean, rstd = layernorm(x, block.ln_1.weight, block.ln_1.bias)
        keep("ln1", ln1, l), keep("ln1_mean", mean, l), keep("ln1_rstd", rstd, l)
        qkv = keep("qkv", F.linear(ln1, block.attn.c_attn.weight, block.attn.c_attn.bias), l)
        atty, att = causal_attention(qkv, n_head)
        keep("atty", atty, l), keep("att", att, l)
        attproj = keep("attproj", F.linear(atty, block.attn.c_proj.weight, block.attn.c_proj.bias), l)
        residual2 = keep("residual2", x + attproj, l)
        ln2, mean, rstd = layernorm(residual2, block.ln_2.weight, block.ln_2.bias)
        keep("ln2", ln2, l), keep("ln2_mean", mean, l), keep("ln2_rstd", rstd, l)
        fch = keep("fch", F.linear(ln2, block.mlp.c_fc.weight, block.mlp.c_fc.bias), l)
        fch_gelu = keep("fch_gelu", F.gelu(fch, approximate="tanh"), l)
        fcproj = keep("fcproj", F.linear(fch_gelu, block.mlp.c_proj.weight, block.mlp.c_proj.bias), l)
        x = keep("residual3", residual2 + fcproj, l)
    lnf, mean, rstd = layernorm(x, tr.ln_f.weight, tr.ln_f.bias)
    keep("lnf", lnf), keep("lnf_mean", mean), keep("lnf_rstd", rstd)
    logits = keep("logits", F.linear(lnf, model.lm_head.weight))                  # (B, T, V), tied to wte
    keep("probs", F.softmax(logits.detach(), dim=-1))                           # a cache: no gradient flows
    logp = F.log_softmax(logits, dim=-1)
    losses = keep("losses", -logp.gather(-1, targets[..., None])[..., 0])         # (B, T)
    return losses.mean(), acts


# ---------------------------------------------------------------- reading the kernel model
def host(a) -> np.ndarray:
    """A numpy copy of a host or numba device array."""
    return np.array(a) if isinstance(a, np.ndarray) else a.copy_to_host()


def look(a) -> np.ndarray:
    """A host array to read now: the array itself on the CPU (no copy), a copy from a device."""
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def _address(a) -> int:
    """Start address of a host or device array (to tell which parameter an adamw_update call updated)."""
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return a.__cuda_array_interface__["data"][0]


def _ref(t: torch.Tensor) -> torch.Tensor:
    """The reference value to compare with: detached (compare_scaled takes tensors as they are)."""
    return t.detach()


class ParityMonitor:
    """Checks a KernelGPT2 against a float64 reference GPT2 holding the very same parameters.

    model: a gpt2lab.gpt2.kernel_model.KernelGPT2. Use `verify_step` for a whole verified training step on
    the model itself, or the three phases around someone else's step (what VerifiedBackend does):
    `reference_step(x, y)` before it, `compare(step)` after forward + backward, and `record_adamw()` as a
    context manager around the optimizer step followed by `compare_adamw(step)`.
    """

    def __init__(self, model):
        self.model = model
        self.reference = GPT2(model.config).double()
        self.ref_loss, self.ref_acts, self.adamw_calls = None, None, []

    # ---- forward + backward
    def reference_step(self, x, y) -> float:
        """Load the kernel model's parameters into the reference, run forward + backward on x, y: (B, T)."""
        ref = self.reference
        ref.load_params_numpy(self.model.params_numpy())
        for p in ref.parameters():
            p.grad = None
        idx = torch.as_tensor(np.asarray(x, dtype=np.int64))
        targets = torch.as_tensor(np.asarray(y, dtype=np.int64))
        with torch.enable_grad():
            loss, acts = reference_forward(ref, idx, targets)
            loss.backward()
        self.ref_loss, self.ref_acts = loss, acts
        return loss.item()

    def compare(self, step: int) -> list:
        """Rows for every activation (fwd) and gradient (bwd) of the kernel model's last forward + backward."""
        return self._forward_rows(step) + self._backward_rows(step)

    def _forward_rows(self, step: int) -> list:
        a, ref, L = self.model.acts, self.ref_acts, self.model.config.n_layer
        rows = [check_row(step, "encoder", None, "fwd", "encoded", look(a["encoded"]), _ref(ref["encoded"]))]
        for l in range(L):
            for name, op in BLOCK_FORWARD:
                ours, want = look(a[name][l]), _ref(ref[name][l])
                if name == "att":  # only t2 <= t1 is part of the contract: the backward reads nothing above
                    ours = np.tril(ours)
                rows.append(check_row(step, op, l, "fwd", name, ours, want))
        rows += [check_row(step, op, None, "fwd", name, look(a[name]), _ref(ref[name])) for name, op in HEAD_FORWARD]
        kernel_loss = self.model.mean_loss if self.model.mean_loss is not None else math.nan
        rows.append(check_row(step, "crossentropy", None, "fwd", "loss", np.float64(kernel_loss),
                              _ref(self.ref_loss)))
        return rows

    def _backward_rows(self, step: int) -> list:
        m, ref, L = self.model, self.reference, self.model.config.n_layer
        ga, acts = m.grads_acts, self.ref_acts
        params = dict(ref.named_parameters())

        def act_grad(name, l=None):
            t = acts[name] if l is None else acts[name][l]
            return _ref(t.grad) if t.grad is not None else torch.zeros(tuple(t.shape), dtype=torch.float64)

        def row(tensor, op, where, l=None):
            if where == "param":
                ours = look(m.grads[tensor[1:]] if l is None else m.grads[tensor[1:]][l])
                want = _ref(params[_param_name(tensor[1:], l)].grad)
            elif where == "stream":  # the gradient of block l's input: dresidual3[l-1], or dencoded
                ours = look(ga["encoded"] if l == 0 else ga["residual3"][l - 1])
                want = act_grad("encoded") if l == 0 else act_grad("residual3", l - 1)
            else:
                name = tensor[1:]
                if l is None and name == "residual3":  # lnf's dinp: the last block's output
                    ours, want = look(ga[name][L - 1]), act_grad(name, L - 1)
                else:
                    ours = look(ga[name] if l is None else ga[name][l])
                    want = act_grad(name, l)
            return check_row(step, op, l, "bwd", tensor, ours, want)

        rows = [row(t, op, w) for t, op, w in HEAD_BACKWARD]
        for l in reversed(range(L)):
            rows += [row(t, op, w, l) for t, op, w in BLOCK_BACKWARD]
        rows += [row(t, op, w) for t, op, w in EMBED_BACKWARD]
        return rows

    # ---- the optimizer step
    @contextlib.contextmanager
    def record_adamw(self):
        """Within: every adamw_update the kernel model calls is recorded (inputs before, views after)."""
        from . import kernel_model
        update = kernel_model.adamw_update  # whatever is installed now (possibly an injected fault)
        self.adamw_calls = []

        def recording(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, *args, **kwargs):
            before = {"params": host(params), "grads": host(grads), "m": host(m), "v": host(v)}
            update(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, *args, **kwargs)
            self.adamw_calls.append((before, (params, m, v), (step, lr, beta1, beta2, eps, weight_decay)))

        kernel_model.adamw_update = recording
        try:
            yield
        finally:
            kernel_model.adamw_update = update

    def compare_adamw(self, step: int) -> list:
        """Rows comparing each recorded update with torch.optim.AdamW on the same params, grads and moments."""
        names = {_address(self.model.params_memory.flat(n)): n for n in self.model.params_memory.capacity}
        rows = []
        for before, (p_after, m_after, v_after), hyper in self.adamw_calls:
            name = names.get(_address(p_after), "?")
            p, m, v = torch_adamw(before, *hyper)
            for tensor, ours, want in ((name, p_after, p), (f"{name}.m", m_after, m), (f"{name}.v", v_after, v)):
                rows.append(check_row(step, "adamw", None, "step", tensor, look(ours), want))
        return rows

    # ---- a whole verified step on the model itself
    def verify_step(self, x, y, lr: float, step: int | None = None, grad_clip: float | None = None,
                    beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1) -> "ParityReport":
        """One training step of the kernel model (forward, backward, optional clip, AdamW), checked throughout."""
        m = self.model
        step = m.step + 1 if step is None else step
        self.reference_step(x, y)
        m.forward(x, y)
        m.zero_grad()
        m.backward()
        rows = self.compare(step)
        if grad_clip is not None:
            m.clip_grad_norm(grad_clip)
        with self.record_adamw():
            m.adamw_step(lr, beta1, beta2, eps, weight_decay)
        return ParityReport(step, rows + self.compare_adamw(step))


def torch_adamw(before: dict, step: int, lr, beta1, beta2, eps, weight_decay):
    """torch.optim.AdamW's update of one 1-D tensor (float64) from the kernel's inputs. Returns p, m, v."""
    def f64(name):
        return torch.from_numpy(before[name]).to(torch.float64)
    p = f64("params")                # a leaf; the optimizer reads p.grad and needs no autograd
    p.grad = f64("grads")
    opt = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, foreach=False)
    # the state the kernel's moments stand for: `step - 1` updates taken (step is 1-based inside the kernel)
    opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": f64("m"), "exp_avg_sq": f64("v")}
    with torch.no_grad():
        opt.step()
    state = opt.state[p]
    return _ref(p), _ref(state["exp_avg"]), _ref(state["exp_avg_sq"])


def _param_name(ours: str, layer: int | None) -> str:
    """The reference GPT2's parameter name for one of the kernel model's (and a layer)."""
    from .buffers import GLOBAL_NAMES, LAYER_NAMES
    if layer is None:
        return GLOBAL_NAMES[ours]
    return f"transformer.h.{layer}.{LAYER_NAMES[ours]}"


# ---------------------------------------------------------------- training integration
class ParityMismatch(RuntimeError):
    """Raised (from the trainer's step callback) to stop training at a mismatch. The trainer catches it by name:
    latest.pt keeps the last state saved before the mismatch, the mismatching state goes to its own file."""

    def __init__(self, report: ParityReport):
        super().__init__(format_mismatch(report))
        self.report = report


def format_mismatch(report: ParityReport) -> str:
    """One paragraph: the first failing op, layer, tensor and error, then how many rows failed in all."""
    first = report.first_failure
    if first is None:
        return f"parity step {report.step}: all {len(report.rows)} tensors OK"
    return (f"parity MISMATCH at step {report.step}: {first.describe()} "
            f"({len(report.failures)} of {len(report.rows)} tensors beyond tolerance)")


class VerifiedBackend:
    """The trainer's backend protocol around a numba backend, with every K-th step checked by a ParityMonitor.

    backend: a backend whose `.model` is a KernelGPT2. every: verify steps 1, 1+K, 1+2K, ... (the first step
    always, so a broken kernel shows at once). on_mismatch: "warn" prints the failure and goes on; "stop" also
    makes `on_step` (pass it to train()) raise ParityMismatch, which stops training with a checkpoint.
    log(text): where mismatch lines go (default: stderr). `step_extras()` hands the trainer the parity
    figures of the step just taken, {"parity": {summary, rows}}, to merge into its JSON log line.
    """

    def __init__(self, backend, every: int = 1, on_mismatch: str = "warn", log: Callable | None = None):
        if on_mismatch not in ("warn", "stop"):
            raise ValueError(f"VerifiedBackend: on_mismatch must be 'warn' or 'stop', got {on_mismatch!r}")
        if every < 1:
            raise ValueError(f"VerifiedBackend: every must be >= 1, got {every}")
        self.backend, self.every, self.on_mismatch = backend, every, on_mismatch
        self.monitor = ParityMonitor(backend.model)
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.reports, self.mismatch, self.stopped = [], None, False
        self._rows, self._step, self._extras = None, None, {}

    def __getattr__(self, name):  # config, name, eval_loss, generate, state_dict, ... pass straight through
        if name == "backend":       # not set yet (copy, pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self.backend, name)

    def loss_and_grads(self, x, y) -> float:
        self._extras = {}
        step = self.backend.model.step + 1          # the optimizer step this batch is for (1-based)
        self._step = step if (step - 1) % self.every == 0 else None
        if self._step is None:
            return self.backend.loss_and_grads(x, y)
        self.monitor.reference_step(x, y)
        loss = self.backend.loss_and_grads(x, y)
        self._rows = self.monitor.compare(step)
        return loss

    def optimizer_step(self, lr: float) -> float:
        if self._step is None:
            return self.backend.optimizer_step(lr)
        with self.monitor.record_adamw():
            norm = self.backend.optimizer_step(lr)
        report = ParityReport(self._step, self._rows + self.monitor.compare_adamw(self._step))
        self.reports.append(report)
        self._extras = {"parity": report.to_dict()}
        if not report.ok:
            self.log(format_mismatch(report))
            self.mismatch = self.mismatch or report
        return norm

    def step_extras(self) -> dict:
        """Extra fields for the trainer's JSON log line of the step just taken ({} on unverified steps)."""
        return self._extras

    def on_step(self, record: dict) -> None:
        """The trainer's step callback: with on_mismatch="stop", raise ParityMismatch after a failed step."""
        if self.on_mismatch == "stop" and self.mismatch is not None:
            self.stopped = True
            raise ParityMismatch(self.mismatch)

    def stop_report(self, max_rows: int = 12) -> str:
        """What stopped training: the first failing op, layer, tensor and error, then the failing rows."""
        report = self.mismatch
        if report is None:
            return "parity: no mismatch"
        lines = ["training stopped: " + format_mismatch(report), "failing tensors, in pass order:"]
        lines += [f"  {r.describe()}" for r in report.failures[:max_rows]]
        if len(report.failures) > max_rows:
            lines.append(f"  ... and {len(report.failures) - max_rows} more")
        return "\n".join(lines)


def verified_backend(backend, every: int, on_mismatch: str = "warn", log: Callable | None = None):
    """`gpt2lab train --verify-every K`: the backend wrapped in a VerifiedBackend; CommandError (one line) for
    a backend that has no kernel model to verify."""
    if not hasattr(backend, "model") or not hasattr(backend.model, "grads_acts"):
        from .cli import CommandError
        raise CommandError(f"--verify-every checks the numba kernels against PyTorch: it needs --backend numba, "
                           f"not {getattr(backend, 'name', type(backend).__name__)!r}")
    return VerifiedBackend(backend, every, on_mismatch, log)

