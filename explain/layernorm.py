"""Lesson 4's data: layer norm on a real row, forward and backward step by step, as plain arrays.

Forward, over the C channels of each row x (the last axis), as in llm.c's doc/layernorm:

    mean = sum(x) / C                      (..., 1)
    xc   = x - mean                        (..., C)   centred
    var  = sum(xc^2) / C                   (..., 1)   biased, as PyTorch
    rstd = 1 / sqrt(var + eps)             (..., 1)   eps = 1e-5 keeps a constant row finite
    norm = xc * rstd                       (..., C)   mean 0, variance 1
    out  = norm * gamma + beta             (..., C)   the learned scale and shift, gamma, beta: (C,)

Backward, given dout. The cache is `mean` and `rstd` (two floats per row): from them and x the backward
rebuilds norm in one pass, without storing a second (..., C) tensor.

    dbeta  = sum over rows of dout                              (C,)
    dgamma = sum over rows of dout * norm                       (C,)
    dnorm  = dout * gamma                                       (..., C)
    dinp   = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))

The two mean terms are the gradient through `mean` (adding a constant to x changes nothing after
normalising) and through `rstd` (scaling x changes nothing after normalising). `backward_long` takes the
long way through every intermediate (drstd, dvar, dxc, dmean), so each step can be checked against autograd.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gpt2lab.kernels.layernorm import EPS

from .palette import RUNNING_EXAMPLE, shape_title

FORWARD_NAMES = ("x", "mean", "xc", "var", "rstd", "norm", "out")
STAGE_COLORS = {"x": "#9ecae1", "norm": "#3182bd", "out": "#08306b"}   # forward blues, light to dark


# ---------------------------------------------------------------------------------------------------------
# a real input: what ln_1 of a layer sees on the running example
# ---------------------------------------------------------------------------------------------------------

def model_layernorm(model, text: str = RUNNING_EXAMPLE, layer: int = 0, which: str = "ln_1") -> dict:
    """What the model's layer norm `which` ("ln_1", "ln_2", or "ln_f" with layer ignored) sees on `text`,
    and its gradients for the next-token loss on the same text. Caught with hooks on one forward and one
    backward pass, so nothing is re-implemented.

    Returns float32 numpy: x, out, dout, dinp (T, C); gamma, beta, dgamma, dbeta (C,); ids (T,).
    """
    from .attention import token_ids
    ids = token_ids(text)
    if len(ids) < 2 or len(ids) > model.config.block_size:
        raise ValueError(f"model_layernorm: the text must be 2..{model.config.block_size} tokens, got {len(ids)}")
    ln = model.transformer.ln_f if which == "ln_f" else getattr(model.transformer.h[layer], which)
    seen = {}
    hooks = [ln.register_forward_hook(lambda m, a, y: seen.update(x=a[0], out=y)),
             ln.register_full_backward_hook(lambda m, gin, gout: seen.update(dinp=gin[0], dout=gout[0]))]
    model.zero_grad(set_to_none=True)
    try:
        idx = torch.as_tensor(ids, dtype=torch.long)[None]
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    f = lambda t: t.detach().float().numpy().reshape(t.shape[-2:] if t.dim() > 1 else t.shape).copy()  # noqa: E731
    res = {k: f(seen[k]) for k in ("x", "out", "dout", "dinp")}
    res |= {"gamma": f(ln.weight), "beta": f(ln.bias), "dgamma": f(ln.weight.grad), "dbeta": f(ln.bias.grad),
            "ids": ids[:-1]}
    model.zero_grad(set_to_none=True)
    return res


# ---------------------------------------------------------------------------------------------------------
# forward and backward, step by step
# ---------------------------------------------------------------------------------------------------------

def forward_steps(x, gamma, beta, eps: float = EPS) -> dict:
    """Every intermediate of the forward on x (..., C): x, mean, xc, var, rstd, norm, out.

    mean, var, rstd keep a trailing axis of 1 so they broadcast against the row.
    """
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + np.float32(eps))
    norm = xc * rstd
    out = norm * gamma + beta
    return {"x": x, "mean": mean, "xc": xc, "var": var, "rstd": rstd, "norm": norm, "out": out}


def _row_sum(a):
    """Sum over every axis but the channels: (..., C) -> (C,)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


