"""Lesson 5's data: one whole transformer block, forward and backward by hand with the kernels, checked against
torch autograd gradient by gradient.

The block (pre-LN GPT-2), llm.c order, with what each backward needs cached:

    ln1   = layernorm(x)             cache mean1, rstd1         (B, T, C)
    qkv   = ln1 @ Wqkv.T + bqkv                                 (B, T, 3C)
    atty  = attention(qkv)           cache att (softmax)        (B, T, C), att (B, NH, T, T)
    res2  = x + atty @ Wproj.T + bproj                          (B, T, C)
    ln2   = layernorm(res2)          cache mean2, rstd2         (B, T, C)
    fch   = ln2 @ Wfc.T + bfc                                   (B, T, 4C)
    fchg  = gelu(fch)                                           (B, T, 4C)
    out   = res2 + fchg @ Wfcproj.T + bfcproj                   (B, T, C)

Backward runs the same list bottom to top; every backward *accumulates* (+=) into zeroed buffers, so the two
paths into x and into res2 (the residual and the branch) simply add up.

Each op comes from `gpt2lab.kernels.<op>` (numba) when that module exists; until then a plain numpy version
with the very same signature stands in (`block_ops()` says which is which).
"""
from __future__ import annotations

import importlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from gpt2lab.kernels.layernorm import EPS

from .check import cmp

# Parameter names inside one block, as in the reference GPT2 (transformer.h.{i}.<name>).
PARAM_NAMES = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
               "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
               "mlp.c_proj.weight", "mlp.c_proj.bias")
# Activations in forward order (the names every gradient is compared under, as "d" + name).
ACT_NAMES = ("ln1", "qkv", "atty", "attproj", "res2", "ln2", "fch", "fchg", "fcproj", "out")


# ---------------------------------------------------------------------------------------------------------
# numpy stand-ins with the kernel contract's signatures (caller allocates; backward accumulates)
# ---------------------------------------------------------------------------------------------------------

def np_layernorm_forward(out, mean, rstd, inp, weight, bias):
    mean[...] = inp.mean(-1)
    rstd[...] = 1.0 / np.sqrt(((inp - mean[..., None]) ** 2).mean(-1) + EPS)
    out[...] = (inp - mean[..., None]) * rstd[..., None] * weight + bias


def np_layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd):
    norm = (inp - mean[..., None]) * rstd[..., None]
    dnorm = dout * weight
    dbias += dout.reshape(-1, dout.shape[-1]).sum(0)
    dweight += (dout * norm).reshape(-1, dout.shape[-1]).sum(0)
    # dx = rstd (dnorm - mean(dnorm) - norm * mean(dnorm * norm)): the two means undo the centring and scaling
    dinp += rstd[..., None] * (dnorm - dnorm.mean(-1, keepdims=True) - norm * (dnorm * norm).mean(-1, keepdims=True))


def np_matmul_forward(out, inp, weight, bias):
    out[...] = inp @ weight.T + (0 if bias is None else bias)


def np_matmul_backward(dinp, dweight, dbias, dout, inp, weight):
    dinp += dout @ weight
    dweight += dout.reshape(-1, dout.shape[-1]).T @ inp.reshape(-1, inp.shape[-1])
    if dbias is not None:
        dbias += dout.reshape(-1, dout.shape[-1]).sum(0)


def _heads(qkv, n_head):
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (qkv[..., i * C:(i + 1) * C].reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)
               for i in range(3))
    return q, k, v  # each (B, NH, T, hs)


def np_attention_forward(out, att, inp, n_head):
    B, T, C3 = inp.shape
    q, k, v = _heads(inp, n_head)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    scores = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, scores)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    att[...] = scores / scores.sum(-1, keepdims=True)
    out[...] = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)


def np_attention_backward(dinp, dout, inp, att, n_head):
    B, T, C3 = inp.shape
    C = C3 // 3
    q, k, v = _heads(inp, n_head)
    dy = dout.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)
    datt = dy @ v.transpose(0, 1, 3, 2)
    dv = att.transpose(0, 1, 3, 2) @ dy
    dpre = att * (datt - (datt * att).sum(-1, keepdims=True))  # softmax backward, row by row
    dpre /= math.sqrt(q.shape[-1])
    dq, dk = dpre @ k, dpre.transpose(0, 1, 3, 2) @ q
    for i, d in enumerate((dq, dk, dv)):
        dinp[..., i * C:(i + 1) * C] += d.transpose(0, 2, 1, 3).reshape(B, T, C)


