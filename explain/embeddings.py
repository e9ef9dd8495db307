"""Lesson 2's data: token and position embeddings, the lookup as a one-hot matmul, the backward as a scatter-add,
and what the trained course model's tables look like.

    x[t] = wte[ids[t]] + wpe[t]          wte: (V, C), wpe: (maxT, C), ids: (T,) -> x: (T, C)

The lookup is a matrix product with one-hot rows, x_tok = onehot(ids) @ wte, so its backward is the matmul's,
dwte = onehot(ids).T @ dx: row v of dwte is the *sum* of dx[t] over every t where ids[t] == v. A token that
occurs twice gets two gradients added (a scatter-add), and a token that never occurs gets exactly zero.

Every token is drawn in `palette.token_color(id)`; every figure titles itself with `shape_title`.
"""
from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
import torch

from .palette import BACKWARD_CMAP, DIVERGING_CMAP, FIGURE_MAX_WIDTH_IN, shape_title, token_color
from .tokenize import token_label


# ---------------------------------------------------------------------------------------------------------
# the math: lookup, one-hot matmul, scatter-add
# ---------------------------------------------------------------------------------------------------------

def one_hot(ids, V: int) -> np.ndarray:
    """(T, V) float32 with a single 1 per row, at column ids[t]."""
    ids = np.asarray(ids)
    out = np.zeros((len(ids), V), np.float32)
    out[np.arange(len(ids)), ids] = 1.0
    return out


def embed(wte: np.ndarray, wpe: np.ndarray, ids) -> np.ndarray:
    """x = wte[ids] + wpe[:T]. wte (V, C), wpe (maxT, C), ids (T,) or (B, T) -> (T, C) or (B, T, C)."""
    ids = np.asarray(ids)
    return wte[ids] + wpe[:ids.shape[-1]]


