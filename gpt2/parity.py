"""Live parity: the kernel-backed GPT-2 checked against PyTorch, op by op and layer by layer, while it trains.

On a verified step the monitor

1. loads the kernel model's current parameters into two copies of the reference GPT2 -- one in float64 (the
   truth) and one in float32 (what PyTorch itself gets in our precision) -- reloaded before every verified
   step, so errors never compound across steps: each step is judged on its own,
2. runs the same batch through `reference_forward` in both -- GPT-2's forward written out op by op, recording
   every activation under the kernel model's names (encoded, ln1, ln1_mean, ln1_rstd, qkv, att, atty, ...) --
   and autograd's backward, keeping the gradient of every recorded activation,
3. lets the kernel model take its step and judges every activation (fwd), every parameter and activation
   gradient (bwd), and -- for AdamW -- the parameters and moments after the update against torch.optim.AdamW
   run on the very inputs the kernel's update saw (its gradients and moments, copied before the step), so an
   optimizer bug shows on its own instead of hiding behind Adam's amplification of tiny gradient differences.

Rows come in the order the kernels *finish* each tensor (the forward in order; the backward from the loss
back to the embeddings), each named by the op that finished it. Errors flow downstream, so the first
failing row names the faulty op: a wrong GELU backward first shows in dfch, even though every gradient
below it is then wrong too. (A tensor that two ops add into -- dresidual2 gets the residual's copy of the
stream gradient and then LayerNorm's share -- is named by the one that adds last.)

The rule is the verification harness's (`gpt2lab.kernels.check.judge`): our error against float64, in units
of PyTorch float32's error against float64 on the same step. A tensor fails when ours/torch32 > K. Both
sides run the same model in the same precision on the same batch, so the rule stays right as training makes
logits and attention scores large -- a fixed tolerance measured on a fresh model does not (PyTorch's own
float32 failed it on 4-6 of 237 tensors after 240 steps of `small`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from gpt2lab.kernels._validate import on_host, to_host
from gpt2lab.kernels.attention import att_from_lse
from gpt2lab.kernels.check import K, judge

from .buffers import DECAYED, PARAM_NAMES
from .model import GPT2
from .reference_ops import reference_forward

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

# The fused path (KernelGPT2(fused=True)) finishes some tensors with other kernels: each residual add and the
# LayerNorm after it are one op, "residual_layernorm" (its forward writes residual2 with ln_2's outputs, and
# residual3 with the next block's ln_1 or ln_f; its backward writes the stream's gradients and the LayerNorm
# parameters' gradients). att is not stored there: its row is att rebuilt from the stored lse
# (kernels.attention.att_from_lse), which is what the flash backward uses. dattproj and dfcproj are not
# buffers of their own on that path: an add passes its gradient unchanged to both summands, so they are
# dresidual2 and dresidual3 of the block, read from there.
FUSED_FORWARD_OPS = {"residual2": "residual_layernorm", "ln2": "residual_layernorm",
                     "ln2_mean": "residual_layernorm", "ln2_rstd": "residual_layernorm",
                     "residual3": "residual_layernorm"}
FUSED_NEXT_LN = ("ln1", "ln1_mean", "ln1_rstd", "lnf", "lnf_mean", "lnf_rstd")   # but block 0's ln_1
FUSED_BACKWARD_OPS = {"dresidual2": "residual_layernorm", "dln2w": "residual_layernorm",
                      "dln2b": "residual_layernorm", "dattproj": "residual_layernorm",
                      "dresidual": "residual_layernorm", "dln1w": "residual_layernorm",
                      "dln1b": "residual_layernorm"}
FUSED_SAME_AS = {"attproj": "residual2", "fcproj": "residual3"}   # d attproj = d residual2, d fcproj = d residual3


def forward_op(model, tensor: str, op: str, layer: int | None) -> str:
    """The op that finished activation `tensor` (of block `layer`) on this model's path."""
    if not getattr(model, "fused", False):
        return op
    if tensor in FUSED_NEXT_LN and layer != 0:   # written by the residual add before it (block 0's ln_1 is plain)
        return "residual_layernorm"
    return FUSED_FORWARD_OPS.get(tensor, op)


