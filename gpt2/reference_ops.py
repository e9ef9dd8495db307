"""GPT-2's forward written out op by op, recording every activation under the kernel model's names.

The reference module (model.py) computes the same numbers in nanoGPT's shape; this spells the forward out
in the kernel model's ops (encoder, layernorm with its mean and rstd, matmul, attention with its softmax
cache, ...) and keeps every intermediate, so live parity (parity.py) can compare tensor by tensor and, after
autograd's backward, gradient by gradient. Runs in whatever dtype and device the module is in.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .buffers import LAYER_ACT_NAMES
from gpt2lab.kernels.layernorm import EPS

from .model import GPT2


def layernorm(x, weight, bias):
    """x: (B, T, C) -> (out (B, T, C), mean (B, T), rstd (B, T)), the kernel's cache written out."""
    mean = x.mean(-1)
    xc = x - mean[..., None]
    rstd = (xc.pow(2).mean(-1) + EPS).rsqrt()
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
    acts = {name: [] for name in LAYER_ACT_NAMES}

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