def backward_compact(dout, norm, rstd, gamma) -> dict:
    """The backward in llm.c's form, from the cache only (norm is rebuilt from x, mean, rstd).

    dout, norm: (..., C); rstd: (..., 1); gamma: (C,). Returns dbeta, dgamma (C,); dnorm, dinp (..., C);
    the two mean terms: dnorm_mean (..., 1) (through mean) and dnorm_norm_mean (..., 1) (through rstd).
    """
    dnorm = dout * gamma
    dnorm_mean = dnorm.mean(axis=-1, keepdims=True)
    dnorm_norm_mean = (dnorm * norm).mean(axis=-1, keepdims=True)
    dinp = rstd * (dnorm - dnorm_mean - norm * dnorm_norm_mean)
    return {"dbeta": _row_sum(dout), "dgamma": _row_sum(dout * norm), "dnorm": dnorm,
            "dnorm_mean": dnorm_mean, "dnorm_norm_mean": dnorm_norm_mean, "dinp": dinp}


def backward_long(dout, steps: dict, gamma) -> dict:
    """The backward the long way: the chain rule through each forward line, last to first.

    steps: forward_steps' dict. Returns dout, dnorm, dxc (all paths), drstd, dvar, dmean, dx, dgamma,
    dbeta; per-row gradients (drstd, dvar, dmean) are (..., 1).
    """
    C = steps["x"].shape[-1]
    xc, var, rstd, norm = steps["xc"], steps["var"], steps["rstd"], steps["norm"]
    dnorm = dout * gamma                                           # out = norm * gamma + beta
    drstd = (dnorm * xc).sum(axis=-1, keepdims=True)               # norm = xc * rstd: rstd is shared by the row
    dvar = drstd * -0.5 * (var + EPS) ** -1.5                      # rstd = (var + eps)^(-1/2)
    dxc = dnorm * rstd + dvar * 2.0 * xc / C                       # xc feeds norm and var = mean(xc^2)
    dmean = -dxc.sum(axis=-1, keepdims=True)                       # xc = x - mean
    dx = dxc + dmean / C                                           # mean = sum(x) / C
    return {"dout": dout, "dnorm": dnorm, "drstd": drstd, "dvar": dvar, "dxc": dxc, "dmean": dmean,
            "dx": dx, "dgamma": _row_sum(dout * norm), "dbeta": _row_sum(dout)}


def autograd_steps(x, gamma, beta, dout, eps: float = EPS) -> dict:
    """PyTorch's gradients of every forward intermediate (float64, the same lines as forward_steps).

    Returns the forward values under their names and the gradients as d<name>: dx, dmean, dxc, dvar,
    drstd, dnorm, dgamma, dbeta; numpy float64.
    """
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)  # noqa: E731
    x, gamma, beta = t(x), t(gamma), t(beta)
    mean = x.mean(-1, keepdim=True)
    xc = x - mean
    var = (xc ** 2).mean(-1, keepdim=True)
    rstd = (var + eps) ** -0.5
    norm = xc * rstd
    out = norm * gamma + beta
    inner = {"mean": mean, "xc": xc, "var": var, "rstd": rstd, "norm": norm}
    for v in inner.values():
        v.retain_grad()
    out.backward(torch.as_tensor(np.asarray(dout), dtype=torch.float64))
    res = {k: v.detach().numpy() for k, v in inner.items()} | {"out": out.detach().numpy()}
    res |= {f"d{k}": v.grad.numpy() for k, v in inner.items()}
    res |= {"dx": x.grad.numpy(), "dgamma": gamma.grad.numpy(), "dbeta": beta.grad.numpy()}
    return res


def torch_layernorm(x, gamma, beta, dout) -> dict:
    """The reference: F.layer_norm and its autograd gradients (float64). Returns out, dx, dgamma, dbeta."""
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)  # noqa: E731
    x, gamma, beta = t(x), t(gamma), t(beta)
    out = torch.nn.functional.layer_norm(x, (x.shape[-1],), gamma, beta, eps=EPS)
    out.backward(torch.as_tensor(np.asarray(dout), dtype=torch.float64))
    return {"out": out.detach().numpy(), "dx": x.grad.numpy(), "dgamma": gamma.grad.numpy(),
            "dbeta": beta.grad.numpy()}


