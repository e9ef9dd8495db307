"""Lesson 3's data: causal self-attention for one head, every intermediate, on a real input.

For one layer and one head (hs = C // n_head channels of q, k and v), with h = ln_1(x) the block's input:

    q, k, v  = h @ W_q.T + b_q, ...                       (T, hs) each, slices of c_attn's output
    scores   = q @ k.T                                    (T, T)  how well query t1 matches key t2
    scaled   = scores / sqrt(hs)                          (T, T)  keeps the variance ~1 whatever hs is
    masked   = scaled, with -inf where t2 > t1            (T, T)  a token may not look at the future
    weights  = softmax(masked) along each row             (T, T)  each row sums to 1; exp(-inf) = 0
    out      = weights @ v                                (T, hs) a weighted average of the values

`attention_steps` computes all of these in plain numpy from the model's own weights; the tests check them
against the model's forward pass. Figures title themselves with `shape_title`, tokens keep their colours
(`token_color`), heads keep theirs (`head_color`); queries run top to bottom, keys left to right.

The online softmax (the flash-attention trick) is here as data too: `online_softmax_trace` walks a score row
block by block, keeping only a running max m, a running sum l and a rescaled accumulator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import matplotlib.pyplot as plt
import numpy as np
import torch

from .palette import (DIVERGING_CMAP, FIGURE_MAX_WIDTH_IN, FORWARD_CMAP, RUNNING_EXAMPLE, head_color, shape_title,
                      token_color)
from .tokenize import token_labels

# The intermediates, in the order the forward pass makes them.
STEP_NAMES = ("q", "k", "v", "scores", "scaled", "masked", "weights", "out")
# In titles the weights are `att`, their name in the model, the kernels and every lesson's figures.
TITLE_NAMES = {"weights": "att"}
MASKED_COLOR = "#d9d9d9"   # the future: cells a query may not see


# ---------------------------------------------------------------------------------------------------------
# the math, one head at a time
# ---------------------------------------------------------------------------------------------------------

@dataclass
class AttentionSteps:
    """Every intermediate of one head on one input. Arrays are float32 numpy.

    ids (T,), tokens: T labels ('␣be'); q, k, v, out: (T, hs); scores, scaled, masked, weights: (T, T).
    """
    layer: int
    head: int
    ids: np.ndarray
    tokens: list[str]
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    scores: np.ndarray
    scaled: np.ndarray
    masked: np.ndarray
    weights: np.ndarray
    out: np.ndarray

    @property
    def T(self) -> int:
        return len(self.ids)

    @property
    def hs(self) -> int:
        return self.q.shape[1]

    def title(self, name: str) -> str:
        """`att[layer=2, head=1]  (T=11, T=11)` for the intermediate `name` (the weights are titled att)."""
        dims = ("T", "T") if getattr(self, name).shape == (self.T, self.T) else ("T", "hs")
        shape = tuple(f"{d}={n}" for d, n in zip(dims, getattr(self, name).shape))
        return shape_title(TITLE_NAMES.get(name, name), shape, layer=self.layer, head=self.head)


@lru_cache(maxsize=1)
def _encoding():
    from gpt2lab.datasets import gpt2_encoding
    return gpt2_encoding()


def token_ids(text_or_ids) -> np.ndarray:
    """GPT-2 token ids (T,) int64 of a text (special-token strings read as plain text), or the ids given."""
    if isinstance(text_or_ids, str):
        return np.array(_encoding().encode_ordinary(text_or_ids), dtype=np.int64)
    return np.asarray(text_or_ids, dtype=np.int64).reshape(-1)


def _check_input(model, ids, layer: int, head: int):
    cfg = model.config
    if len(ids) == 0:
        raise ValueError("attention_steps: the text is empty; give at least one token")
    if len(ids) > cfg.block_size:
        raise ValueError(f"attention_steps: the text is {len(ids)} tokens, longer than the model's context "
                         f"of {cfg.block_size} tokens")
    if not 0 <= layer < cfg.n_layer:
        raise ValueError(f"attention_steps: layer must be in 0..{cfg.n_layer - 1}, got {layer}")
    if not 0 <= head < cfg.n_head:
        raise ValueError(f"attention_steps: head must be in 0..{cfg.n_head - 1}, got {head}")


@torch.no_grad()
def block_inputs(model, ids, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """What the model itself computes at `layer`: (h, y), both (T, C) float32.

    h is the attention's input ln_1(x); y is the heads' outputs side by side, just before c_proj (head j
    at channels j*hs:(j+1)*hs). Caught with hooks on one ordinary forward pass, so nothing is re-implemented.
    """
    attn = model.transformer.h[layer].attn
    seen = {}
    hooks = [attn.register_forward_pre_hook(lambda m, a: seen.__setitem__("h", a[0])),
             attn.c_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("y", a[0]))]
    try:
        model(torch.as_tensor(ids, dtype=torch.long)[None])
    finally:
        for hook in hooks:
            hook.remove()
    return seen["h"][0].float().numpy(), seen["y"][0].float().numpy()


def causal_mask(T: int) -> np.ndarray:
    """(T, T) bool, True where key t2 > query t1: the future, which a query may not see."""
    return np.triu(np.ones((T, T), dtype=bool), k=1)


def softmax_rows(x: np.ndarray) -> np.ndarray:
    """softmax along the last axis. Subtracting the row max first changes nothing mathematically
    (exp(s - m) / sum exp(s - m)) but keeps exp from overflowing; exp(-inf) = 0 for masked cells."""
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def head_qkv(model, h: np.ndarray, layer: int, head: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v (T, hs) of one head from the attention input h (T, C), with c_attn's weights.

    c_attn.weight is (3C, C): rows 0:C make q, C:2C make k, 2C:3C make v; head j owns hs of each.
    """
    c_attn = model.transformer.h[layer].attn.c_attn
    W, b = c_attn.weight.detach().float().numpy(), c_attn.bias.detach().float().numpy()
    C = W.shape[1]
    hs = C // model.config.n_head
    rows = [slice(part * C + head * hs, part * C + (head + 1) * hs) for part in range(3)]
    return tuple(h @ W[r].T + b[r] for r in rows)


