"""Injected faults: one kernel swapped for a deliberately wrong variant, to show that live parity catches it.

    with inject("gelu_backward_off", model):    # model: a KernelGPT2 (or a backend holding one)
        train(...)                               # the monitor flags op "gelu" at the first verified step

Each fault is a bug from writing these kernels by hand (FAULTS lists them with the op they break): a classic,
O(1)-wrong one per op, and subtle ones a fixed tolerance let through (0.1% off, a mask one step late, a lost
atomic add). The model calls its kernels through one swap point, `model.kernels` (gpt2/kernel_model.py
`Kernels`); `inject` swaps one entry there and restores it on exit, even on an exception. `kernels_with`
gives a Kernels with the fault built in, for a model made later (the CLI's `--inject-fault`).

Most variants call the correct kernel and then add a wrong correction, so they hold for any kernel version;
the correction is numpy on the host (device arrays make a round trip), fine for a demonstration.

The fused path (KernelGPT2(fused=True)) calls other entry points for some ops (model.calls names them): flash
attention, residual + LayerNorm in one kernel, and on CUDA the fused classifier and the one-launch AdamW.
A fault whose kernel the model's path does not call must not quietly "pass", so each fault carries the same
bug for the fused entry point where there is one (`fused_function`, `fused_variant`: attention's three,
cross-entropy's two, AdamW's two), and `inject` / `kernels_with` refuse, in one line, a fault with no
counterpart on the path (the residual backward's two: that add has no backward of its own there). The
LayerNorm backward faults still hit ln_f's plain LayerNorm backward on the fused path.
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpt2lab.kernels._validate import is_device_array, to_host


def _on_host(fn):
    """Run fn on host copies of any device arrays among its arguments, then copy the arrays back."""
    def wrapped(*args):
        hosted = [to_host(a) if is_device_array(a) else a for a in args]
        fn(*hosted)
        for a, h in zip(args, hosted):
            if a is not h:
                a.copy_to_device(h)
    return wrapped


def _kernel(op: str, name: str) -> Callable:
    """The correct kernel `name` from gpt2lab.kernels.<op>."""
    return getattr(importlib.import_module(f"gpt2lab.kernels.{op}"), name)


# ---------------------------------------------------------------- the wrong variants
def layernorm_backward_no_mean(dinp, dweight, dbias, dout, inp, weight, mean, rstd, **kw):
    """dinp without the -mean(dnorm) term: forgets that shifting every x moves the mean along with it."""
    _kernel("layernorm", "layernorm_backward")(dinp, dweight, dbias, dout, inp, weight, mean, rstd, **kw)

    @_on_host
    def add_back(dinp, dout, weight, rstd):
        dnorm = dout * weight                                          # (B, T, C)
        dinp += rstd[..., None] * dnorm.mean(-1, keepdims=True)        # undo the kernel's -rstd * mean(dnorm)
    add_back(dinp, dout, weight, rstd)


def _masked_attention(out, inp, n_head, future_from):
    """out = attention in numpy (host arrays) with keys t2 >= t1 + future_from masked (None: no mask at all;
    1 is right). Returns (att, lse): the softmax (B, NH, T, T) and its log-sum-exp (B, NH, T)."""
    B, T, C3 = inp.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = (inp[..., i * C:(i + 1) * C].reshape(B, T, n_head, hs).transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(hs))           # (B, NH, T, T)
    if future_from is not None:
        scores[..., np.triu(np.ones((T, T), bool), k=future_from)] = -np.inf
    m = scores.max(-1, keepdims=True)
    e = np.exp(scores - m)
    att = e / e.sum(-1, keepdims=True)
    out[:] = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return att, (m + np.log(e.sum(-1, keepdims=True)))[..., 0]


def _attention_on_host(out, att, inp, n_head, future_from):
    """The attention_forward contract (out, att) with the mask of _masked_attention."""
    @_on_host
    def forward(out, att, inp):
        att[:] = _masked_attention(out, inp, n_head, future_from)[0]
    forward(out, att, inp)


def _flash_on_host(out, lse, inp, n_head, future_from):
    """The attention_forward_flash contract (out, lse) with the mask of _masked_attention."""
    @_on_host
    def forward(out, lse, inp):
        lse[:] = _masked_attention(out, inp, n_head, future_from)[1]
    forward(out, lse, inp)


def attention_no_causal_mask(out, att, inp, n_head, **kw):
    """Softmax over every key, the future included: position t reads the token it should predict."""
    _attention_on_host(out, att, inp, n_head, future_from=None)


def attention_flash_no_causal_mask(out, lse, inp, n_head, **kw):
    """attention_no_causal_mask for flash attention: out and lse from every key, the future included."""
    _flash_on_host(out, lse, inp, n_head, future_from=None)


def gelu_backward_off(dinp, inp, dout, **kw):
    """GELU's derivative off by a constant: gelu'(x) + 0.1 (a slipped term in the hand derivation)."""
    _kernel("gelu", "gelu_backward")(dinp, inp, dout, **kw)

    @_on_host
    def add(dinp, dout):
        dinp += np.float32(0.1) * dout
    add(dinp, dout)


def adamw_no_bias_correction(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, **kw):
    """AdamW using m and v as they are: without dividing by 1 - beta^t the first steps are far too small."""
    @_on_host
    def update(params, grads, m, v):
        m[:] = beta1 * m + (1 - beta1) * grads
        v[:] = beta2 * v + (1 - beta2) * grads * grads
        params[:] -= lr * (m / (np.sqrt(v) + eps) + weight_decay * params)
    update(params, grads, m, v)


def matmul_dbias_first_row(dinp, dweight, dbias, dout, inp, weight, **kw):
    """dbias from the first row of dout only, instead of summed over all B*T positions that share the bias."""
    _kernel("matmul", "matmul_backward")(dinp, dweight, None, dout, inp, weight, **kw)
    if dbias is not None:
        @_on_host
        def first_row(dbias, dout):
            dbias += dout.reshape(-1, dout.shape[-1])[0]
        first_row(dbias, dout)


def encoder_backward_overwrite(dwte, dwpe, dout, inp, **kw):
    """dwte[token] = dout instead of +=: a token seen twice keeps only its last gradient (and lm_head's
    share of the tied wte gradient is lost too)."""
    @_on_host
    def backward(dwte, dwpe, dout, inp):
        B, T = inp.shape
        dwpe[:T] += dout.sum(0)
        for b in range(B):
            for t in range(T):
                dwte[inp[b, t]] = dout[b, t]
    backward(dwte, dwpe, dout, inp)


def crossentropy_backward_no_onehot(dlogits, dlosses, probs, targets, **kw):
    """dlogits = probs * dloss, forgetting to subtract the one-hot of the target."""
    @_on_host
    def backward(dlogits, dlosses, probs):
        dlogits += probs * dlosses[..., None]
    backward(dlogits, dlosses, probs)


def fused_classifier_no_onehot(losses, dlogits, probs, logits, targets, dlosses, write_probs=False, **kw):
    """crossentropy_backward_no_onehot in the fused classifier: its dlogits without the - onehot * dloss."""
    _kernel("crossentropy", "fused_classifier")(losses, dlogits, probs, logits, targets, dlosses, write_probs, **kw)

    @_on_host
    def add_back(dlogits, targets, dlosses):
        V = dlogits.shape[-1]
        rows, ids = dlogits.reshape(-1, V), targets.reshape(-1)
        rows[np.arange(ids.size), ids] += dlosses.reshape(-1)
    add_back(dlogits, targets, dlosses)


def residual_backward_one_branch(dinp1, dinp2, dout, **kw):
    """The stream's gradient sent down one side of x + f(x) only: f(x) (attn or mlp) gets nothing."""
    @_on_host
    def backward(dinp1, dout):
        dinp1 += dout
    backward(dinp1, dout)