def np_gelu_forward(out, inp):
    out[...] = 0.5 * inp * (1 + np.tanh(math.sqrt(2 / math.pi) * (inp + 0.044715 * inp ** 3)))


def np_gelu_backward(dinp, inp, dout):
    s = math.sqrt(2 / math.pi)
    t = np.tanh(s * (inp + 0.044715 * inp ** 3))
    dinp += (0.5 * (1 + t) + 0.5 * inp * (1 - t * t) * s * (1 + 3 * 0.044715 * inp ** 2)) * dout


def np_residual_forward(out, inp1, inp2):
    out[...] = inp1 + inp2


def np_residual_backward(dinp1, dinp2, dout):
    dinp1 += dout
    dinp2 += dout


def block_ops() -> dict:
    """{op: (forward, backward, "kernel" | "numpy")} for the block's five ops: the numba kernel where it exists."""
    ops = {}
    for op in ("layernorm", "matmul", "attention", "gelu", "residual"):
        fallback = (globals()[f"np_{op}_forward"], globals()[f"np_{op}_backward"], "numpy")
        try:
            mod = importlib.import_module(f"gpt2lab.kernels.{op}")
            ops[op] = (getattr(mod, f"{op}_forward"), getattr(mod, f"{op}_backward"), "kernel")
        except (ImportError, AttributeError):
            ops[op] = fallback
    return ops


# ---------------------------------------------------------------------------------------------------------
# the block, forward and backward
# ---------------------------------------------------------------------------------------------------------

def block_params(model, layer: int = 0) -> dict[str, np.ndarray]:
    """The 12 parameters of block `layer` of a GPT2, as float32 numpy, under PARAM_NAMES."""
    sd = model.transformer.h[layer].state_dict()
    return {n: sd[n].detach().cpu().numpy().astype(np.float32).copy() for n in PARAM_NAMES}