def attention_steps(model, text_or_ids=RUNNING_EXAMPLE, layer: int = 0, head: int = 0) -> AttentionSteps:
    """Every intermediate of head `head` in layer `layer` of `model` (a gpt2lab GPT2) on a text or ids.

    Raises ValueError for an empty input, one longer than the context, or a layer/head out of range.
    """
    ids = token_ids(text_or_ids)
    _check_input(model, ids, layer, head)
    h, _ = block_inputs(model, ids, layer)
    q, k, v = head_qkv(model, h, layer, head)
    scores = q @ k.T
    scaled = scores / np.float32(math.sqrt(q.shape[1]))
    masked = np.where(causal_mask(len(ids)), np.float32(-np.inf), scaled)
    weights = softmax_rows(masked)
    return AttentionSteps(layer, head, ids, token_labels(ids), q, k, v, scores, scaled, masked, weights,
                          weights @ v)


def model_head_output(model, text_or_ids, layer: int, head: int) -> np.ndarray:
    """The model's own output of one head (T, hs): its channels of y, just before c_proj mixes the heads."""
    ids = token_ids(text_or_ids)
    _check_input(model, ids, layer, head)
    _, y = block_inputs(model, ids, layer)
    hs = y.shape[1] // model.config.n_head
    return y[:, head * hs:(head + 1) * hs]