# ---------------------------------------------------------------- subtle ones: what a fixed tolerance misses
def _scale_contribution(op: str, name: str, out: int, factor: float) -> Callable:
    """The correct kernel, with its contribution to argument `out` scaled by `factor` (backward kernels add
    into their outputs: only what this call adds is scaled)."""
    def variant(*args, **kw):
        before = np.array(args[out]) if isinstance(args[out], np.ndarray) else args[out].copy_to_host()
        _kernel(op, name)(*args, **kw)

        @_on_host
        def scale(target):
            target[:] = before + np.float32(factor) * (target - before)
        scale(args[out])
    return variant


def attention_backward_scaled(dinp, dout, inp, att, n_head, **kw):
    """Attention's dqkv 0.1% too large: a constant folded in twice, say, or a scale applied to one more term."""
    _scale_contribution("attention", "attention_backward", 0, 1.001)(dinp, dout, inp, att, n_head, **kw)


def attention_backward_flash_scaled(dinp, dout, inp, out, lse, n_head, **kw):
    """attention_backward_scaled for flash attention: its dqkv 0.1% too large."""
    _scale_contribution("attention", "attention_backward_flash", 0, 1.001)(dinp, dout, inp, out, lse, n_head, **kw)


def attention_mask_off_by_one(out, att, inp, n_head, **kw):
    """The causal mask one step late: position t also reads t + 1, the very token it must predict."""
    _attention_on_host(out, att, inp, n_head, future_from=2)


