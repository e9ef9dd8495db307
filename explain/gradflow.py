"""Gradient flow: how big the gradients are, layer by layer, and how that changes over training.

For one batch, `grad_norms(model, x, y)` backpropagates the loss through a GPT2 and measures

    layers  (L, G)  the L2 norm of d loss / d W for each layer and parameter group (GROUPS: ln_1, c_attn, ...,
                    weight and bias together)
    stream  (L+1,)  the norm of d loss / d x_l, the gradient on the residual stream entering block l
                    (and, last, leaving the final block): the signal that reaches the early layers
    wte, wpe        the embedding tables' gradient norms

`gradflow_over_training(checkpoints, x, y)` repeats it for every course checkpoint, and `gradflow_animation`
plays the bars over training. Layers run left to right, as everywhere in the course; gradients are orange.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from .palette import BACKWARD_CMAP, shape_title

GROUPS = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")


@dataclass
class GradFlow:
    """Gradient norms over F frames (checkpoints) of a model with L layers and G = len(GROUPS) groups."""
    steps: np.ndarray    # (F,) optimizer steps of each frame
    loss: np.ndarray     # (F,) loss on the batch
    layers: np.ndarray   # (F, L, G) parameter-gradient norms per layer and group
    stream: np.ndarray   # (F, L + 1) residual-stream gradient norms, entering each block then the output
    wte: np.ndarray      # (F,)
    wpe: np.ndarray      # (F,)


def _stream_forward(model, idx, targets):
    """GPT2.forward written out so the residual stream between blocks is kept: (loss, [x_0 .. x_L])."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.int64)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    B, T = idx.shape
    tr = model.transformer
    x = tr.wte(idx) + tr.wpe(torch.arange(T))
    xs = [x]
    for block in tr.h:
        x = block(x)
        xs.append(x)
    for x_l in xs:
        x_l.retain_grad()  # intermediate tensors drop their .grad unless asked to keep it
    logits = model.lm_head(tr.ln_f(x))
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1)), xs