def layer_qkv(model, text_or_ids, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' inputs and expected output at `layer`, from the model's own forward pass.

    Returns qkv (1, T, 3C) float32 = c_attn(ln_1(x)) in llm.c's layout (q | k | v, head j at channels
    j*hs:(j+1)*hs of each), and y (1, T, C): every head's output side by side, before c_proj.
    """
    ids = token_ids(text_or_ids)
    _check_input(model, ids, layer, 0)
    h, y = block_inputs(model, ids, layer)
    c_attn = model.transformer.h[layer].attn.c_attn
    W, b = c_attn.weight.detach().float().numpy(), c_attn.bias.detach().float().numpy()
    return np.ascontiguousarray((h @ W.T + b)[None], dtype=np.float32), y[None]


def torch_attention(q, k, v):
    """The reference in PyTorch for one head: q, k, v (T, hs) -> (weights (T, T), out (T, hs))."""
    q, k, v = (torch.as_tensor(a) for a in (q, k, v))
    T, hs = q.shape
    att = (q @ k.T) / math.sqrt(hs)
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1), float("-inf"))
    att = torch.softmax(att, dim=-1)
    return att.numpy(), (att @ v).numpy()


# ---------------------------------------------------------------------------------------------------------
# why 1/sqrt(hs): the variance of a dot product grows with its length
# ---------------------------------------------------------------------------------------------------------

def score_variance(dims=(4, 16, 64, 256, 1024), n: int = 4000, seed: int = 0) -> dict:
    """Variance of q . k for random q, k with unit-variance entries, per length d, raw and divided by sqrt(d).

    q . k is a sum of d products, each of variance 1, so its variance is d; after / sqrt(d) it is 1.
    Returns {"dims": (D,), "raw": (D,), "scaled": (D,)}.
    """
    rng = np.random.default_rng(seed)
    raw = []
    for d in dims:
        q, k = rng.standard_normal((2, n, d))
        raw.append(float(np.var((q * k).sum(axis=1))))
    raw = np.array(raw)
    return {"dims": np.array(dims), "raw": raw, "scaled": raw / np.array(dims, dtype=float)}


def scale_figure(d: int = 256, dims=(4, 16, 64, 256, 1024), seed: int = 0):
    """Left: variance of q . k against d, raw (grows like d) and scaled (stays ~1). Right: the softmax of one
    row of 12 scores at length d, raw (nearly one-hot: the gradient vanishes) and scaled (spread out)."""
    var = score_variance(dims, seed=seed)
    rng = np.random.default_rng(seed + 1)
    q, k = rng.standard_normal(d), rng.standard_normal((12, d))
    row = k @ q
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 3.4))
    a.loglog(var["dims"], var["raw"], "o-", label="q·k")
    a.loglog(var["dims"], var["scaled"], "o-", label="q·k / √d")
    a.set(xlabel="d (head size)", ylabel="variance", title="variance of a dot product of length d")
    a.legend()
    x = np.arange(len(row))
    b.bar(x - 0.2, softmax_rows(row), 0.4, label="softmax(q·k)")
    b.bar(x + 0.2, softmax_rows(row / math.sqrt(d)), 0.4, label="softmax(q·k / √d)")
    b.set(xlabel="key", ylabel="weight", title=f"one row of 12 keys, d={d}")
    b.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# pictures of one head
# ---------------------------------------------------------------------------------------------------------

MAX_LABELS = 40   # beyond this many tokens, label every k-th one so the labels stay readable


def token_ticks(axis, tokens, ids, fontsize: int = 9, show: bool = True):
    """Label `axis` (ax.xaxis or ax.yaxis) with the tokens, each in its token colour; for long texts only
    every k-th token is labelled. show=False keeps the ticks without text (panels that share a neighbour's)."""
    every = max(1, math.ceil(len(tokens) / MAX_LABELS))
    pos = list(range(0, len(tokens), every))
    labels = [tokens[t] if show else "" for t in pos]
    axis.set_ticks(pos, labels, family="monospace", fontsize=fontsize,
                   rotation=90 if axis.axis_name == "x" else 0)
    for tick, t in zip(axis.get_ticklabels(), pos):
        tick.set_color(token_color(int(ids[t])))
        tick.set_fontweight("bold")


def heatmap(steps: AttentionSteps, name: str = "weights", ax=None, query: int | None = None):
    """Heatmap of one intermediate (see STEP_NAMES) with token labels: queries down, keys (or channels) across.

    Masked (-inf) cells are grey; weights use the forward colours, signed values the diverging map. The row
    of `query`, if given, gets a black frame. Returns the figure.
    """
    from matplotlib.patches import Rectangle

    a = getattr(steps, name)
    square = a.shape == (steps.T, steps.T)
    if square and name == "weights":   # the future got weight 0: drawn grey, as masked, not as a white 0
        a = np.where(causal_mask(steps.T), np.nan, a)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(0.45 * a.shape[1] + 2.5, FIGURE_MAX_WIDTH_IN), min(0.4 * steps.T + 1.5, 8)))
    finite = a[np.isfinite(a)]
    if name == "weights":
        cmap, lim = plt.get_cmap(FORWARD_CMAP), dict(vmin=0.0, vmax=1.0)
    else:
        m = float(np.abs(finite).max(initial=1e-6))
        cmap, lim = plt.get_cmap(DIVERGING_CMAP), dict(vmin=-m, vmax=m)
    cmap = cmap.with_extremes(bad=MASKED_COLOR)
    im = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, aspect="auto", **lim)
    ax.figure.colorbar(im, ax=ax, fraction=0.04)
    token_ticks(ax.yaxis, steps.tokens, steps.ids)
    if square:
        token_ticks(ax.xaxis, steps.tokens, steps.ids)
        ax.set_xlabel("key t2")
    else:
        ax.set_xlabel("channel")
    ax.set_ylabel("query t1" if square else "token t")
    if query is not None:
        ax.add_patch(Rectangle((-0.5, query - 0.5), a.shape[1], 1, fill=False, edgecolor="black", lw=2))
    ax.set_title(steps.title(name), fontsize=10)
    return ax.figure