def attention_flash_mask_off_by_one(out, lse, inp, n_head, **kw):
    """attention_mask_off_by_one for flash attention: out and lse with t also reading t + 1."""
    _flash_on_host(out, lse, inp, n_head, future_from=2)


def gelu_forward_erf(out, inp, **kw):
    """The exact GELU, x Phi(x) with erf, where GPT-2 uses the tanh approximation: at most ~1e-4 apart."""
    @_on_host
    def forward(out, inp):
        from scipy.special import erf
        x = inp.astype(np.float64)
        out[:] = (0.5 * x * (1 + erf(x / np.sqrt(2)))).astype(np.float32)
    forward(out, inp)


def matmul_backward_no_dbias(dinp, dweight, dbias, dout, inp, weight, **kw):
    """The bias gradient dropped: dbias never accumulated (a forgotten `if bias is not None` branch)."""
    _kernel("matmul", "matmul_backward")(dinp, dweight, None, dout, inp, weight, **kw)


def layernorm_backward_lost_row(dinp, dweight, dbias, dout, inp, weight, mean, rstd, **kw):
    """A missing atomic: two blocks add into dweight and dbias at once and one add is lost -- here, the last
    row's share of both."""
    _kernel("layernorm", "layernorm_backward")(dinp, dweight, dbias, dout, inp, weight, mean, rstd, **kw)

    @_on_host
    def lose(dweight, dbias, dout, inp, mean, rstd):
        d, x = dout.reshape(-1, dout.shape[-1])[-1], inp.reshape(-1, inp.shape[-1])[-1]
        norm = (x - mean.reshape(-1)[-1]) * rstd.reshape(-1)[-1]
        dweight -= d * norm
        dbias -= d
    lose(dweight, dbias, dout, inp, mean, rstd)


def encoder_backward_lost_update(dwte, dwpe, dout, inp, **kw):
    """A missing atomic in the scatter-add: for a token that occurs more than once, one occurrence's add is
    lost (two threads read dwte[token], both add, one write wins)."""
    _kernel("encoder", "encoder_backward")(dwte, dwpe, dout, inp, **kw)

    @_on_host
    def lose(dwte, dout, inp):
        flat_ids, flat_dout = inp.reshape(-1), dout.reshape(-1, dout.shape[-1])
        ids, first, counts = np.unique(flat_ids, return_index=True, return_counts=True)
        for token, i in zip(ids[counts > 1], first[counts > 1]):
            dwte[token] -= flat_dout[i]
    lose(dwte, dout, inp)


def residual_backward_scaled(dinp1, dinp2, dout, **kw):
    """The branch's gradient 0.1% too small (a stray scale, e.g. a dropout factor left in at eval)."""
    _scale_contribution("residual", "residual_backward", 1, 0.999)(dinp1, dinp2, dout, **kw)


def crossentropy_backward_scaled(dlogits, dlosses, probs, targets, **kw):
    """dlogits 0.1% too large (the mean over B*T taken over one position fewer, at B*T = 1000)."""
    _scale_contribution("crossentropy", "crossentropy_backward", 0, 1.001)(dlogits, dlosses, probs, targets, **kw)