def stream_grads(model, x, y) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """The residual stream of a GPT2 on one batch and the loss's gradient on it.

    x, y: (B, T) ints. Returns (loss, [x_0 .. x_L], [dL/dx_0 .. dL/dx_L]), each (B, T, C) float32 numpy:
    x_0 = wte[x] + wpe is the embeddings, x_l the output of block l-1. The model's .grad fields are cleared.
    """
    model.zero_grad(set_to_none=True)
    loss, xs = _stream_forward(model, x, y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return (loss.item(), [x_l.detach().numpy().copy() for x_l in xs],
            [x_l.grad.numpy().copy() for x_l in xs])


def grad_norms(model, x, y) -> dict:
    """Norms of every gradient of the loss on one batch. x, y: (B, T) ints (numpy or torch).

    Returns {"loss": float, "layers": (L, G), "stream": (L+1,), "wte": float, "wpe": float}. The model's
    .grad fields are cleared afterwards; its weights are untouched.
    """
    model.zero_grad(set_to_none=True)
    loss, xs = _stream_forward(model, x, y)
    loss.backward()
    L = len(model.transformer.h)
    layers = np.zeros((L, len(GROUPS)))
    for l, block in enumerate(model.transformer.h):
        named = dict(block.named_parameters())
        for g, group in enumerate(GROUPS):
            sq = sum(float(p.grad.pow(2).sum()) for n, p in named.items() if n.rsplit(".", 1)[0] == group)
            layers[l, g] = np.sqrt(sq)
    out = {"loss": loss.item(), "layers": layers,
           "stream": np.array([float(x_l.grad.norm()) for x_l in xs]),
           "wte": float(model.transformer.wte.weight.grad.norm()),
           "wpe": float(model.transformer.wpe.weight.grad.norm())}
    model.zero_grad(set_to_none=True)
    return out


def gradflow_over_training(checkpoints, x, y, load=None) -> GradFlow:
    """grad_norms at every checkpoint. checkpoints: [(step, path)] as course_checkpoints() returns;
    load(path) -> GPT2 (default: gpt2.checkpoint.load_model)."""
    if not checkpoints:
        raise ValueError("gradflow_over_training: no checkpoints given")
    if load is None:
        from gpt2lab.gpt2.checkpoint import load_model
        load = lambda path: load_model(path)[0]  # noqa: E731
    frames = [grad_norms(load(path), x, y) for _, path in checkpoints]
    return GradFlow(steps=np.array([s for s, _ in checkpoints]), loss=np.array([f["loss"] for f in frames]),
                    layers=np.stack([f["layers"] for f in frames]), stream=np.stack([f["stream"] for f in frames]),
                    wte=np.array([f["wte"] for f in frames]), wpe=np.array([f["wpe"] for f in frames]))


def group_colors() -> list:
    """One orange shade per parameter group (gradients are always drawn in the backward hue family)."""
    cmap = plt.get_cmap(BACKWARD_CMAP)
    return [cmap(0.35 + 0.6 * g / (len(GROUPS) - 1)) for g in range(len(GROUPS))]


def _limits(a: np.ndarray) -> tuple[float, float]:
    pos = a[a > 0]
    lo, hi = (pos.min(), pos.max()) if pos.size else (1e-6, 1.0)
    return lo / 2, hi * 2


def draw_gradflow(flow: GradFlow, frame: int = 0):
    """Two panels for one frame: bars of parameter-gradient norms per layer and group (log scale), and the
    residual-stream gradient norm entering each layer. Axis limits are fixed over all frames.

    Returns (figure, update) where update(frame) redraws the same artists for another frame (cheap: heights,
    line and titles only, which keeps an animation over many checkpoints fast)."""
    fig, (ax_bar, ax_stream) = plt.subplots(1, 2, figsize=(8.8, 3.8), gridspec_kw=dict(width_ratios=[2, 1]))
    _, L, G = flow.layers.shape
    width = 0.8 / G
    bars = [ax_bar.bar(np.arange(L) + (g - (G - 1) / 2) * width, flow.layers[frame, :, g], width, color=colour,
                       label=group) for g, (group, colour) in enumerate(zip(GROUPS, group_colors()))]
    ax_bar.set_yscale("log")
    ax_bar.set_ylim(*_limits(flow.layers))
    ax_bar.set_xticks(range(L), [f"layer {l}" for l in range(L)])
    ax_bar.set_ylabel("‖dL/dW‖")
    ax_bar.legend(fontsize=9, ncol=3, loc="upper right")
    (line,) = ax_stream.plot(range(L + 1), flow.stream[frame], "o-", color=group_colors()[-1])
    ax_stream.set_yscale("log")
    ax_stream.set_ylim(*_limits(flow.stream))
    ax_stream.set_xticks(range(L + 1), [f"x{l}" for l in range(L + 1)])
    ax_stream.set_xlabel("residual stream: x0 = embeddings, x_l enters block l")

    def update(i):
        for g, bar in enumerate(bars):
            for rect, h in zip(bar, flow.layers[i, :, g]):
                rect.set_height(h)
        line.set_ydata(flow.stream[i])
        step = int(flow.steps[i])
        ax_bar.set_title(shape_title("grad norms", (L, G), step=step) + f"   loss {flow.loss[i]:.2f}", fontsize=9)
        ax_stream.set_title(shape_title("‖dL/dx_l‖", (L + 1,), step=step), fontsize=9)
        return []

    update(frame)
    fig.tight_layout()  # once: the layout never changes between frames
    return fig, update


def gradflow_animation(flow: GradFlow, interval: int = 600):
    """FuncAnimation of draw_gradflow over every frame (checkpoint). Show it with .to_jshtml()."""
    from matplotlib.animation import FuncAnimation

    fig, update = draw_gradflow(flow, 0)
    anim = FuncAnimation(fig, update, frames=len(flow.steps), interval=interval, blit=False)
    plt.close(fig)
    return anim