def steps_figure(steps: AttentionSteps, names=("scores", "scaled", "masked", "weights")):
    """The intermediates in the order the forward pass makes them, two per row (left to right, then down)."""
    rows = math.ceil(len(names) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(FIGURE_MAX_WIDTH_IN, rows * min(0.28 * steps.T + 1.8, 4.0)),
                             squeeze=False)
    for ax in axes.flat[len(names):]:
        fig.delaxes(ax)
    for ax, name in zip(axes.flat, names):
        heatmap(steps, name, ax=ax)
    fig.tight_layout()
    return fig


def query_bar(steps: AttentionSteps, query: int, name: str = "weights", ax=None):
    """Bar chart of one query's row of `name`. Returns the figure.

    A (T, T) intermediate: one bar per key, in the key's token colour; keys in the future (t2 > query) are
    empty hatched outlines, the mask gives them weight 0. A (T, hs) one (q, k, v, out): one bar per
    channel, in the query token's colour.
    """
    if not 0 <= query < steps.T:
        raise ValueError(f"query_bar: query must be in 0..{steps.T - 1}, got {query}")
    row = getattr(steps, name)[query]
    square = row.size == steps.T and getattr(steps, name).shape[1] == steps.T
    if ax is None:
        _, ax = plt.subplots(figsize=(min(0.45 * row.size + 2, FIGURE_MAX_WIDTH_IN), 3.2))
    x = np.arange(row.size)
    if square:
        seen = x <= query
        ax.bar(x[seen], np.where(np.isfinite(row[seen]), row[seen], 0.0),
               color=[token_color(i) for i in steps.ids[seen]], edgecolor="black", linewidth=0.5)
        ax.bar(x[~seen], np.full((~seen).sum(), 0.02 if name == "weights" else 0.0), color="none",
               edgecolor=MASKED_COLOR, hatch="//")
        ax.plot(x[~seen], np.zeros((~seen).sum()), "x", color="#999999")   # the future: masked out
        token_ticks(ax.xaxis, steps.tokens, steps.ids)
    else:
        ax.bar(x, row, color=token_color(int(steps.ids[query])), edgecolor="black", linewidth=0.5)
        ax.set_xlabel("channel")
    if name == "weights":
        ax.set_ylim(0, 1)
    ax.set_ylabel(name)
    dims = (f"T={steps.T}",) if square else (f"hs={steps.hs}",)
    ax.set_title(shape_title(TITLE_NAMES.get(name, name), dims, layer=steps.layer, head=steps.head, query=query)
                 + f"   query '{steps.tokens[query]}'", fontsize=10)
    ax.figure.tight_layout()
    return ax.figure


def head_cmap(head: int):
    """White to the head's own colour: every head's pattern drawn in its colour; masked cells grey."""
    from matplotlib.colors import LinearSegmentedColormap
    cmap = LinearSegmentedColormap.from_list(f"head{head}", ["#ffffff", head_color(head)])
    return cmap.with_extremes(bad=MASKED_COLOR)