def backward_op(model, tensor: str, op: str, layer: int | None) -> str:
    """The op that finished gradient `tensor` (of block `layer`) on this model's path."""
    if not getattr(model, "fused", False):
        return op
    if tensor == "dfcproj":   # d residual3 of the block: the next block's fused ln_1 backward, or ln_f's
        return "layernorm" if layer == model.config.n_layer - 1 else "residual_layernorm"
    return FUSED_BACKWARD_OPS.get(tensor, op)

# ---------------------------------------------------------------- rows and reports
@dataclass
class ParityRow:
    """One checked tensor. layer: the block index, or None for the embeddings, the head and AdamW."""
    step: int
    op: str
    layer: int | None
    direction: str          # "fwd", "bwd" or "step" (after the optimizer)
    tensor: str
    max_abs: float          # our error: max |ours - ref64|
    torch32_abs: float      # PyTorch float32's error on the same step: max |torch32 - ref64|
    scale: float            # max |ref64|
    ratio: float            # ours/torch32 (see gpt2lab.kernels.check.judge); fails above K
    ok: bool

    def describe(self) -> str:
        where = (f"layer {self.layer}" if self.layer is not None else
                 {"encoder": "embeddings", "adamw": "optimizer"}.get(self.op, "head: ln_f, lm_head, loss"))
        return (f"{self.op} ({where}, {self.direction}) tensor {self.tensor}: ours/torch32 {_ratio(self.ratio)} "
                f"(max abs err {self.max_abs:.3e}, torch float32's {self.torch32_abs:.3e}; fails above {K:g})")


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
        """{step, ok, checked, failed, first_failure, worst: op -> direction -> largest ours/torch32} (JSON)."""
        worst = {}
        for r in self.rows:
            d = worst.setdefault(r.op, {})
            d[r.direction] = max(d.get(r.direction, 0.0), _finite(r.ratio))
        first = self.first_failure
        return {"step": self.step, "ok": self.ok, "checked": len(self.rows), "failed": len(self.failures),
                "first_failure": None if first is None else _row_dict(first), "worst": worst}

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "rows": [_row_dict(r) for r in self.rows]}


def _finite(x: float) -> float:
    """JSON has no inf/NaN: a non-finite error is reported as 1e30."""
    return float(x) if math.isfinite(x) else 1e30


def _ratio(x: float) -> str:
    return f"{x:.2g}" if math.isfinite(x) and x < 100 else f"{x:.3g}" if math.isfinite(x) else "inf"


def _row_dict(r: ParityRow) -> dict:
    d = asdict(r)
    for k in ("max_abs", "torch32_abs", "scale", "ratio"):
        d[k] = _finite(d[k])
    return d


def check_row(step, op, layer, direction, tensor, ours, torch32, ref64, own=None) -> ParityRow:
    """Judge one tensor: ours against ref64, in units of torch32's error against ref64. own: for a parameter
    gradient, the exact (float64) sum over rows of the kernel's own inputs; then ours is judged against it,
    in the same unit (see own_param_grad)."""
    v = judge(ours, torch32, ref64, own=own)
    return ParityRow(step, op, layer, direction, tensor, v.max_abs, v.torch32_abs, v.scale, v.ratio, v.ok)


# ---------------------------------------------------------------- reading the kernel model


def _param_name(ours: str, layer: int | None) -> str:
    """The reference GPT2's parameter name for one of the kernel model's (and a layer)."""
    from .buffers import GLOBAL_NAMES, LAYER_NAMES
    if layer is None:
        return GLOBAL_NAMES[ours]
    return f"transformer.h.{layer}.{LAYER_NAMES[ours]}"


def torch_device(kernel_device: str) -> str:
    """Where the references run: on the GPU beside CUDA kernels (float32 there is what we must match), else
    the CPU."""
    return "cuda" if kernel_device == "cuda" and torch.cuda.is_available() else "cpu"