# ---------------------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------------------

def row_stages(x, gamma, beta) -> dict:
    """A row x (C,) at the three stages drawn: x, norm = (x - mean) * rstd, out = norm * gamma + beta."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"row_stages: x must be one row (C,) with C >= 2, got shape {x.shape}")
    gamma = np.broadcast_to(np.asarray(gamma, dtype=np.float32), x.shape)
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float32), x.shape)
    s = forward_steps(x, gamma, beta)
    return {"x": s["x"], "norm": s["norm"], "out": s["out"]}


def row_distribution_figure(x, gamma, beta, title: str = "row", axes=None, highlight: int | None = None,
                            out_range: tuple | None = None):
    """One row x (C,) as a histogram and a strip of its C values: before normalising (x), after
    (norm: mean 0, std 1) and after the affine map (out = norm * gamma + beta). Each panel prints the
    row's mean and std. `highlight`: a channel marked with a red line in every panel. `out_range`: fixed
    x limits for the out panel (so a change of gamma or beta shows as a move, not as new tick labels).
    """
    import matplotlib.pyplot as plt

    stages = row_stages(x, gamma, beta)
    if axes is None:
        fig, axes = plt.subplots(2, 3, figsize=(9.6, 4.2), gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    fig = axes[0][0].figure
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.4, 0.4, x.shape[-1])
    for col, (name, v) in enumerate(stages.items()):
        hist, strip = axes[0][col], axes[1][col]
        colour = STAGE_COLORS[name]
        hist.hist(v, bins=40, color=colour, alpha=0.9)
        hist.set_title(f"{name}: mean {v.mean():+.3f}, std {v.std():.3f}", fontsize=9)
        strip.scatter(v, jitter, s=6, color=colour)
        strip.set_yticks([])
        strip.set_xlabel(name)
        if highlight is not None:
            for ax in (hist, strip):
                ax.axvline(v[highlight], color="#d62728", lw=1.5)
        if name == "out" and out_range is not None:
            hist.set_xlim(*out_range)
    fig.suptitle(shape_title(title, (f"C={x.shape[-1]}",)), fontsize=10)
    fig.tight_layout()
    return fig


def idea_figure(x_rows, gamma, beta, tokens=None):
    """The picture of the idea: per token, the mean and std of its row before and after layer norm.

    x_rows: (T, C). Before, every token has its own offset and scale; after normalising, every row has mean
    0 and std 1; gamma and beta then give every channel the scale and shift it learned.
    """
    import matplotlib.pyplot as plt

    s = forward_steps(x_rows, gamma, beta)
    T = s["x"].shape[0]
    labels = tokens or [str(t) for t in range(T)]
    # no shared y axis: x is far smaller than norm (std ~0.05 vs 1 at layer 0), and its spread must show
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.2))
    for ax, name in zip(axes, ("x", "norm", "out")):
        v = s[name]
        ax.errorbar(range(T), v.mean(-1), yerr=v.std(-1), fmt="o", color=STAGE_COLORS[name], capsize=3)
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_xticks(range(T))
        ax.set_xticklabels(labels, rotation=60, fontsize=9)
        ax.set_title(f"{name}: mean ± std of each row", fontsize=9)
    fig.suptitle(shape_title("ln_1[layer=0]", (f"T={T}", f"C={s['x'].shape[1]}")), fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# timings
# ---------------------------------------------------------------------------------------------------------

def kernel_timings(B: int = 4, T: int = 64, C: int = 768, reps: int = 5) -> dict:
    """Median seconds of one forward + backward at (B, T, C) on the CPU: our numba kernels vs PyTorch's
    F.layer_norm with autograd, measured in alternating rounds so machine load hits both alike.
    Returns {"numba": s, "torch": s}."""
    from gpt2lab.kernels.bench import Case, _bench_layernorm, side_by_side
    ours, theirs = _bench_layernorm(Case("cpu"), {"B": B, "T": T, "C": C})
    numba_s, torch_s = side_by_side(ours, theirs, reps)
    return {"numba": numba_s, "torch": torch_s}


# ---------------------------------------------------------------------------------------------------------
# watch: gamma and beta over training
# ---------------------------------------------------------------------------------------------------------

@dataclass
class LayerNormFrame:
    """One layer norm at one training step: gamma, beta (C,); x_std (T,) the std of each input row;
    out_row (C,) the output for token t."""
    step: int
    gamma: np.ndarray
    beta: np.ndarray
    x_std: np.ndarray
    out_row: np.ndarray
    name: str


def layernorm_over_training(text: str = RUNNING_EXAMPLE, layer: int = 0, which: str = "ln_1", t: int = 3,
                            checkpoints=None) -> list[LayerNormFrame]:
    """The layer norm `which` of `layer` at every course checkpoint, oldest first.

    checkpoints: [(step, model or path)], default `gpt2lab.gpt2.course_checkpoints()`.
    """
    from gpt2lab.gpt2.course import models_over_training
    frames = []
    for step, model in models_over_training(checkpoints):
        ln = model_layernorm(model, text, layer, which)
        frames.append(LayerNormFrame(step, ln["gamma"], ln["beta"], ln["x"].std(-1), ln["out"][t],
                                     f"{which}[layer={layer}]" if which != "ln_f" else "ln_f"))
    if not frames:
        raise ValueError("layernorm_over_training: no checkpoints; train the course model first")
    return frames


def draw_layernorm_frame(frame: LayerNormFrame, axes, limits: dict) -> None:
    """Histograms of gamma, beta and one output row, and the input rows' std, with fixed axes (`limits`)."""
    panels = (("gamma", frame.gamma, "#3182bd"), ("beta", frame.beta, "#3182bd"),
              ("out[t]", frame.out_row, STAGE_COLORS["out"]))
    for ax, (name, v, colour) in zip(axes, panels):
        ax.clear()
        ax.hist(v, bins=np.linspace(*limits[name], 41), color=colour)
        ax.set_xlim(*limits[name])
        ax.set_title(shape_title(name, (f"C={v.size}",)), fontsize=9)
    ax = axes[3]
    ax.clear()
    ax.bar(range(frame.x_std.size), frame.x_std, color=STAGE_COLORS["x"])
    ax.set_ylim(0, limits["x_std"][1])
    ax.set_xlabel("token t")
    ax.set_title(shape_title("std of each input row", (f"T={frame.x_std.size}",)), fontsize=9)
    axes[0].figure.suptitle(f"{frame.name} at training step {frame.step}", fontsize=10)