def all_heads_figure(model, text=RUNNING_EXAMPLE, layer: int = 0):
    """The weights of every head of `layer`, side by side, each in its head colour. Returns the figure."""
    n_head = model.config.n_head
    # one row, as wide as the page allows: heads side by side compare best
    fig, axes = plt.subplots(1, n_head, figsize=(min(2.4 * n_head + 1.0, FIGURE_MAX_WIDTH_IN), 3.8), squeeze=False)
    for head, ax in enumerate(axes[0]):
        s = attention_steps(model, text, layer, head)
        ax.imshow(np.ma.masked_invalid(np.where(causal_mask(s.T), np.nan, s.weights)), cmap=head_cmap(head),
                  vmin=0, vmax=1)
        token_ticks(ax.xaxis, s.tokens, s.ids)
        token_ticks(ax.yaxis, s.tokens, s.ids, show=head == 0)   # rows are shared: label once
        ax.set_title(f"head {head}", fontsize=10, color=head_color(head))
    fig.suptitle(shape_title("att", ("T={}".format(s.T), "T={}".format(s.T)), layer=layer)
                 + "  every head; grey: the future", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# over training: the same head, checkpoint after checkpoint
# ---------------------------------------------------------------------------------------------------------

@dataclass
class TrainingFrame:
    """One checkpoint's picture of a head: step, weights (T, T), token labels and ids."""
    step: int
    weights: np.ndarray
    tokens: list[str]
    ids: np.ndarray
    layer: int
    head: int


def attention_over_training(text=RUNNING_EXAMPLE, layer: int = 0, head: int = 0, checkpoints=None):
    """The weights of one head at every course checkpoint: [TrainingFrame], oldest first.

    checkpoints: [(step, model or path)], default `gpt2lab.gpt2.course_checkpoints()` (paths are loaded
    with `gpt2lab.gpt2.load_model`).
    """
    from gpt2lab.gpt2.course import models_over_training
    frames = []
    for step, model in models_over_training(checkpoints):
        s = attention_steps(model, text, layer, head)
        frames.append(TrainingFrame(step, s.weights, s.tokens, s.ids, layer, head))
    if not frames:
        raise ValueError("attention_over_training: no checkpoints; train the course model first")
    return frames


def draw_frame(frame: TrainingFrame, ax):
    """One frame of the animation: the head's weights at one step, in the head's colour."""
    ax.clear()
    T = len(frame.ids)
    ax.imshow(np.ma.masked_invalid(np.where(causal_mask(T), np.nan, frame.weights)), cmap=head_cmap(frame.head),
              vmin=0, vmax=1)
    token_ticks(ax.xaxis, frame.tokens, frame.ids)
    token_ticks(ax.yaxis, frame.tokens, frame.ids)
    ax.set_title(shape_title("att", (f"T={T}", f"T={T}"), layer=frame.layer, head=frame.head)
                 + f"\ntraining step {frame.step}", fontsize=10, color=head_color(frame.head))


def attention_animation(frames: list[TrainingFrame], interval: int = 700):
    """FuncAnimation of the frames, one checkpoint per frame (`interval` ms each); show with to_jshtml()."""
    from matplotlib.animation import FuncAnimation

    if not frames:
        raise ValueError("attention_animation: no frames to show")
    T = len(frames[0].ids)
    fig, ax = plt.subplots(figsize=(0.35 * T + 2.5, 0.35 * T + 2.5))
    draw_frame(frames[0], ax)
    fig.tight_layout()

    def frame(j):
        draw_frame(frames[j], ax)
        return ax.images

    anim = FuncAnimation(fig, frame, frames=len(frames), interval=interval, repeat=True)
    plt.close(fig)   # shown through anim.to_jshtml(), not as a stray static figure
    return anim


# ---------------------------------------------------------------------------------------------------------
# the online softmax: one pass over the keys, no full score row
# ---------------------------------------------------------------------------------------------------------

@dataclass
class OnlineStep:
    """The online softmax's state after the keys [start, stop) have been read.

    m: running max of the scores seen; l: running sum of exp(s - m); acc (n,) or (hs,): the running
    sum of exp(s - m) v, already rescaled to the current m. acc / l is the answer for the keys seen so far.
    """
    start: int
    stop: int
    m: float
    l: float
    acc: np.ndarray


def online_softmax_trace(scores_row, block: int, v=None) -> list[OnlineStep]:
    """Walk one row of scores (n,) `block` keys at a time, as a flash-attention kernel does; the state after
    every block. v: (n, hs) values; by default the identity, so acc / l is the weights row itself and the last
    step equals softmax(scores_row). Masked keys (-inf) get weight exp(-inf) = 0, so they may stay in the row.
    """
    from gpt2lab.kernels.attention import online_softmax_step

    s = np.asarray(scores_row, dtype=np.float64).reshape(-1)
    if s.size == 0 or block < 1:
        raise ValueError(f"online_softmax_trace: need a non-empty row and block >= 1, got {s.size} scores, "
                         f"block={block}")
    if not np.isfinite(s[0]):
        raise ValueError("online_softmax_trace: the first key must be visible (finite score), as key 0 is to "
                         "every causal query")
    v = np.eye(s.size) if v is None else np.asarray(v, dtype=np.float64)
    m, l, acc, trace = -math.inf, 0.0, np.zeros(v.shape[1]), []
    for start in range(0, s.size, block):
        stop = min(start + block, s.size)
        # c = exp(m_old - m_new) rescales all that was summed so far to the new max: nothing is recomputed
        m, l, acc = online_softmax_step(m, l, acc, s[start:stop], v[start:stop])
        trace.append(OnlineStep(start, stop, float(m), float(l), acc.copy()))
    return trace


def online_softmax_figure(trace: list[OnlineStep], scores_row):
    """Three panels: the score row read block by block with the running max m; the running sum l; and
    acc / l after each block (lighter: earlier) ending on the two-pass softmax (black dots)."""
    s = np.asarray(scores_row, dtype=np.float64).reshape(-1)
    n, x = s.size, np.arange(s.size)
    fig, axd = plt.subplot_mosaic([["a", "a"], ["b", "c"]], figsize=(FIGURE_MAX_WIDTH_IN, 6.4))
    a, b, c = axd["a"], axd["b"], axd["c"]
    shade = plt.get_cmap(FORWARD_CMAP)(np.linspace(0.35, 1.0, len(trace)))
    for j, st in enumerate(trace):
        seen = slice(st.start, st.stop)
        a.bar(x[seen], np.where(np.isfinite(s[seen]), s[seen], 0.0), color=shade[j])
        a.hlines(st.m, st.start - 0.5, n - 0.5, colors=shade[j], linestyles="--")
        a.axvline(st.stop - 0.5, color="#999", lw=0.6)
        c.plot(x, st.acc / st.l if st.acc.size == n else np.full(n, np.nan), "o-", ms=3, color=shade[j],
               label=f"after keys {st.start}..{st.stop - 1}")
    a.set(xlabel="key", ylabel="score", title=shape_title("scores", (f"n={n}",), block=trace[0].stop))
    b.step([st.stop for st in trace], [st.l for st in trace], "o-", where="post", color=shade[-1])
    b.set(xlabel="keys read", ylabel="l = Σ exp(s - m)", title="running sum, rescaled when m grows")
    c.plot(x, softmax_rows(s), "ko", ms=6, mfc="none", label="softmax (two passes)")
    c.set(xlabel="key", ylabel="acc / l", title="weights so far: the last equals softmax")
    c.legend(fontsize=9)
    fig.tight_layout()
    return fig


def _best_of(fn, repeat: int) -> float:
    import time
    fn()                                    # warm up: numba compiles (or loads its cache) on the first call
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_timings(B: int = 4, T: int = 256, C: int = 768, n_head: int = 12, repeat: int = 3, seed: int = 0):
    """Time the attention forward on the CPU at one shape: PyTorch, our per-query loops that store att
    (naive), the same math as whole-head BLAS products (blas, what the model runs), and the online-softmax
    loops that store only lse. Best of `repeat` runs, in seconds, plus the bytes of the softmax cache each
    keeps for the backward: {"torch": s, "naive": s, "blas": s, "online": s, "att_bytes", "lse_bytes"}.
    """
    from gpt2lab.kernels.attention import attention_forward, attention_forward_online

    rng = np.random.default_rng(seed)
    inp = rng.standard_normal((B, T, 3 * C)).astype(np.float32)
    out = np.zeros((B, T, C), np.float32)
    att = np.zeros((B, n_head, T, T), np.float32)
    lse = np.zeros((B, n_head, T), np.float32)
    qkv = torch.from_numpy(inp).view(B, T, 3, n_head, C // n_head).permute(2, 0, 3, 1, 4)

    def torch_forward():
        with torch.no_grad():
            torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)

    return {"torch": _best_of(torch_forward, repeat),
            "naive": _best_of(lambda: attention_forward(out, att, inp, n_head, version="rows"), repeat),
            "blas": _best_of(lambda: attention_forward(out, att, inp, n_head, version="blas"), repeat),
            "online": _best_of(lambda: attention_forward_online(out, lse, inp, n_head), repeat),
            "att_bytes": att.nbytes, "lse_bytes": lse.nbytes}


__all__ = ["STEP_NAMES", "TITLE_NAMES", "AttentionSteps", "token_ids", "block_inputs", "causal_mask",
           "softmax_rows", "head_qkv", "attention_steps", "model_head_output", "layer_qkv", "torch_attention",
           "score_variance", "scale_figure", "token_ticks", "heatmap", "steps_figure", "query_bar", "head_cmap",
           "all_heads_figure", "TrainingFrame", "attention_over_training", "draw_frame", "attention_animation",
           "OnlineStep", "online_softmax_trace", "online_softmax_figure", "kernel_timings"]