def fused_classifier_scaled(losses, dlogits, probs, logits, targets, dlosses, write_probs=False, **kw):
    """crossentropy_backward_scaled in the fused classifier (which writes dlogits, =): dlogits 0.1% too large."""
    _kernel("crossentropy", "fused_classifier")(losses, dlogits, probs, logits, targets, dlosses, write_probs, **kw)

    @_on_host
    def scale(dlogits):
        dlogits *= np.float32(1.001)
    scale(dlogits)


def adamw_eps_inside_sqrt(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, **kw):
    """eps inside the square root, sqrt(vhat + eps), where AdamW adds it outside: sqrt(vhat) + eps. The
    steps of parameters with small gradients come out smaller."""
    @_on_host
    def update(params, grads, m, v):
        m[:] = beta1 * m + (1 - beta1) * grads
        v[:] = beta2 * v + (1 - beta2) * grads * grads
        mhat, vhat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        params[:] -= lr * (mhat / np.sqrt(vhat + eps) + weight_decay * params)
    update(params, grads, m, v)


def _flat_adamw(per_tensor: Callable) -> Callable:
    """An adamw_update_flat variant from a wrong adamw_update: the per-tensor variant over each region of the
    flat buffers, with the region's weight decay (region_decay * weight_decay), on host copies."""
    def flat(params, grads, m, v, region_end, region_decay, step, lr, beta1, beta2, eps, weight_decay, **kw):
        @_on_host
        def update(params, grads, m, v, region_end, region_decay):
            start = 0
            for end, decayed in zip(region_end, region_decay):
                region = slice(start, int(end))
                per_tensor(params[region], grads[region], m[region], v[region], step, lr, beta1, beta2, eps,
                           float(decayed) * weight_decay)
                start = int(end)
        update(params, grads, m, v, region_end, region_decay)
    flat.__name__ = per_tensor.__name__ + "_flat"
    flat.__doc__ = f"{per_tensor.__name__} over the flat buffers (adamw_update_flat's contract)."
    return flat


@dataclass(frozen=True)
class Fault:
    op: str              # the op whose kernel is swapped; what the parity monitor must name
    function: str        # the kernel entry point replaced
    variant: Callable
    doc: str
    subtle: bool = False  # within a fixed tolerance's reach (0.1% off, a few elements wrong), not O(1)
    fused_function: str | None = None    # the fused path's entry point for the same op, where it differs
    fused_variant: Callable | None = None  # the same bug in that entry point

    @property
    def name(self) -> str:
        return self.variant.__name__


# The first fault of each op is its classic one (`--inject-fault OP` picks it); the subtle ones follow.
FAULTS: dict[str, Fault] = {f.variant.__name__: f for f in (
    Fault("layernorm", "layernorm_backward", layernorm_backward_no_mean, "LayerNorm backward missing the mean term"),
    Fault("attention", "attention_forward", attention_no_causal_mask, "attention without the causal mask",
          fused_function="attention_forward_flash", fused_variant=attention_flash_no_causal_mask),
    Fault("gelu", "gelu_backward", gelu_backward_off, "GELU's derivative off by a constant (+0.1)"),
    Fault("adamw", "adamw_update", adamw_no_bias_correction, "AdamW without bias correction",
          fused_function="adamw_update_flat", fused_variant=_flat_adamw(adamw_no_bias_correction)),
    Fault("matmul", "matmul_backward", matmul_dbias_first_row, "matmul dbias from the first row only"),
    Fault("encoder", "encoder_backward", encoder_backward_overwrite,
          "encoder backward overwriting instead of adding for repeated tokens"),
    Fault("crossentropy", "crossentropy_backward", crossentropy_backward_no_onehot,
          "cross-entropy backward forgetting to subtract the one-hot",
          fused_function="fused_classifier", fused_variant=fused_classifier_no_onehot),
    Fault("residual", "residual_backward", residual_backward_one_branch, "residual backward dropping one branch"),
    Fault("attention", "attention_backward", attention_backward_scaled, "attention backward 0.1% too large", True,
          fused_function="attention_backward_flash", fused_variant=attention_backward_flash_scaled),
    Fault("attention", "attention_forward", attention_mask_off_by_one,
          "causal mask off by one: t also sees t + 1", True,
          fused_function="attention_forward_flash", fused_variant=attention_flash_mask_off_by_one),
    Fault("gelu", "gelu_forward", gelu_forward_erf, "the erf GELU instead of the tanh approximation", True),
    Fault("matmul", "matmul_backward", matmul_backward_no_dbias, "matmul backward dropping the bias gradient", True),
    Fault("layernorm", "layernorm_backward", layernorm_backward_lost_row,
          "LayerNorm dweight/dbias losing one row's add (a missing atomic)", True),
    Fault("encoder", "encoder_backward", encoder_backward_lost_update,
          "encoder backward losing one add of a repeated token (a missing atomic)", True),
    Fault("residual", "residual_backward", residual_backward_scaled, "residual backward 0.1% too small", True),
    Fault("crossentropy", "crossentropy_backward", crossentropy_backward_scaled,
          "cross-entropy backward 0.1% too large", True,
          fused_function="fused_classifier", fused_variant=fused_classifier_scaled),
    Fault("adamw", "adamw_update", adamw_eps_inside_sqrt, "AdamW with eps inside the square root", True,
          fused_function="adamw_update_flat", fused_variant=_flat_adamw(adamw_eps_inside_sqrt)),
)}