# A block matmul's parameter prefix -> (its output, its input): what its weight and bias gradients sum over.
MATMUL_IO = {"qkv": ("qkv", "ln1"), "attproj": ("attproj", "atty"), "fc": ("fch", "ln2"),
             "fcproj": ("fcproj", "fch_gelu")}


def own_param_grad(model, name: str, layer: int | None) -> np.ndarray:
    """Parameter `name`'s gradient summed exactly (float64) over the B*T rows of the kernel model's own float32
    inputs: its activations and activation gradients. A parameter gradient is a sum over rows; judged against
    this, it answers for its own sum alone. Against the float64 reference it would also answer for every
    rounding upstream, and those can agree in sign across rows (measured: our matmul's dinp errors, as small
    as PyTorch's element by element, added up 4-10x more coherently over rows), which no kernel of the
    parameter's op caused. Upstream errors are judged where they arise, in the activation rows."""
    a, ga, l, L = model.acts, model.grads_acts, layer, model.config.n_layer
    fused = getattr(model, "fused", False)

    def act(n, k=None):
        return to_host(a[n] if k is None else a[n][k]).astype(np.float64)

    def grad(n, k=None):
        return to_host(ga[n] if k is None else ga[n][k]).astype(np.float64)

    def rows(x):
        return x.reshape(-1, x.shape[-1])
    if name in ("wte", "wpe"):
        dx = grad("encoded")                                                        # (B, T, C)
        if name == "wpe":
            dwpe = np.zeros(model.params[name].shape)
            dwpe[:dx.shape[1]] = dx.sum(0)
            return dwpe
        dwte = rows(grad("logits")).T @ rows(act("lnf"))                           # lm_head's share
        np.add.at(dwte, to_host(model.inputs).reshape(-1), rows(dx))               # the encoder's scatter-add
        return dwte
    if name[:3] in ("ln1", "ln2", "lnf"):
        ln = name[:3]
        x = (act("encoded") if l == 0 else act("residual3", l - 1)) if ln == "ln1" else \
            act("residual2", l) if ln == "ln2" else act("residual3", L - 1)
        dout = rows(grad(ln, l))
        if name.endswith("b"):
            return dout.sum(0)
        norm = (x - act(f"{ln}_mean", l)[..., None]) * act(f"{ln}_rstd", l)[..., None]
        return (dout * rows(norm)).sum(0)
    out, inp = MATMUL_IO[name[:-1]]
    dout = rows(grad(FUSED_SAME_AS.get(out, out) if fused else out, l))   # fused: the stream's gradient
    return dout.sum(0) if name.endswith("b") else dout.T @ rows(act(inp, l))


class Reference:
    """The reference GPT2 in one dtype (float64: the truth; float32: PyTorch in our precision), run op by op
    with autograd on a batch. After `run`: .loss, and every activation and gradient by the kernel model's
    names through `act`, `act_grad` and `param_grad` (detached tensors)."""

    def __init__(self, config, dtype: torch.dtype, device: str = "cpu"):
        self.model = GPT2(config).to(device=device, dtype=dtype)
        self.params = dict(self.model.named_parameters())
        self.device, self.loss, self.acts = device, None, None

    def run(self, params: dict, x, y) -> None:
        """Load params (name -> float32 array), forward + backward on x, y: (B, T) ints."""
        self.model.load_params_numpy(params)
        for p in self.params.values():
            p.grad = None
        idx = torch.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)
        targets = torch.as_tensor(np.asarray(y, dtype=np.int64), device=self.device)
        with torch.enable_grad():
            self.loss, self.acts = reference_forward(self.model, idx, targets)
            self.loss.backward()

    def act(self, name: str, layer: int | None = None) -> torch.Tensor:
        t = self.acts[name] if layer is None else self.acts[name][layer]
        return t.detach()

    def act_grad(self, name: str, layer: int | None = None) -> torch.Tensor:
        t = self.acts[name] if layer is None else self.acts[name][layer]
        return t.grad.detach() if t.grad is not None else torch.zeros_like(t).detach()

    def param_grad(self, name: str, layer: int | None = None) -> torch.Tensor:
        return self.params[_param_name(name, layer)].grad.detach()


