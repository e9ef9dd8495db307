"""Lesson 6's data: the MLP of a GPT-2 block, the GELU inside it, the matmul that holds most of its FLOPs.

The MLP on one position's x (C,), in GPT-2's words (weights as nn.Linear stores them, (out, in)):

    h   = x @ w_fc.T + b_fc           (4C,)   c_fc: widen to 4C
    a   = gelu(h)                     (4C,)   the tanh GELU
    out = a @ w_proj.T + b_proj       (C,)    c_proj: back to C

Backward, given dout (cache: x and h; a is recomputed from h, as the kernels do):

    dw_proj = dout.T @ a,   db_proj = sum of dout over rows,   da = dout @ w_proj
    dh      = da * gelu'(h)
    dw_fc   = dh.T @ x,     db_fc   = sum of dh over rows,     dx = dh @ w_fc

Also here: the GELU curve and its derivative (the lesson's widget), which tiles each block of a tiled matmul
loads (`tile_schedule`), and the matmul "version ladder" timed on this machine's CPU (`time_ladder`).
"""
from __future__ import annotations

import math
import time

import numpy as np
from numba import njit, prange

GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def gelu(h):
    """GPT-2's GELU, 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))), elementwise on numpy arrays."""
    return 0.5 * h * (1 + np.tanh(GELU_SCALE * (h + GELU_CUBIC * h ** 3)))


def gelu_grad(h):
    """d gelu / d h, elementwise: 0.5 (1 + tanh u) + 0.5 h (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 h^2)."""
    th = np.tanh(GELU_SCALE * (h + GELU_CUBIC * h ** 3))
    return 0.5 * (1 + th) + 0.5 * h * (1 - th * th) * GELU_SCALE * (1 + 3 * GELU_CUBIC * h * h)


def activation_curves(x) -> dict:
    """GELU and its neighbours at the points x: {"gelu", "dgelu", "relu", "gelu_erf"} (arrays like x).
    The erf GELU is the exact one, x Phi(x); GPT-2 uses the tanh approximation."""
    from scipy.special import erf
    x = np.asarray(x, dtype=np.float64)
    return {"gelu": gelu(x), "dgelu": gelu_grad(x), "relu": np.maximum(x, 0),
            "gelu_erf": 0.5 * x * (1 + erf(x / math.sqrt(2)))}