def _limits(frames) -> dict:
    def span(vs, pad=0.05):
        lo, hi = min(float(v.min()) for v in vs), max(float(v.max()) for v in vs)
        d = max(hi - lo, 1e-3)
        return lo - pad * d, hi + pad * d
    return {"gamma": span([f.gamma for f in frames]), "beta": span([f.beta for f in frames]),
            "out[t]": span([f.out_row for f in frames]), "x_std": (0, 1.05 * max(f.x_std.max() for f in frames))}


def layernorm_animation(frames: list[LayerNormFrame], interval: int = 700):
    """FuncAnimation over the checkpoints: gamma and beta leave 1 and 0 as the model learns its own scale and
    shift per channel; show with `anim.to_jshtml()`."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    if not frames:
        raise ValueError("layernorm_animation: no frames to show")
    limits = _limits(frames)
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 5.2))
    axes = axes.ravel()
    draw_layernorm_frame(frames[0], axes, limits)
    fig.tight_layout()

    def frame(j):
        draw_layernorm_frame(frames[j], axes, limits)
        return []

    anim = FuncAnimation(fig, frame, frames=len(frames), interval=interval, repeat=True)
    plt.close(fig)   # shown through anim.to_jshtml(), not as a stray static figure
    return anim


__all__ = ["EPS", "FORWARD_NAMES", "model_layernorm", "forward_steps", "backward_compact", "backward_long",
           "autograd_steps", "torch_layernorm", "kernel_timings", "row_stages", "row_distribution_figure",
           "idea_figure",
           "LayerNormFrame", "layernorm_over_training", "draw_layernorm_frame", "layernorm_animation"]
