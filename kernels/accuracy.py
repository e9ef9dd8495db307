"""Long reductions, measured: each kernel's error against float64, next to PyTorch float32's.

A float32 sum of K terms added one by one into one register rounds K times, and once the running sum is
large each rounding costs more: the error grows ~K (~sqrt(K) for random signs). PyTorch's float32 kernels
(BLAS's blocked dot products, its cascade `sum`) grow ~log K. GPT-2 has such sums: the lm_head's dinp over
OC = 50257, dweight and dbias over N = B*T rows, softmax over V = 50257, layernorm's dweight and dbias over
N, the embedding gradients over every repeat of a token. Each probe here runs one of them with every other
size tiny (so the simulator runs it in seconds) and reports three errors, each the max abs difference
from the float64 result of the same float32 inputs:

    ours       the kernel (per CUDA version, or the CPU kernel)
    torch32    the same op in PyTorch float32 (on the CPU; on the GPU for --device cuda)
    pairwise32 (simulator only) PyTorch float32's `sum` of the same float32 terms on the CPU, a cascade
               sum. Where PyTorch's CPU kernel is itself a running sum (layernorm's dweight, the
               embedding backward), this stands for its GPU kernels, which are not.

A kernel is "as accurate as PyTorch" by the verification rule (`check.judge`) with a stricter K: ours <= K x
max(PyTorch float32's error, one float32 rounding of the largest value); ratio = ours / that. PyTorch float32 is measured where
the kernel runs: on the CPU for the @njit kernels, on the GPU for a real GPU (TF32 off); in the simulator,
which has no PyTorch of its own, the yardstick is min(torch32 on the CPU, pairwise32), standing in for
PyTorch's GPU kernels.

    NUMBA_ENABLE_CUDASIM=1 python -m gpt2lab.kernels.accuracy --device cudasim   (tiny, seconds each)
    python -m gpt2lab.kernels.accuracy --device cuda                             (a real GPU, GPT-2 lengths)
    python -m gpt2lab.kernels.accuracy --device cpu                              (the @njit kernels)
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .check import judge

K = 4.0             # judge's k for a probe: a long sum must be this close to PyTorch, 4x stricter than check.K
DEVICES = ("cudasim", "cuda", "cpu")


@dataclass
class Probe:
    """One long reduction. sizes: device -> sizes; versions: device -> kernel versions, naive first."""
    name: str
    summed: str                                   # what is summed, for the table
    sizes: dict
    versions: dict
    make_inputs: Callable[[dict, np.random.Generator], dict]
    run: Callable[[dict, str], dict]              # (inputs, version) -> {tensor: np.ndarray}
    torch_op: Callable[[dict, object], dict]      # (inputs, torch dtype) -> {tensor: np.ndarray}
    pairwise32: Callable[[dict], dict] = lambda inputs: {}


# Where the PyTorch side runs: the CPU, or the GPU for --device cuda (set by measure()).
_TORCH_DEVICE = ["cpu"]


def _t(a, dtype):
    import torch
    return torch.from_numpy(a).to(_TORCH_DEVICE[0], dtype)


def _np(t):
    return t.detach().cpu().numpy()


def _sum32(terms, dim):
    """PyTorch float32's sum of float32 terms along `dim`, on the CPU (a cascade sum)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(terms, dtype=np.float32)).sum(dim).numpy()


def _on_device(launch, args: dict, outs) -> dict:
    from ._cuda import run_on_device
    return run_on_device(launch, args, outs)


# ---------------------------------------------------------------- matmul
def _matmul_inputs(s, rng):
    N, C, OC = s["N"], s["C"], s["OC"]
    return {"dout": rng.standard_normal((N, OC), dtype=np.float32),
            "inp": rng.standard_normal((N, C), dtype=np.float32),
            "weight": (rng.standard_normal((OC, C)) / np.sqrt(C)).astype(np.float32)}


def _matmul_run(tensor):
    """Runs only the kernel that computes `tensor` (the others would cost the simulator minutes)."""
    def run(inputs, version):
        from . import matmul as mm
        dout, inp, weight = inputs["dout"], inputs["inp"], inputs["weight"]
        (N, OC), C = dout.shape, inp.shape[1]
        out = {"dinp": np.zeros((N, C), np.float32), "dweight": np.zeros((OC, C), np.float32),
               "dbias": np.zeros(OC, np.float32)}
        if version in mm.CPU_VERSIONS:
            mm.matmul_backward(out["dinp"][None], out["dweight"], out["dbias"], dout[None], inp[None], weight,
                               version=version)
            return {tensor: out[tensor]}
        dinp_fn, dweight_fn, dbias_fn = mm.backward_launchers(version)
        if tensor == "dinp":
            launch, args = dinp_fn, {"dinp": out["dinp"], "dout": dout, "weight": weight}
        elif tensor == "dweight":
            launch, args = dweight_fn, {"dweight": out["dweight"], "dout": dout, "inp": inp}
        else:
            launch, args = dbias_fn, {"dbias": out["dbias"], "dout": dout}
        return _on_device(lambda **a: launch(**a), args, [tensor])
    return run