def random_block_params(C: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random parameters for one block of width C: LN weights near 1, small biases, matrices with std 1/sqrt(fan_in)
    (so activations stay of order 1 and every gradient is of a size float32 can check)."""
    rng = np.random.default_rng(seed)
    shapes = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (3 * C, C), "attn.c_attn.bias": (3 * C,),
              "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,), "ln_2.weight": (C,), "ln_2.bias": (C,),
              "mlp.c_fc.weight": (4 * C, C), "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (C, 4 * C),
              "mlp.c_proj.bias": (C,)}
    p = {n: (rng.standard_normal(s) * (0.2 if n.endswith("bias") or "ln" in n else 1 / math.sqrt(s[-1])))
         for n, s in shapes.items()}
    p["ln_1.weight"] += 1.0
    p["ln_2.weight"] += 1.0
    return {n: v.astype(np.float32) for n, v in p.items()}


def block_forward(x: np.ndarray, params: dict, n_head: int, ops: dict | None = None) -> dict:
    """Forward one block. x: (B, T, C) float32. Returns the cache: every activation in ACT_NAMES plus
    mean1, rstd1 (B, T), att (B, NH, T, T), mean2, rstd2 (B, T) and x itself."""
    ops = ops or block_ops()
    p = params
    B, T, C = x.shape
    a = {"x": x}
    e = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731 (the caller allocates, as in llm.c)
    a.update(ln1=e(B, T, C), mean1=e(B, T), rstd1=e(B, T), qkv=e(B, T, 3 * C), atty=e(B, T, C),
             att=e(B, n_head, T, T), attproj=e(B, T, C), res2=e(B, T, C), ln2=e(B, T, C), mean2=e(B, T),
             rstd2=e(B, T), fch=e(B, T, 4 * C), fchg=e(B, T, 4 * C), fcproj=e(B, T, C), out=e(B, T, C))
    ops["layernorm"][0](a["ln1"], a["mean1"], a["rstd1"], x, p["ln_1.weight"], p["ln_1.bias"])
    ops["matmul"][0](a["qkv"], a["ln1"], p["attn.c_attn.weight"], p["attn.c_attn.bias"])
    ops["attention"][0](a["atty"], a["att"], a["qkv"], n_head)
    ops["matmul"][0](a["attproj"], a["atty"], p["attn.c_proj.weight"], p["attn.c_proj.bias"])
    ops["residual"][0](a["res2"], x, a["attproj"])
    ops["layernorm"][0](a["ln2"], a["mean2"], a["rstd2"], a["res2"], p["ln_2.weight"], p["ln_2.bias"])
    ops["matmul"][0](a["fch"], a["ln2"], p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])
    ops["gelu"][0](a["fchg"], a["fch"])
    ops["matmul"][0](a["fcproj"], a["fchg"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
    ops["residual"][0](a["out"], a["res2"], a["fcproj"])
    return a


def block_backward(dout: np.ndarray, cache: dict, params: dict, n_head: int, ops: dict | None = None) -> dict:
    """Backward one block from dout (B, T, C) = dL/dout. Returns {"d" + name: gradient} for x, every activation
    in ACT_NAMES and every parameter (e.g. "dattn.c_attn.weight"), each the shape of what it is the gradient of."""
    ops = ops or block_ops()
    a, p = cache, params
    g = {"d" + n: np.zeros_like(a[n]) for n in ("x",) + ACT_NAMES}
    g.update({"d" + n: np.zeros_like(v) for n, v in p.items()})
    g["dout"][...] = dout
    ops["residual"][1](g["dres2"], g["dfcproj"], g["dout"])
    ops["matmul"][1](g["dfchg"], g["dmlp.c_proj.weight"], g["dmlp.c_proj.bias"], g["dfcproj"], a["fchg"],
                     p["mlp.c_proj.weight"])
    ops["gelu"][1](g["dfch"], a["fch"], g["dfchg"])
    ops["matmul"][1](g["dln2"], g["dmlp.c_fc.weight"], g["dmlp.c_fc.bias"], g["dfch"], a["ln2"], p["mlp.c_fc.weight"])
    ops["layernorm"][1](g["dres2"], g["dln_2.weight"], g["dln_2.bias"], g["dln2"], a["res2"], p["ln_2.weight"],
                        a["mean2"], a["rstd2"])
    ops["residual"][1](g["dx"], g["dattproj"], g["dres2"])
    ops["matmul"][1](g["datty"], g["dattn.c_proj.weight"], g["dattn.c_proj.bias"], g["dattproj"], a["atty"],
                     p["attn.c_proj.weight"])
    ops["attention"][1](g["dqkv"], g["datty"], a["qkv"], a["att"], n_head)
    ops["matmul"][1](g["dln1"], g["dattn.c_attn.weight"], g["dattn.c_attn.bias"], g["dqkv"], a["ln1"],
                     p["attn.c_attn.weight"])
    ops["layernorm"][1](g["dx"], g["dln_1.weight"], g["dln_1.bias"], g["dln1"], a["x"], p["ln_1.weight"],
                        a["mean1"], a["rstd1"])
    return g


# ---------------------------------------------------------------------------------------------------------
# the same block in torch, every intermediate kept so autograd can hand back every gradient
# ---------------------------------------------------------------------------------------------------------

def block_reference(x: np.ndarray, params: dict, n_head: int, dout: np.ndarray) -> dict:
    """Torch autograd of the block in float64: {name: value} for ACT_NAMES and {"d" + name: grad} for x, every
    activation and every parameter, from backpropagating dout. Written op by op like gpt2.model.Block."""
    t = {n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in params.items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    B, T, C = x.shape
    acts = {}

    def keep(name, v):
        v.retain_grad()
        acts[name] = v
        return v

    ln1 = keep("ln1", F.layer_norm(xt, (C,), t["ln_1.weight"], t["ln_1.bias"], EPS))
    qkv = keep("qkv", F.linear(ln1, t["attn.c_attn.weight"], t["attn.c_attn.bias"]))
    q, k, v = (u.view(B, T, n_head, C // n_head).transpose(1, 2) for u in qkv.split(C, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    atty = keep("atty", y.transpose(1, 2).reshape(B, T, C))
    attproj = keep("attproj", F.linear(atty, t["attn.c_proj.weight"], t["attn.c_proj.bias"]))
    res2 = keep("res2", xt + attproj)
    ln2 = keep("ln2", F.layer_norm(res2, (C,), t["ln_2.weight"], t["ln_2.bias"], EPS))
    fch = keep("fch", F.linear(ln2, t["mlp.c_fc.weight"], t["mlp.c_fc.bias"]))
    fchg = keep("fchg", F.gelu(fch, approximate="tanh"))
    fcproj = keep("fcproj", F.linear(fchg, t["mlp.c_proj.weight"], t["mlp.c_proj.bias"]))
    out = keep("out", res2 + fcproj)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    res = {n: v.detach().numpy() for n, v in acts.items()}
    res.update({"d" + n: v.grad.numpy() for n, v in acts.items()})
    res.update({"d" + n: v.grad.numpy() for n, v in t.items()})
    res["dx"] = xt.grad.numpy()
    return res


def gradient_names() -> list[str]:
    """Every gradient block_backward returns, in the order backward produces them (out first, x last)."""
    back = {"ln_1": 8, "attn.c_attn": 7, "attn.c_proj": 5, "ln_2": 3, "mlp.c_fc": 2, "mlp.c_proj": 1}
    params = sorted(PARAM_NAMES, key=lambda n: back[n.rsplit(".", 1)[0]])
    return ["d" + n for n in reversed(ACT_NAMES)] + ["d" + n for n in params] + ["dx"]


def check_block(x: np.ndarray, params: dict, n_head: int, dout: np.ndarray, ops: dict | None = None,
                quiet: bool = False) -> dict[str, bool]:
    """Forward + backward by hand, then torch autograd of the same block; cmp() every gradient. Returns
    {"d" + name: close}."""
    cache = block_forward(x, params, n_head, ops)
    grads = block_backward(dout, cache, params, n_head, ops)
    ref = block_reference(x, params, n_head, dout)
    ok = {"out": cmp("out", cache["out"], ref["out"], quiet=quiet)}
    for name in gradient_names():
        ok[name] = cmp(name, grads[name], ref[name], quiet=quiet)
    return ok


# ---------------------------------------------------------------------------------------------------------
# a picture: where the gradient goes, token by token
# ---------------------------------------------------------------------------------------------------------

FLOW_NAMES = ("dout", "dfcproj", "dfch", "dln2", "dres2", "datty", "dqkv", "dln1", "dx")


def token_grad_norms(grads: dict, names=FLOW_NAMES, b: int = 0) -> np.ndarray:
    """‖d loss / d activation‖ at every token of batch row b, for each gradient in `names`: (len(names), T)."""
    return np.stack([np.linalg.norm(grads[n][b], axis=-1) for n in names])


def token_grad_figure(grads: dict, ids, labels, names=FLOW_NAMES):
    """Heatmap of token_grad_norms: rows run backward through the block (dout at the top, dx at the bottom),
    columns are the tokens in their colours. Gradients in the backward colour map, log scale. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from .palette import BACKWARD_CMAP, shape_title, token_color

    norms = token_grad_norms(grads, names)
    fig, ax = plt.subplots(figsize=(0.55 * norms.shape[1] + 2.5, 0.32 * len(names) + 1.6))
    # log colours: the gradient grows ~15x through each layernorm (its backward multiplies by rstd), and a
    # linear scale would show only the rows after them
    im = ax.imshow(norms, cmap=BACKWARD_CMAP, aspect="auto", interpolation="nearest",
                   norm=LogNorm(vmin=max(norms.min(), norms.max() * 1e-4), vmax=norms.max()))
    ax.set_yticks(range(len(names)), names, fontfamily="monospace")
    ax.set_xticks(range(len(ids)), labels, rotation=60, fontfamily="monospace")
    for tick, i in zip(ax.get_xticklabels(), ids):
        tick.set_color(token_color(i))
        tick.set_fontweight("bold")
    ax.set_title(shape_title("‖grad‖ per token", norms.shape) + "  backward: top to bottom", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