def scatter_add_backward(dx: np.ndarray, ids, V: int, maxT: int) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's backward, one row at a time as the math says. dx (T, C) or (B, T, C).

    Returns dwte (V, C) and dwpe (maxT, C): dwte[ids[t]] += dx[t] (repeats add up), dwpe[t] += dx[t] (summed over B).
    """
    dx = np.asarray(dx, np.float32).reshape(-1, np.shape(ids)[-1], dx.shape[-1])
    ids = np.asarray(ids).reshape(dx.shape[:2])
    dwte = np.zeros((V, dx.shape[-1]), np.float32)
    dwpe = np.zeros((maxT, dx.shape[-1]), np.float32)
    for b in range(dx.shape[0]):
        for t in range(dx.shape[1]):
            dwte[ids[b, t]] += dx[b, t]  # += not =: a repeated token collects every one of its gradients
            dwpe[t] += dx[b, t]
    return dwte, dwpe


def torch_encoder(wte: np.ndarray, wpe: np.ndarray, ids, dx: np.ndarray) -> dict:
    """The reference: nn.functional.embedding forward and autograd backward. Returns {"x", "dwte", "dwpe"}."""
    wte_t = torch.tensor(wte, requires_grad=True)
    wpe_t = torch.tensor(wpe, requires_grad=True)
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    x = torch.nn.functional.embedding(ids_t, wte_t) + wpe_t[:ids_t.shape[-1]]
    x.backward(torch.as_tensor(dx))
    return {"x": x.detach().numpy(), "dwte": wte_t.grad.numpy(), "dwpe": wpe_t.grad.numpy()}


# ---------------------------------------------------------------------------------------------------------
# pictures of the running example
# ---------------------------------------------------------------------------------------------------------

def _token_yticks(ax, ids, labels):
    ax.set_yticks(range(len(ids)), labels, fontfamily="monospace")
    for tick, i in zip(ax.get_yticklabels(), ids):
        tick.set_color(token_color(i))
        tick.set_fontweight("bold")


def embedding_figure(wte: np.ndarray, wpe: np.ndarray, ids, labels, max_channels: int = 64):
    """Three heatmaps side by side: wte[ids] + wpe[:T] = x, rows labelled by coloured tokens.

    Shows the first `max_channels` channels (C = 128 does not fit across a screen). Returns the figure."""
    ids = np.asarray(ids)
    T, C = len(ids), wte.shape[1]
    c = min(C, max_channels)
    panels = [("wte[ids]", wte[ids][:, :c]), ("wpe[:T]", wpe[:T, :c]), ("x", embed(wte, wpe, ids)[:, :c])]
    lim = max(float(np.abs(p).max()) for _, p in panels)
    fig, axes = plt.subplots(1, 3, figsize=(FIGURE_MAX_WIDTH_IN, 0.28 * T + 1.9), sharey=True)
    for ax, (name, panel) in zip(axes, panels):
        im = ax.imshow(panel, cmap=DIVERGING_CMAP, vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
        ax.set_title(shape_title(name, (T, C)) + (f"\nfirst {c} channels" if c < C else ""), fontsize=9)
        ax.set_xlabel("channel")
    _token_yticks(axes[0], ids, labels)
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig


def scatter_add_figure(dx: np.ndarray, ids, labels, max_channels: int = 48):
    """The backward as a picture: dx (T, C) on the left, the rows of dwte it lands in on the right.

    Each distinct token gets one row of dwte; a token that occurs k times gets the sum of its k rows of dx
    (its label says x k). Gradients are drawn in the backward colour map. Returns the figure."""
    ids = np.asarray(ids)
    T, C = dx.shape
    c = min(C, max_channels)
    uniq = list(dict.fromkeys(ids.tolist()))            # first-occurrence order, like reading the text
    dwte_rows = np.stack([dx[ids == u].sum(0) for u in uniq])
    lim = max(float(np.abs(dx[:, :c]).max()), float(np.abs(dwte_rows[:, :c]).max()))
    fig, (a, b) = plt.subplots(1, 2, figsize=(FIGURE_MAX_WIDTH_IN, 0.28 * T + 1.9))
    a.imshow(np.abs(dx[:, :c]), cmap=BACKWARD_CMAP, vmin=0, vmax=lim, aspect="auto", interpolation="nearest")
    a.set_title(shape_title("|dx|", (T, C)) + f", first {c} channels", fontsize=9)
    _token_yticks(a, ids, labels)
    b.imshow(np.abs(dwte_rows[:, :c]), cmap=BACKWARD_CMAP, vmin=0, vmax=lim, aspect="auto",
             interpolation="nearest")
    counts = {u: int((ids == u).sum()) for u in uniq}
    first = {u: labels[list(ids).index(u)] for u in uniq}
    _token_yticks(b, uniq, [first[u] + (f"  ×{counts[u]}" if counts[u] > 1 else "") for u in uniq])
    b.set_title(shape_title("|dwte[rows used]|", (len(uniq), C)) + "  (every other row: 0)", fontsize=9)
    for ax in (a, b):
        ax.set_xlabel("channel")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# the trained table: neighbours, PCA over training, position similarity
# ---------------------------------------------------------------------------------------------------------

def token_counts(train_ids: np.ndarray, V: int) -> np.ndarray:
    """How often each token id occurs in the training data: (V,) int64."""
    return np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=V)


def frequent_tokens(counts: np.ndarray, enc, n: int = 40, words_only: bool = True, skip: int = 0) -> np.ndarray:
    """Ids of the n most frequent tokens (after the first `skip`); words_only keeps ' word'-like tokens
    (a leading space then letters), which make a readable scatter plot."""
    order = np.argsort(-counts, kind="stable")
    keep = []
    for i in order:
        if counts[i] == 0 or len(keep) >= n + skip:
            break
        s = enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace")
        if not words_only or (s.startswith(" ") and s[1:].isalpha() and len(s) > 2):
            keep.append(int(i))
    return np.array(keep[skip:], dtype=np.int64)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_i, b_j) for rows a (N, C), b (M, C) -> (N, M)."""
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def nearest_neighbours(wte: np.ndarray, token_id: int, k: int = 10, candidates=None) -> list[tuple[int, float]]:
    """The k tokens whose rows of wte point most nearly the same way as token_id's: [(id, cosine)], best first.

    candidates: ids to search among (e.g. tokens seen in training; an unseen token's row is still its random
    initialisation, shrunk by weight decay, so it is noise). The query itself is never returned."""
    cand = np.arange(len(wte)) if candidates is None else np.asarray(candidates)
    cand = cand[cand != token_id]
    sims = cosine_matrix(wte[token_id][None], wte[cand])[0]
    top = np.argsort(-sims, kind="stable")[:k]
    return [(int(cand[j]), float(sims[j])) for j in top]


def neighbours_html(enc, token_id: int, neighbours: list[tuple[int, float]]) -> str:
    """The query token and its neighbours as coloured boxes with a bar for each cosine similarity."""
    def box(i):
        label = html.escape(token_label(enc.decode_single_token_bytes(int(i))))
        c = token_color(i)
        return (f'<span title="id {i}" style="background:{c}66;border:1px solid {c};border-radius:3px;'
                f'padding:0 3px;font-family:monospace">{label}</span>')
    rows = [f"<div><b>nearest to</b> {box(token_id)} <small>(id {token_id})</small></div>"]
    for i, s in neighbours:
        width = int(120 * max(s, 0.0))
        rows.append(f'<div style="line-height:1.8">{box(i)} <span style="display:inline-block;width:{width}px;'
                    f'height:8px;background:{token_color(i)}"></span> <small>cos {s:+.3f}</small></div>')
    return "".join(rows)