def fault_for(choice: str) -> Fault:
    """The fault named `choice`, or an op's classic fault for an op name; ValueError (listing both) else."""
    if choice in FAULTS:
        return FAULTS[choice]
    by_op = next((f for f in FAULTS.values() if f.op == choice), None)
    if by_op is None:
        ops = sorted({f.op for f in FAULTS.values()})
        raise ValueError(f"unknown fault {choice!r}; choose an op ({', '.join(ops)}) or a fault name "
                         f"(--inject-fault list shows them)")
    return by_op


def describe_faults() -> str:
    """One line per fault: op, name, what is wrong (the classic one of each op first, marked by op)."""
    return "\n".join(f"{f.op:<13} {f.name:<36} {'subtle: ' if f.subtle else ''}{f.doc}" for f in FAULTS.values())

@contextlib.contextmanager
def inject(fault_name: str, model):
    """Within the block, `model` (a KernelGPT2, or a backend with a .model) runs the wrong variant of
    FAULTS[fault_name] in place of its kernel. Yields the Fault. ValueError (listing the choices) for an
    unknown name."""
    if fault_name not in FAULTS:
        raise ValueError(f"inject: unknown fault {fault_name!r}; choose from {', '.join(FAULTS)}")
    fault = FAULTS[fault_name]
    model = getattr(model, "model", model)
    function, variant = swap_for(fault, model.calls)
    kernels = model.kernels
    original = getattr(kernels, function)
    setattr(kernels, function, variant)
    try:
        yield fault
    finally:
        setattr(kernels, function, original)


def swap_for(fault: Fault, calls) -> tuple[str, Callable]:
    """(entry point, wrong variant) that puts `fault` into a model whose step calls the entry points `calls`
    (KernelGPT2.calls): its own, or on the fused path its fused counterpart. ValueError, one line, when the
    path calls neither (the fault could not show: training would "pass" with nothing broken)."""
    if fault.function in calls:
        return fault.function, fault.variant
    if fault.fused_function in calls:
        return fault.fused_function, fault.fused_variant
    raise ValueError(f"fault {fault.name} breaks {fault.function}, which the fused path (fused=True) does not "
                     f"call and has no counterpart of: choose another fault, or train on the per-op path (--no-fused)")


def kernels_with(fault: Fault, fused: bool = False, device: str = "cpu"):
    """The default kernels with `fault`'s variant in place of its kernel, for KernelGPT2(..., kernels=...,
    fused=fused, device=device): on the fused path, in place of the fused counterpart (swap_for)."""
    from .kernel_model import Kernels, entry_points
    function, variant = swap_for(fault, entry_points(fused, device))
    return Kernels(**{function: variant})