def gelu_figure(x0: float = -0.5, lo: float = -4.0, hi: float = 4.0):
    """GELU and ReLU over [lo, hi], the derivative below, the point x0 marked with its values."""
    import matplotlib.pyplot as plt
    x = np.linspace(lo, hi, 401)
    c = activation_curves(x)
    p = activation_curves(np.array([x0]))
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(7, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ax.plot(x, c["relu"], color="#bbbbbb", lw=1.5, label="ReLU: max(x, 0)")
    ax.plot(x, c["gelu"], color="#1f77b4", lw=2, label="GELU (tanh, GPT-2)")
    ax.plot([x0], p["gelu"], "o", color="#08519c")
    ax.annotate(f"gelu({x0:.2f}) = {p['gelu'][0]:.4f}", (x0, p["gelu"][0]), xytext=(8, 12),
                textcoords="offset points", fontsize=10)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("gelu(x)")
    ax.legend(fontsize=9, loc="upper left")
    ax.set_title("GELU: smooth, lets a little negative signal through, near ReLU far from 0", fontsize=10)
    dax.plot(x, c["dgelu"], color="#e6550d", lw=2, label="d gelu / dx")
    dax.plot([x0], p["dgelu"], "o", color="#a63603")
    dax.annotate(f"{p['dgelu'][0]:.4f}", (x0, p["dgelu"][0]), xytext=(8, 8), textcoords="offset points",
                 fontsize=10)
    dax.axhline(0, color="k", lw=0.5)
    dax.set_xlabel("x")
    dax.set_ylabel("gradient")
    dax.legend(fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# the MLP, forward and backward, in numpy (the exercise's reference is torch autograd: explain/exercises.py)
# ---------------------------------------------------------------------------------------------------------
def mlp_forward(x, w_fc, b_fc, w_proj, b_proj) -> dict:
    """x (N, C) -> {"h" (N, 4C), "a" (N, 4C), "out" (N, C)}."""
    h = x @ w_fc.T + b_fc
    a = gelu(h)
    return {"h": h, "a": a, "out": a @ w_proj.T + b_proj}


def block_mlp(model, ids, layer: int = 0) -> dict:
    """The course model's block `layer` MLP on the tokens ids (T,): its input ln2 (T, C) and weights as numpy
    float32: {"x", "w_fc", "b_fc", "w_proj", "b_proj"}."""
    import torch
    block = model.transformer.h[layer]
    with torch.no_grad():
        x = model.transformer.wte(torch.as_tensor(ids)) + model.transformer.wpe(torch.arange(len(ids)))
        for b in model.transformer.h[:layer]:
            x = b(x[None])[0]
        x = x + block.attn(block.ln_1(x[None]))[0]
        ln2 = block.ln_2(x)
    f = lambda t: t.detach().numpy().astype(np.float32)   # noqa: E731
    return {"x": f(ln2), "w_fc": f(block.mlp.c_fc.weight), "b_fc": f(block.mlp.c_fc.bias),
            "w_proj": f(block.mlp.c_proj.weight), "b_proj": f(block.mlp.c_proj.bias)}


def mlp_flops(N: int, C: int) -> dict:
    """Multiply-adds x 2 of the MLP's two matmuls and of its GELU (about 8 ops per element) for N positions."""
    return {"c_fc": 2 * N * C * 4 * C, "gelu": 8 * N * 4 * C, "c_proj": 2 * N * 4 * C * C}


# ---------------------------------------------------------------------------------------------------------
# tiles: which block loads what
# ---------------------------------------------------------------------------------------------------------
def tile_schedule(N: int, C: int, OC: int, tile: int) -> list[dict]:
    """For out (N, OC) = inp (N, C) @ weight (OC, C)^T in blocks of tile x tile threads: one dict per block,
    {"block": (bx, by), "rows": (n0, n1), "cols": (o0, o1), "k_tiles": [(k0, k1), ...]} -- block (bx, by)
    computes out[n0:n1, o0:o1] and, at k-step i, loads inp[n0:n1, k_i] and weight[o0:o1, k_i]."""
    if min(N, C, OC, tile) < 1:
        raise ValueError(f"tile_schedule: N, C, OC and tile must be >= 1, got {(N, C, OC, tile)}")
    ks = [(k0, min(k0 + tile, C)) for k0 in range(0, C, tile)]
    return [{"block": (bx, by), "rows": (by * tile, min((by + 1) * tile, N)),
             "cols": (bx * tile, min((bx + 1) * tile, OC)), "k_tiles": ks}
            for by in range((N + tile - 1) // tile) for bx in range((OC + tile - 1) // tile)]


def tiles_figure(N: int = 8, C: int = 12, OC: int = 8, tile: int = 4, block=(1, 1), k_step: int | None = None):
    """inp, weight and out side by side; block `block`'s output tile in out, and the tiles it loads at each
    k-step (or only at `k_step`) in inp and weight, numbered by k-step."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    sched = {s["block"]: s for s in tile_schedule(N, C, OC, tile)}
    if tuple(block) not in sched:
        raise ValueError(f"tiles_figure: no block {tuple(block)}; blocks are {sorted(sched)}")
    s = sched[tuple(block)]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), gridspec_kw={"width_ratios": [C, C, OC]})
    colours = plt.get_cmap("viridis")
    steps = range(len(s["k_tiles"])) if k_step is None else [k_step]
    for ax, (name, rows, cols) in zip(axes, (("inp", N, C), ("weight", OC, C), ("out", N, OC))):
        ax.set_xlim(0, cols)
        ax.set_ylim(rows, 0)
        ax.set_aspect("equal")
        ax.set_xticks(range(0, cols + 1, tile))
        ax.set_yticks(range(0, rows + 1, tile))
        ax.grid(True, color="#dddddd")
        ax.set_title(f"{name} ({rows}, {cols})", fontsize=10)
    for i in steps:
        k0, k1 = s["k_tiles"][i]
        colour = colours(i / max(len(s["k_tiles"]) - 1, 1))
        for ax, (r0, r1) in ((axes[0], s["rows"]), (axes[1], s["cols"])):
            ax.add_patch(Rectangle((k0, r0), k1 - k0, r1 - r0, color=colour, alpha=0.85))
            light = i / max(len(s["k_tiles"]) - 1, 1) > 0.6       # viridis turns yellow: dark text on it
            ax.text((k0 + k1) / 2, (r0 + r1) / 2, f"k{i}", ha="center", va="center", fontsize=10,
                    color="black" if light else "white")
    (n0, n1), (o0, o1) = s["rows"], s["cols"]
    axes[2].add_patch(Rectangle((o0, n0), o1 - o0, n1 - n0, color="#08519c"))
    axes[2].text((o0 + o1) / 2, (n0 + n1) / 2, f"block\n{tuple(block)}", ha="center", va="center", color="white",
                 fontsize=9)
    fig.suptitle(f"block {tuple(block)} computes out[{n0}:{n1}, {o0}:{o1}]: at k-step i it loads a {tile}x{tile} "
                 f"tile of inp and of weight into shared memory", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------
# the matmul version ladder, on this CPU
# ---------------------------------------------------------------------------------------------------------
def matmul_python(out, inp, weight, bias):
    """Rung 0: three Python loops. out[n, o] = sum_c inp[n, c] weight[o, c] + bias[o]."""
    N, C = inp.shape
    for n in range(N):
        for o in range(weight.shape[0]):
            acc = 0.0
            for c in range(C):
                acc += inp[n, c] * weight[o, c]
            out[n, o] = acc + bias[o]


@njit(cache=True)
def matmul_loops(out, inp, weight, bias):
    """Rung 1: the same loops compiled by numba (one core)."""
    N, C = inp.shape
    for n in range(N):
        for o in range(weight.shape[0]):
            acc = np.float32(0.0)
            for c in range(C):
                acc += inp[n, c] * weight[o, c]
            out[n, o] = acc + bias[o]


@njit(parallel=True, fastmath=True, cache=True)
def matmul_prange(out, inp, weight, bias):
    """Rung 2: rows split over the cores (prange); fastmath lets the c-loop use SIMD (reordered sums)."""
    N, C = inp.shape
    for n in prange(N):
        for o in range(weight.shape[0]):
            acc = np.float32(0.0)
            for c in range(C):
                acc += inp[n, c] * weight[o, c]
            out[n, o] = acc + bias[o]


def _ours(out, inp, weight, bias):
    """Rung 3: gpt2lab's kernel (BLAS sgemm, blocked for the caches, from numba)."""
    from gpt2lab.kernels.matmul import matmul_forward
    matmul_forward(out[None], inp[None], weight, bias)


def _torch(out, inp, weight, bias):
    """Rung 4: PyTorch's F.linear (its own BLAS)."""
    import torch
    out[:] = torch.nn.functional.linear(torch.from_numpy(inp), torch.from_numpy(weight),
                                        torch.from_numpy(bias)).numpy()


LADDER = (("python loops", matmul_python), ("numba loops", matmul_loops), ("numba prange", matmul_prange),
          ("gpt2lab (BLAS)", _ours), ("torch", _torch))


def time_ladder(N: int = 64, C: int = 128, OC: int = 512, repeats: int = 3, python_rows: int = 2,
                seed: int = 0) -> list[dict]:
    """Each rung of LADDER on out (N, OC) = inp (N, C) @ weight.T + bias, best of `repeats` (after one warm-up
    call, so compile time is not counted). Python loops are timed on `python_rows` rows and scaled to N.
    Every rung is checked against numpy first. [{"version", "seconds", "gflops", "speedup"}]."""
    rng = np.random.default_rng(seed)
    inp = rng.standard_normal((N, C)).astype(np.float32)
    weight = (rng.standard_normal((OC, C)) / np.sqrt(C)).astype(np.float32)
    bias = rng.standard_normal(OC).astype(np.float32)
    want = inp @ weight.T + bias
    rows = []
    for name, fn in LADDER:
        n = python_rows if fn is matmul_python else N
        out = np.zeros((n, OC), np.float32)
        fn(out, inp[:n], weight, bias)
        if not np.allclose(out, want[:n], atol=1e-3):
            raise AssertionError(f"time_ladder: {name} computes a wrong matmul")
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            fn(out, inp[:n], weight, bias)
            best = min(best, time.perf_counter() - t)
        seconds = best * N / n
        rows.append({"version": name, "seconds": seconds, "gflops": 2 * N * C * OC / seconds / 1e9})
    for r in rows:
        r["speedup"] = rows[0]["seconds"] / r["seconds"]
    return rows


def ladder_table(rows: list[dict]) -> str:
    """The ladder as aligned text: version, ms, GFLOP/s, x over Python."""
    lines = [f"{'version':<16} {'ms':>10} {'GFLOP/s':>9} {'x python':>10}"]
    lines += [f"{r['version']:<16} {r['seconds'] * 1e3:>10.3f} {r['gflops']:>9.2f} {r['speedup']:>10.0f}"
              for r in rows]
    return "\n".join(lines)


__all__ = ["gelu", "gelu_grad", "activation_curves", "gelu_figure", "mlp_forward", "block_mlp", "mlp_flops",
           "tile_schedule", "tiles_figure", "time_ladder", "ladder_table", "LADDER"]