def _matmul_torch(tensor):
    def op(inputs, dtype):
        dout, inp, weight = (_t(inputs[k], dtype) for k in ("dout", "inp", "weight"))
        # what F.linear's autograd computes: dinp = dout @ weight, dweight = dout^T @ inp, dbias = sum
        value = {"dinp": lambda: dout @ weight, "dweight": lambda: dout.T @ inp,
                 "dbias": lambda: dout.sum(0)}[tensor]()
        return {tensor: _np(value)}
    return op


def _matmul_pairwise(tensor):
    def op(inputs):
        dout, inp, weight = inputs["dout"], inputs["inp"], inputs["weight"]
        if tensor == "dinp":    # (N, C, OC) products, summed over OC
            return {"dinp": _sum32(dout[:, None, :] * weight.T[None, :, :], 2)}
        if tensor == "dweight":  # (OC, C, N) products, summed over N
            return {"dweight": _sum32(dout.T[:, None, :] * inp.T[None, :, :], 2)}
        return {"dbias": _sum32(dout.T, 1)}
    return op


def _matmul_probe(tensor, summed, sizes):
    return Probe(f"matmul.{tensor}", summed, sizes,
                 # in the simulator the naive v1 and the default v5 (~20-25 s a probe there, a whole 16 x 16 block of
                 # simulated threads for a 2 x 3 output); v3, v4 when asked (--version v3)
                 {"cudasim": ("v1", "v5"), "cuda": ("v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "cublas"),
                  "cpu": ("blas",)},
                 _matmul_inputs, _matmul_run(tensor), _matmul_torch(tensor), _matmul_pairwise(tensor))


# ---------------------------------------------------------------- crossentropy
def _ce_inputs(s, rng):
    N, V = s["N"], s["V"]
    return {"logits": (rng.standard_normal((1, N, V)) * 3).astype(np.float32),
            "targets": rng.integers(0, V, (1, N)).astype(np.int32)}


def _ce_run(inputs, version):
    from .crossentropy import crossentropy_forward
    logits, targets = inputs["logits"], inputs["targets"]
    args = {"losses": np.zeros(targets.shape, np.float32), "probs": np.zeros_like(logits),
            "logits": logits, "targets": targets}
    if version == "loops":
        crossentropy_forward(**args, version=version)
        return {"losses": args["losses"], "probs": args["probs"]}
    if version == "fused":   # the fused classifier, asked to write probs too (its dlogits are probs - onehot)
        from .crossentropy import fused_classifier
        args.update(dlogits=np.zeros_like(logits), dlosses=np.ones(targets.shape, np.float32))
        return _on_device(lambda **a: fused_classifier(**a, write_probs=True), args, ["losses", "probs"])
    return _on_device(lambda **a: crossentropy_forward(**a, version=version), args, ["losses", "probs"])


def _ce_torch(inputs, dtype):
    import torch
    import torch.nn.functional as F
    logits = _t(inputs["logits"][0], dtype)
    targets = _t(inputs["targets"][0], torch.long)
    return {"losses": _np(F.cross_entropy(logits, targets, reduction="none"))[None],
            "probs": _np(F.softmax(logits, -1))[None]}


# ---------------------------------------------------------------- layernorm
def _ln_inputs(s, rng):
    from .layernorm import EPS
    N, C = s["N"], s["C"]
    inp = (1 + 2 * rng.standard_normal((N, C))).astype(np.float32)
    x = inp.astype(np.float64)
    mean = x.mean(1)
    return {"inp": inp, "dout": rng.standard_normal((N, C), dtype=np.float32),
            "weight": (1 + 0.5 * rng.standard_normal(C)).astype(np.float32),
            "mean": mean.astype(np.float32),  # what the forward caches, rounded to float32
            "rstd": (1 / np.sqrt(((x - mean[:, None]) ** 2).mean(1) + EPS)).astype(np.float32)}


def _ln_run(inputs, version):
    from . import layernorm as ln
    inp, dout, weight, mean, rstd = (inputs[k] for k in ("inp", "dout", "weight", "mean", "rstd"))
    N, C = inp.shape
    grads = {"dweight": np.zeros(C, np.float32), "dbias": np.zeros(C, np.float32)}
    if version in ("loops", "v2", "v3"):  # the whole backward through the entry point
        args = {"dinp": np.zeros((1, N, C), np.float32), **grads, "dout": dout[None], "inp": inp[None],
                "weight": weight, "mean": mean[None], "rstd": rstd[None]}
        if version == "loops":
            ln.layernorm_backward(**args, version=version)
            return {k: args[k] for k in grads}
        return _on_device(lambda **a: ln.layernorm_backward(**a, version=version), args, list(grads))
    # v1 and v4: their dweight/dbias kernel alone (the per-row dinp kernels are slow to simulate at N rows)
    if version == "v1":
        grid, block = (C + 127) // 128, 128
        kernel = ln.layernorm_backward_params_kernel_v1
    else:
        grid, block = (C + ln.PARAM_COLS - 1) // ln.PARAM_COLS, (ln.PARAM_COLS, ln.PARAM_LANES)
        kernel = ln.layernorm_backward_params_kernel_v4
    args = {**grads, "dout": dout, "inp": inp, "mean": mean, "rstd": rstd}
    def launch(dweight, dbias, dout, inp, mean, rstd):  # a kernel takes its arguments by position
        kernel[grid, block](dweight, dbias, dout, inp, mean, rstd)
    return _on_device(launch, args, list(grads))


def _ln_torch(inputs, dtype):
    import torch.nn.functional as F

    from .layernorm import EPS
    inp, dout, weight = (_t(inputs[k], dtype) for k in ("inp", "dout", "weight"))
    weight.requires_grad_(True)
    bias = weight.new_zeros(weight.shape, requires_grad=True)
    F.layer_norm(inp, (inp.shape[1],), weight, bias, eps=EPS).backward(dout)
    return {"dweight": _np(weight.grad), "dbias": _np(bias.grad)}


def _ln_pairwise(inputs):
    inp, dout, mean, rstd = (inputs[k] for k in ("inp", "dout", "mean", "rstd"))
    norm = (inp - mean[:, None]) * rstd[:, None]  # float32, as the kernels form it
    return {"dweight": _sum32((norm * dout).T, 1), "dbias": _sum32(dout.T, 1)}


# ---------------------------------------------------------------- encoder
def _enc_inputs(s, rng):
    B, T, C, V = s["B"], s["T"], s["C"], s["V"]
    # a few distinct tokens, each repeated ~B*T/tokens times: long scatter-add sums into dwte
    return {"inp": rng.integers(0, s["tokens"], (B, T)).astype(np.int32), "V": V,
            "dout": rng.standard_normal((B, T, C), dtype=np.float32)}


def _enc_run(inputs, version):
    from .encoder import encoder_backward
    inp, dout, V = inputs["inp"], inputs["dout"], inputs["V"]
    (B, T, C) = dout.shape
    args = {"dwte": np.zeros((V, C), np.float32), "dwpe": np.zeros((T, C), np.float32), "dout": dout,
            "inp": inp}
    if version == "loops":
        encoder_backward(**args, version=version)
        return {"dwte": args["dwte"], "dwpe": args["dwpe"]}
    return _on_device(lambda **a: encoder_backward(**a, version=version), args, ["dwte", "dwpe"])


def _enc_torch(inputs, dtype):
    import torch
    inp, V = _t(inputs["inp"], torch.long), inputs["V"]
    dout = _t(inputs["dout"], dtype)
    T, C = dout.shape[1:]
    wte = torch.zeros((V, C), dtype=dtype, device=dout.device, requires_grad=True)
    wpe = torch.zeros((T, C), dtype=dtype, device=dout.device, requires_grad=True)
    (wte[inp] + wpe).backward(dout)  # the verify reference's lookups
    return {"dwte": _np(wte.grad), "dwpe": _np(wpe.grad)}


def _enc_pairwise(inputs):
    inp, dout, V = inputs["inp"], inputs["dout"], inputs["V"]
    C = dout.shape[2]
    dwte = np.zeros((V, C), np.float32)
    rows = dout.reshape(-1, C)
    for token in np.unique(inp):
        dwte[token] = _sum32(rows[inp.reshape(-1) == token].T, 1)
    return {"dwte": dwte, "dwpe": _sum32(np.moveaxis(dout, 0, 2), 2)}


# ---------------------------------------------------------------- attention
def _attn_inputs(s, rng):
    B, T, NH, hs = s["B"], s["T"], s["NH"], s["hs"]
    C = NH * hs
    inp = rng.standard_normal((B, T, 3 * C), dtype=np.float32)
    q, k = (inp[..., o:o + C].reshape(B, T, NH, hs).transpose(0, 2, 1, 3).astype(np.float64) for o in (0, C))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    scores[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] = -np.inf
    mx = scores.max(-1, keepdims=True)
    att = np.exp(scores - mx)
    lse = mx[..., 0] + np.log(att.sum(-1))
    att /= att.sum(-1, keepdims=True)
    v = inp[..., 2 * C:].reshape(B, T, NH, hs).transpose(0, 2, 1, 3).astype(np.float64)
    out = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    # the forward's caches, exact then rounded to float32: att for v1-v3, out and lse for the flash backward
    return {"inp": inp, "dout": rng.standard_normal((B, T, C), dtype=np.float32), "n_head": NH,
            "att": att.astype(np.float32), "out": out.astype(np.float32), "lse": lse.astype(np.float32)}


def _split_qkv(dinp):
    C = dinp.shape[-1] // 3
    return {"dq": dinp[..., :C], "dk": dinp[..., C:2 * C], "dv": dinp[..., 2 * C:]}


def _attn_run(inputs, version):
    from .attention import FLASH_CPU_VERSIONS, FLASH_CUDA_VERSIONS, attention_backward, attention_backward_flash
    if version in (*FLASH_CUDA_VERSIONS, *FLASH_CPU_VERSIONS):   # the flash backward: from out and lse
        args = {"dinp": np.zeros_like(inputs["inp"]), "dout": inputs["dout"], "inp": inputs["inp"],
                "out": inputs["out"], "lse": inputs["lse"], "n_head": inputs["n_head"]}
        if version == "flash":
            attention_backward_flash(**args)
            return _split_qkv(args["dinp"])
        backward = functools.partial(attention_backward_flash, version=version)
        return _split_qkv(_on_device(backward, args, ["dinp"])["dinp"])
    args = {"dinp": np.zeros_like(inputs["inp"]), "dout": inputs["dout"], "inp": inputs["inp"],
            "att": inputs["att"], "n_head": inputs["n_head"]}
    if version in ("blas", "rows"):  # the two CPU versions
        attention_backward(**args, version=version)
        return _split_qkv(args["dinp"])
    return _split_qkv(_on_device(lambda **a: attention_backward(**a, version=version), args, ["dinp"])["dinp"])


def _attn_torch(inputs, dtype):
    import torch
    inp = _t(inputs["inp"], dtype).requires_grad_(True)
    B, T, C3 = inp.shape
    NH, C = inputs["n_head"], C3 // 3
    q, k, v = (x.reshape(B, T, NH, C // NH).transpose(1, 2) for x in inp.split(C, -1))
    scores = (q @ k.transpose(-2, -1)) / (C // NH) ** 0.5
    mask = torch.ones(T, T, dtype=torch.bool, device=inp.device).triu(1)
    y = (scores.masked_fill(mask, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    y.backward(_t(inputs["dout"], dtype))
    return {k: _np(v) for k, v in _split_qkv(inp.grad).items()}


# ---------------------------------------------------------------- the probes
_CPU_CUDA = ("cuda", "cpu")
PROBES = {p.name: p for p in (
    _matmul_probe("dinp", "OC products", {"cudasim": {"N": 2, "C": 3, "OC": 2048},
                                         **{d: {"N": 64, "C": 768, "OC": 50257} for d in _CPU_CUDA}}),
    _matmul_probe("dweight", "N = B*T products", {"cudasim": {"N": 2048, "C": 2, "OC": 3},
                                                  **{d: {"N": 8192, "C": 768, "OC": 768} for d in _CPU_CUDA}}),
    _matmul_probe("dbias", "N = B*T rows", {"cudasim": {"N": 4096, "C": 2, "OC": 3},
                                            **{d: {"N": 8192, "C": 64, "OC": 768} for d in _CPU_CUDA}}),
    Probe("crossentropy", "V exponentials", {"cudasim": {"N": 1, "V": 50257},
                                            **{d: {"N": 64, "V": 50257} for d in _CPU_CUDA}},
          {"cudasim": ("v1", "v3", "fused"), "cuda": ("v1", "v2", "v3", "fused"), "cpu": ("loops",)},
          _ce_inputs, _ce_run, _ce_torch),
    Probe("layernorm.params", "N = B*T rows", {"cudasim": {"N": 16384, "C": 3},
                                               **{d: {"N": 8192, "C": 768} for d in _CPU_CUDA}},
          {"cudasim": ("v1", "v4"), "cuda": ("v1", "v2", "v3", "v4"), "cpu": ("loops",)},
          _ln_inputs, _ln_run, _ln_torch, _ln_pairwise),
    Probe("encoder", "repeats of a token; B for dwpe",
          {"cudasim": {"B": 2048, "T": 2, "C": 3, "V": 5, "tokens": 2},
           **{d: {"B": 8, "T": 1024, "C": 768, "V": 50257, "tokens": 8} for d in _CPU_CUDA}},
          {"cudasim": ("v2", "v3"), "cuda": ("v1", "v2", "v3"), "cpu": ("loops",)},
          _enc_inputs, _enc_run, _enc_torch, _enc_pairwise),
    Probe("attention", "T keys (dq), T queries (dk, dv)",
          {"cudasim": {"B": 1, "T": 384, "NH": 1, "hs": 2},
           "cuda": {"B": 4, "T": 1024, "NH": 12, "hs": 64}, "cpu": {"B": 1, "T": 1024, "NH": 2, "hs": 64}},
          {"cudasim": ("v2", "v3"), "cuda": ("v1", "v2", "v3", "cublas"), "cpu": ("blas", "rows")},
          _attn_inputs, _attn_run, _attn_torch),
    Probe("attention.flash", "T keys (dq), T queries (dk, dv); att rebuilt from lse",
          {"cudasim": {"B": 1, "T": 384, "NH": 1, "hs": 2},
           "cuda": {"B": 4, "T": 1024, "NH": 12, "hs": 64}, "cpu": {"B": 1, "T": 1024, "NH": 2, "hs": 64}},
          {"cudasim": ("v4",), "cuda": ("v4", "v5", "v6"), "cpu": ("flash",)},  # v5 in the simulator: 100 s
          _attn_inputs, _attn_run, _attn_torch),
)}


def _max_err(value, exact) -> float:
    return float(np.max(np.abs(np.asarray(value, np.float64) - exact))) if exact.size else 0.0


def measure(name: str, device: str, versions=None, seed: int = 0) -> list[dict]:
    """Rows {probe, tensor, device, version, ours, torch32, pairwise32, ratio, ratio_torch32, ok}, one probe.

    The yardstick is PyTorch float32 where it runs: on the CPU for --device cpu; on the GPU for
    --device cuda (TF32 off); for cudasim the better of PyTorch on the CPU and pairwise32, standing in
    for PyTorch's GPU kernels.
    """
    import torch
    probe = PROBES[name]
    inputs = probe.make_inputs(probe.sizes[device], np.random.default_rng(seed))
    exact = probe.torch_op(inputs, torch.float64)  # float64 on the CPU
    if device == "cuda" and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        _TORCH_DEVICE[0] = "cuda"
    try:
        torch32 = probe.torch_op(inputs, torch.float32)
    finally:
        _TORCH_DEVICE[0] = "cpu"
    pairwise = probe.pairwise32(inputs) if device == "cudasim" else {}
    rows = []
    for version in versions or probe.versions[device]:
        ours = probe.run(inputs, version)
        for tensor, ref in exact.items():
            e_torch = _max_err(torch32[tensor], ref)
            e_pair = _max_err(pairwise[tensor], ref) if tensor in pairwise else None
            yardstick = pairwise[tensor] if e_pair is not None and e_pair < e_torch else torch32[tensor]
            v = judge(ours[tensor], yardstick, ref, k=K)
            rows.append({"probe": name, "tensor": tensor, "summed": probe.summed, "device": device,
                         "version": version, "sizes": probe.sizes[device], "ours": v.max_abs, "torch32": e_torch,
                         "pairwise32": e_pair, "ratio": v.ratio,
                         "ratio_torch32": v.max_abs / e_torch if e_torch else float("inf"), "ok": v.ok})
    return rows


def format_rows(rows) -> str:
    """The rows as a table; ratio = ours / the yardstick, and (simulator) ours / torch32 alone."""
    head = (f"{'probe':18} {'tensor':8} {'version':7} {'ours':>9} {'torch32':>9} {'pairwise32':>10} "
            f"{'ratio':>7} {'/torch32':>8}  result")
    lines = [head]
    for r in rows:
        pair = "-" if r["pairwise32"] is None else f"{r['pairwise32']:.2e}"
        lines.append(f"{r['probe']:18} {r['tensor']:8} {r['version']:7} {r['ours']:9.2e} {r['torch32']:9.2e} "
                     f"{pair:>10} {r['ratio']:7.2f} {r['ratio_torch32']:8.2f}  {'OK' if r['ok'] else 'WORSE'}")
    return "\n".join(lines)


if __name__ == "__main__":  # the command-line side is accuracy_cli.py
    from .accuracy_cli import main
    sys.exit(main())