class ParityMonitor:
    """Checks a KernelGPT2 against two copies of the reference GPT2 holding the very same parameters: float64
    (the answer) and float32 (how close PyTorch itself gets in float32; the unit of our error).

    model: a gpt2lab.gpt2.kernel_model.KernelGPT2. Use `verify_step` for a whole verified training step on
    the model itself, or the phases around someone else's step (what VerifiedBackend does):
    `reference_step(x, y)` before it, `compare(step)` after forward + backward, `snapshot_optimizer()` before
    the optimizer step and `compare_adamw(step, lr, ...)` after it. It sets `model.lean = False`: it reads
    every block's activation gradients, which a lean model does not keep.
    """

    def __init__(self, model):
        self.model = model
        if hasattr(model, "lean"):   # a learner's stand-in model may have no such setting
            model.lean = False
        device = torch_device(model.device)
        self.ref64 = Reference(model.config, torch.float64, device)
        self.ref32 = Reference(model.config, torch.float32, device)
        self._before = None

    @property
    def ref_loss(self) -> torch.Tensor:
        """The float64 reference's loss of the last reference_step."""
        return self.ref64.loss

    # ---- forward + backward
    def reference_step(self, x, y) -> float:
        """Load the kernel model's parameters into both references, run forward + backward on x, y: (B, T)."""
        params = self.model.params_numpy()
        self.ref64.run(params, x, y)
        self.ref32.run(params, x, y)
        return self.ref64.loss.item()

    def _row(self, step, op, layer, direction, tensor, ours, get) -> ParityRow:
        """Judge `ours` against get(ref64), in units of get(ref32)'s error."""
        return check_row(step, op, layer, direction, tensor, ours, get(self.ref32), get(self.ref64))

    def compare(self, step: int) -> list:
        """Rows for every activation (fwd) and gradient (bwd) of the kernel model's last forward + backward."""
        if getattr(self.model, "allocated_lean", False):
            raise RuntimeError("ParityMonitor.compare: the model's last forward ran lean, before this monitor was "
                               "made (its blocks share one block's gradients): run forward and backward again")
        return self._forward_rows(step) + self._backward_rows(step)

    def _forward_rows(self, step: int) -> list:
        m, row = self.model, self._row
        a, L = m.acts, m.config.n_layer
        rows = [row(step, "encoder", None, "fwd", "encoded", on_host(a["encoded"]), lambda r: r.act("encoded"))]
        for l in range(L):
            for name, op in BLOCK_FORWARD:
                if name == "att" and m.fused:   # flash attention keeps lse, not att: att rebuilt from it
                    ours = att_from_lse(on_host(a["qkv"][l]), on_host(a["lse"][l]), m.config.n_head)
                else:
                    ours = on_host(a[name][l])
                if name == "att":  # only t2 <= t1 is part of the contract: the backward reads nothing above
                    ours = np.tril(ours)
                rows.append(row(step, forward_op(m, name, op, l), l, "fwd", name, ours,
                                lambda r, n=name, l=l: r.act(n, l)))
        rows += [row(step, forward_op(m, name, op, None), None, "fwd", name, on_host(a[name]),
                     lambda r, n=name: r.act(n)) for name, op in HEAD_FORWARD]
        kernel_loss = self.model.mean_loss if self.model.mean_loss is not None else math.nan
        rows.append(row(step, "crossentropy", None, "fwd", "loss", np.float64(kernel_loss),
                        lambda r: r.loss.detach()))
        return rows

    def _backward_rows(self, step: int) -> list:
        m, L = self.model, self.model.config.n_layer
        ga = m.grads_acts

        def row(tensor, op, where, l=None):
            name = tensor[1:]
            op = backward_op(m, tensor, op, l)
            if where == "param":
                ours = on_host(m.grads[name] if l is None else m.grads[name][l])
                return check_row(step, op, l, "bwd", tensor, ours, self.ref32.param_grad(name, l),
                                 self.ref64.param_grad(name, l), own=own_param_grad(m, name, l))
            elif where == "stream":  # the gradient of block l's input: dresidual3[l-1], or dencoded
                ours = on_host(ga["encoded"] if l == 0 else ga["residual3"][l - 1])
                get = (lambda r: r.act_grad("encoded")) if l == 0 else (lambda r: r.act_grad("residual3", l - 1))
            elif l is None and name == "residual3":  # lnf's dinp: the last block's output
                ours, get = on_host(ga[name][L - 1]), lambda r: r.act_grad(name, L - 1)
            else:
                stored = FUSED_SAME_AS.get(name, name) if m.fused else name   # fused: dfcproj is dresidual3
                ours, get = on_host(ga[stored] if l is None else ga[stored][l]), lambda r: r.act_grad(name, l)
            return self._row(step, op, l, "bwd", tensor, ours, get)

        rows = [row(t, op, w) for t, op, w in HEAD_BACKWARD]
        for l in reversed(range(L)):
            rows += [row(t, op, w, l) for t, op, w in BLOCK_BACKWARD]
        rows += [row(t, op, w) for t, op, w in EMBED_BACKWARD]
        return rows

    # ---- the optimizer step
    def snapshot_optimizer(self) -> None:
        """Copy the parameters and AdamW's moments before the optimizer step. (The gradients are read after
        it: clipping scales them in place before the update, and the update does not change them.)"""
        m = self.model
        self._before = {k: to_host(b.memory) for k, b in
                        (("params", m.params_memory), ("m", m.m_memory), ("v", m.v_memory))}

    def compare_adamw(self, step: int, lr: float, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1) -> list:
        """Rows comparing the update since `snapshot_optimizer` with torch.optim.AdamW on the same params,
        gradients and moments, per parameter tensor (decay on the matrices only, as the model does)."""
        m, before = self.model, self._before
        if before is None:
            raise RuntimeError("compare_adamw: call snapshot_optimizer() before the optimizer step")
        grads = to_host(m.grads_memory.memory)
        after = {k: on_host(b.memory) for k, b in (("params", m.params_memory), ("m", m.m_memory), ("v", m.v_memory))}
        rows = []
        for name in PARAM_NAMES:
            region = slice(m.params_memory.offsets[name], m.params_memory.offsets[name] + m.params_memory.flat(name).size)
            inputs = {k: v[region] for k, v in before.items()} | {"grads": grads[region]}
            hyper = (m.step, lr, beta1, beta2, eps, weight_decay if name in DECAYED else 0.0)
            want64 = torch_adamw(inputs, *hyper, dtype=torch.float64)
            want32 = torch_adamw(inputs, *hyper, dtype=torch.float32)
            for i, (tensor, key) in enumerate(((name, "params"), (f"{name}.m", "m"), (f"{name}.v", "v"))):
                rows.append(check_row(step, "adamw", None, "step", tensor, after[key][region], want32[i], want64[i]))
        self._before = None
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
        self.snapshot_optimizer()
        if grad_clip is not None:
            m.clip_grad_norm(grad_clip)
        m.adamw_step(lr, beta1, beta2, eps, weight_decay)
        return ParityReport(step, rows + self.compare_adamw(step, lr, beta1, beta2, eps, weight_decay))


def torch_adamw(before: dict, step: int, lr, beta1, beta2, eps, weight_decay, dtype=torch.float64):
    """torch.optim.AdamW's update of one 1-D tensor, in `dtype`, from the kernel's inputs (before: params,
    grads, m, v as float32 numpy; step: the kernel's 1-based step). Returns (params, m, v) tensors."""
    def t(name):
        return torch.from_numpy(np.ascontiguousarray(before[name])).to(dtype)
    p = t("params")                  # a leaf; the optimizer reads p.grad and needs no autograd
    p.grad = t("grads")
    opt = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, foreach=False)
    # the state the kernel's moments stand for: `step - 1` updates taken (step is 1-based inside the kernel)
    opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": t("m"), "exp_avg_sq": t("v")}
    with torch.no_grad():
        opt.step()
    state = opt.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


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
            f"({len(report.failures)} of {len(report.rows)} tensors with ours/torch32 above {K:g})")