def checkpoint_tables(checkpoints, token_ids) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The embedding tables over training, keeping only what the pictures need (a frame is ~29 MB in full).

    checkpoints: [(step, path)] as course_checkpoints() returns; token_ids: (N,) rows of wte to keep.
    Returns steps, wte_rows (F, N, C) and wpes (F, maxT, C)."""
    from gpt2lab.gpt2.checkpoint import load_checkpoint

    steps, rows, wpes = [], [], []
    for step, path in checkpoints:
        params = load_checkpoint(path)["params"]
        steps.append(int(step))
        rows.append(params["transformer.wte.weight"][np.asarray(token_ids)])
        wpes.append(params["transformer.wpe.weight"])
    return steps, np.stack(rows), np.stack(wpes)


def pca_2d(X: np.ndarray) -> np.ndarray:
    """The rows of X (N, C) projected on their two main directions of variation: (N, 2)."""
    Xc = X - X.mean(0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ Vt[:2].T


def procrustes(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A (N, 2) rotated/reflected to best match B (N, 2): A @ R with R orthogonal minimising |A R - B|."""
    U, _, Vt = np.linalg.svd(A.T @ B)
    return A @ (U @ Vt)


def aligned_pca(tables: list[np.ndarray]) -> np.ndarray:
    """PCA of each frame (N, C) -> (F, N, 2), each frame rotated onto the next one (the last, trained frame is
    the anchor) and scaled to unit RMS, so the animation neither flips nor spins and early (small) embeddings
    stay visible. PCA's axes are only defined up to sign and order; Procrustes removes exactly that freedom."""
    coords = [pca_2d(np.asarray(t, np.float64)) for t in tables]
    coords = [c / max(np.sqrt((c ** 2).sum(1).mean()), 1e-12) for c in coords]
    for f in range(len(coords) - 2, -1, -1):
        coords[f] = procrustes(coords[f], coords[f + 1])
    return np.stack(coords)


def uncluttered(xy: np.ndarray, labels, box) -> np.ndarray:
    """Which labels to show so that none overlaps another: (N,) bool. Greedy in the given order (put the most
    frequent token first: it keeps its label); a label's box is box = (width per character, height), in the
    units of xy, starting at its point and running right and up."""
    char_w, h = box
    kept, show = [], np.zeros(len(labels), bool)
    for i, ((x, y), lab) in enumerate(zip(xy, labels)):
        w = char_w * max(len(lab), 1)
        if all(x + w <= kx or kx + kw <= x or y + h <= ky or ky + kh <= y for kx, ky, kw, kh in kept):
            kept.append((x, y, w, h))
            show[i] = True
    return show


def pca_animation(coords: np.ndarray, ids, labels, steps, interval: int = 500):
    """FuncAnimation of aligned_pca coords (F, N, 2): each token a dot and its label in token_color; a label
    that would overlap one drawn before it (ids in order of importance) is left off in that frame, the dot
    stays. Show with .to_jshtml()."""
    from matplotlib.animation import FuncAnimation

    F_, N, _ = coords.shape
    colours = [token_color(i) for i in ids]
    fig, ax = plt.subplots(figsize=(7, 6))
    lim = float(np.abs(coords).max()) * 1.1
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    dots = ax.scatter(coords[0, :, 0], coords[0, :, 1], c=colours, s=18)
    texts = [ax.text(x, y, lab, color=c, fontsize=9) for (x, y), lab, c in zip(coords[0], labels, colours)]
    # a 9-pt label in data units: the axes span 2 * lim over its size in points (about 0.6 em a character)
    width_pt, height_pt = (ax.get_position().size * fig.get_size_inches() * 72)
    box = (0.6 * 9 * 2 * lim / width_pt, 1.2 * 9 * 2 * lim / height_pt)

    def update(f):
        dots.set_offsets(coords[f])
        show = uncluttered(coords[f], labels, box)
        for t, (x, y), s in zip(texts, coords[f], show):
            t.set_position((x, y))
            t.set_visible(bool(s))
        ax.set_title(shape_title("PCA of wte[tokens]", (N, 2), step=int(steps[f])) + "  (unit RMS)", fontsize=9)
        return []

    update(0)
    fig.tight_layout()  # after the title exists, so it is not cut off
    anim = FuncAnimation(fig, update, frames=F_, interval=interval, blit=False)
    plt.close(fig)
    return anim


def position_similarity(wpe: np.ndarray, T: int | None = None) -> np.ndarray:
    """cos(wpe[i], wpe[j]) for the first T positions: (T, T)."""
    w = wpe[:T] if T else wpe
    return cosine_matrix(w, w)


def position_similarity_figure(sim: np.ndarray, step=None, ax=None):
    """Heatmap of position_similarity (T, T): red where two positions' rows point alike, blue where opposite."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.imshow(sim, cmap=DIVERGING_CMAP, vmin=-1, vmax=1, interpolation="nearest")
    where = {} if step is None else {"step": int(step)}
    ax.set_title(shape_title("cos(wpe[i], wpe[j])", sim.shape, **where), fontsize=9)
    ax.set_xlabel("position j")
    ax.set_ylabel("position i")
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return ax.figure
