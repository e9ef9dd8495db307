# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 6: The MLP and the matmul
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# After attention has mixed the tokens, each position of the running sentence goes through the block's
# **MLP** on its own: widen from C to 4C, a GELU, narrow back to C. Two linear layers, i.e. two **matmuls** —
# together with attention's projections they hold nearly all of GPT-2's FLOPs, which is why the matmul kernel is
# the one worth making fast. In this lesson you write the GELU, the residual add and a tiled matmul yourself, see
# your own threads drawn, and train GPT-2 with your kernels checked live.
#
# ```
#   x (T, C) ──c_fc──▶ h (T, 4C) ──GELU──▶ a (T, 4C) ──c_proj──▶ out (T, C) ──(+ x: the residual)──▶
# ```

# %%
import math

import numpy as np
import torch
from numba import cuda, float32, njit, prange

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain import mlp as M
from gpt2lab.explain import puzzles as P
from gpt2lab.explain.check import cmp
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain.puzzles import draw_puzzle, train_with
from gpt2lab.gpt2 import course_model
from gpt2lab.kernels.matmul import matmul_forward
from gpt2lab.widgets import GeluExplorer

model, info = course_model()   # the tiny GPT-2 trained on Shakespeare (trained once, then loaded from the cache)
ids = np.array(gpt2_encoding().encode_ordinary(RUNNING_EXAMPLE))
mlp = M.block_mlp(model, ids, layer=0)     # block 0's MLP input (ln_2 of the sentence) and its weights
print(RUNNING_EXAMPLE, "->", len(ids), "tokens;", {k: v.shape for k, v in mlp.items()})

# %% [markdown]
# ## 1. The math
#
# For each of the T positions (weights stored as PyTorch's `nn.Linear` does, `(out, in)`):
#
# $$h = x W_{fc}^\top + b_{fc},\quad a = \mathrm{gelu}(h),\quad out = a W_{proj}^\top + b_{proj}$$
#
# Backward, given `dout` — the cache is `x` and `h` (the kernels recompute `a` from `h`):
#
# $$dW_{proj} = dout^\top a,\quad da = dout\,W_{proj},\quad dh = da \odot \mathrm{gelu}'(h),\quad
#   dW_{fc} = dh^\top x,\quad dx = dh\,W_{fc}$$
#
# and each bias gradient is its output gradient summed over the rows. Where do the FLOPs go, for our sentence?

# %%
T, C = mlp["x"].shape
flops = M.mlp_flops(T, C)
for part, n in flops.items():
    print(f"{part:7s} {n:>10,d} FLOPs  ({n / sum(flops.values()):.0%})")

# %% [markdown]
# ## 2. The reference, and a linear layer as a matmul
#
# The block's own MLP in PyTorch against the same math in numpy, then `c_fc` through our matmul kernel: a
# linear layer *is* one matmul, `out (N, OC) = inp (N, C) @ weight (OC, C)^T + bias`.

# %%
with torch.no_grad():
    reference = model.transformer.h[0].mlp(torch.from_numpy(mlp["x"])).numpy()
ours = M.mlp_forward(**mlp)
cmp("mlp out (numpy)", ours["out"], reference)

h = np.zeros((1, T, 4 * C), np.float32)
matmul_forward(h, mlp["x"][None], mlp["w_fc"], mlp["b_fc"])
cmp("h = c_fc(x) (kernel)", h[0], ours["h"])

# %% [markdown]
# ## 3. GELU, and why
#
# `gelu(x) = x Φ(x)`: x scaled by the probability that a standard normal is below it. GPT-2 uses the tanh
# approximation `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`. Unlike ReLU it is smooth, and it lets a little
# negative signal through (its minimum is about −0.17 near x = −0.75), so a unit never gets stuck with zero
# gradient. Move x and watch the value and the slope.

# %%
GeluExplorer(x=-0.75)

# %% [markdown]
# ## 4. Puzzle: your GELU kernel (CUDA, one thread per element)
#
# The grid is rounded up to whole blocks, so the last block has threads past the end. Your kernel runs in
# numba's CUDA simulator (in a separate process); the check compares it with PyTorch's `F.gelu(approximate=
# "tanh")`. Names you can use: `math`, `cuda`, `float32`, `GELU_SCALE`, `GELU_CUBIC`.
#
# `out[i] = 0.5 x (1 + tanh(GELU_SCALE (x + GELU_CUBIC x^3)))`,  `x = inp[i]`,  for `i < n`

# %% tags=["exercise", "puzzle"]
@cuda.jit
def gelu_forward_kernel(out, inp, n):
    i = cuda.grid(1)        # this thread's element: blockIdx.x * blockDim.x + threadIdx.x
    # your code: out[i] = gelu(inp[i]) -- but the last block has threads past the end
    raise NotImplementedError


# %% tags=["check", "puzzle"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("gelu_forward_kernel")

check("gelu_forward_kernel", gelu_forward_kernel)

# %% [markdown]
# Your threads: which one read which element (colour: its block), and the idle ones past the end.

# %%
draw_puzzle("gelu_forward_kernel", gelu_forward_kernel)

# %% [markdown]
# **Plug it in.** A micro GPT-2 (one block, C = 32, the sentence as characters) trains three steps with *your*
# kernel as its GELU, every step checked against PyTorch: the `gelu` parity row is your kernel.

# %%
train_with("gelu_forward_kernel", gelu_forward_kernel, steps=3)

# %% [markdown]
# ## 5. The matmul, in tiles
#
# A naive CUDA matmul has each thread read a whole row of `inp` and a whole row of `weight` from global memory:
# every number is fetched again by every thread that needs it. A **tiled** matmul lets a block of TILE × TILE
# threads load one TILE × TILE tile of each into shared memory, all use it, then move on along C: each number
# is fetched once per block instead of once per thread. Which tiles does block (1, 1) load?

# %%
fig = M.tiles_figure(N=8, C=12, OC=8, tile=4, block=(1, 1))

# %% [markdown]
# ## 6. Puzzle: your tiled matmul (CUDA, shared memory)
#
# Blocks are `(TILE, TILE)` threads (TILE = 4 here), the grid covers `out (N, OC)`; thread `(ty, tx)` of block
# `(bx, by)` computes `out[by*TILE + ty, bx*TILE + tx]`. Two barriers per k-step: after the loads (everyone's
# element is in the tile) and after the products (nobody overwrites a tile someone still reads) — the check
# reports a race if one is missing.
#
# `out[n, o] = sum_c inp[n, c] weight[o, c] + bias[o]`

# %% tags=["exercise", "puzzle"]
@cuda.jit
def matmul_tiled_kernel(out, inp, weight, bias):
    inp_tile = cuda.shared.array((TILE, TILE), float32)   # inp[block's rows, k0:k0+TILE]
    w_tile = cuda.shared.array((TILE, TILE), float32)     # weight[block's columns, k0:k0+TILE]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = inp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty     # this thread's output row ...
    o = cuda.blockIdx.x * TILE + tx     # ... and column: out[n, o]
    # your code: for k0 in range(0, C, TILE): each thread loads one element of each tile (0.0 past the edges),
    #            wait for all loads, add TILE products from the tiles, wait again before the next loads
    raise NotImplementedError


# %% tags=["check", "puzzle"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("matmul_tiled_kernel")

check("matmul_tiled_kernel", matmul_tiled_kernel)

# %%
draw_puzzle("matmul_tiled_kernel", matmul_tiled_kernel)    # the tiles *your* last block loaded, by k-step

# %% [markdown]
# Plugged in, your kernel computes every matmul of the micro model's forward pass — the four of the block and
# the tied `lm_head` — in the simulator (ten seconds or so: every CUDA thread runs in Python).

# %%
train_with("matmul_tiled_kernel", matmul_tiled_kernel, steps=3)

# %% [markdown]
# ## 7. The version ladder, on your CPU
#
# The same `out = inp @ weight.T + bias` for the MLP's c_fc at N = 64, C = 128, 4C = 512, five ways: Python
# loops (timed on two rows and scaled), the loops compiled by numba, split over your cores with `prange`,
# gpt2lab's kernel (BLAS, blocked for the caches: tiles again, for the CPU's caches instead of shared memory),
# and PyTorch. Each rung is checked against numpy before it is timed.

# %%
print(M.ladder_table(M.time_ladder()))

# %% [markdown]
# ## 8. Your kernels on a GPU
#
# The same kernels, compiled by numba for an NVIDIA GPU, train the real GPT-2 124M. How fast? The cell below
# measures it when this machine has a CUDA GPU; otherwise it shows figures measured on a real one, and its first
# line says which, when and on what code. First, whole training steps (forward, backward, AdamW), ours against
# PyTorch on the same GPU, same weights and batches. Newer records also say which matmuls a row ran (numba: ours,
# the defaults; a version such as v5: one of ours by name, a candidate timed before it becomes the default or an
# older one timed again; cublas: NVIDIA's library for every matrix product, attention's included, as llm.c does)
# and time the fused path (fewer, bigger kernels, flash attention among them; its flash column, when there is
# one, names the flash attention version it ran).
#
# In the H200 record of 2026-11-27, read the 124M rows at T = 1024. On that day's default kernels (numba: matmul
# v7) the fused path took 1.61× PyTorch's step; on the candidate matmul v8 (v7's sums in fewer instructions), 1.40×;
# with cuBLAS doing every matrix product, 1.07×. So v8 is the default now. Two days of this: on 2026-11-26 the
# defaults of the time took 16.6× (the per-op path, naive attention) and the fused path with matmul v5 2.6×
# (docs/figures.md has every run).

# %%
from gpt2lab.explain import gpu_speed as GS

report = GS.speed_report()
print(report.source())
print(GS.step_table(report))

# %% [markdown]
# The MiB columns are memory. Where does a step's go? The bars below *count* it, buffer by buffer, from the
# shapes the model allocates (`gpt2/buffers.py`; kernel scratch left out), for GPT-2 124M at B = 4, T = 1024,
# run three ways. Read three groups:
#
# - **the attention matrix att** (dark blue): every layer keeps softmax(q kᵀ) for its backward, B·NH·T·T
#   floats, 2.25 GiB over 12 layers, nearly as much as all the other activations together. It grows as T², and
#   it is the bar flash attention removes: the fused path recomputes each row in the backward and keeps one
#   number per row instead.
# - **logits and probs** (blue): B·T·50257 floats each, 0.77 GiB apiece. The fused classifier computes the
#   loss and dlogits in one pass and keeps no probs.
# - **activation gradients** (orange): a block's gradients are needed only while that block's backward runs;
#   only the stream's passes on to the block below. So the lean model (the default; llm.c does the same)
#   gives all 12 blocks one block's worth, zeroed before each: 1.13 GiB in place of 3.32, most of it dlogits.
#
# When the record has this size, the solid line is PyTorch's peak there, *measured*, and the dashed one 1.2×
# it, the goal: the first way's buffers alone pass it, the lean default's sit at PyTorch's, the fused path's
# well below.

# %%
from gpt2lab.explain import step_memory as SM

fig = SM.memory_figure("gpt2", B=4, T=1024, record=report.record)

# %% [markdown]
# Per op, forward plus backward at GPT-2 124M's shapes, as ours ÷ PyTorch's time (1 = as fast). Two things to
# read. Where ours lose: the lm_head's matmul (the biggest product) and the naive attention at T = 256, which
# stores the T × T matrix; the fused path's flash attention takes a quarter of PyTorch's time or less. And
# layernorm, gelu and residual: in the recorded run they took as many milliseconds at T = 256 as at T = 64 (four
# times the work, the same time), both sides alike, so their ratio hardly moves. They are not waiting for the GPU
# at all.

# %%
fig = GS.ops_figure(report)

# %% [markdown]
# They wait for the host. Every kernel call is a *launch*: Python checks the argument types, picks the compiled
# version and hands it to the driver, before the GPU does anything. A step of GPT-2 124M is 430–510 launches,
# tiny's 150–190 (the table's launches columns):

# %%
if "launch_us" in report.record:
    fig = GS.launch_figure(report)
else:   # a separate measurement; bench's runs record launches and host ms per step (the table above)
    print("No launch costs in this record: see the launches and host ms per step in the table above.")

# %% [markdown]
# At 15–35 µs a launch (measured alone, on an H100), that alone is 5–16 ms of host time per step; a PyTorch eager
# op costs about 6 µs. The table's host ms column is more than that: the Python around each launch (checking
# arguments, making views of buffers) counts too. So the fixes are on the host: launch with a compiled
# signature, reuse the launcher, fuse kernels (fewer launches). gpt2lab's kernels now do the first two
# (`@cuda_kernel` in kernels/_cuda.py) and `fused=True` the third; a record made before them (its first line
# says) does not show the gain. And at the big size, the FLOP rate: your tiled matmul's idea, taken further
# (more outputs per thread, so more FLOPs per byte loaded), is what the figures below measure.

# %%
if "tflops" in report.record:
    fig = GS.rate_figure(report)
else:
    print("No FLOP rate of the 124M step in this record: the matmul ladder below has each version's TFLOP/s.")

# %% [markdown]
# The matmul's own version ladder on the GPU: naive (v1) → shared-memory tiles (v2, your puzzle's idea) →
# compensated sums (v3) → register blocking (v4: each thread keeps a 4 × 4 block of outputs, so every value
# loaded from shared memory feeds four multiply-adds) → 128-bit loads (v5: a thread's 4 rows and 4 columns sit
# side by side, so one load brings 4 values) → 8 × 8 outputs a thread in 128 × 128 tiles (v7: four 16-byte
# loads feed 64 multiply-adds, and the next tiles load while these are multiplied) → v7's arithmetic in 11-18%
# fewer instructions (v8, the default now) → cuBLAS. In the record below, v8 runs 1.12-1.24× as fast as v7, 80-99%
# of cuBLAS's rate at these four shapes (the fifth, the lm_head, was cut by the run's time limit). v8's check is
# stricter than the one against PyTorch: the same sums in the same order must give the same bits, so
# `gpt2lab verify --device cuda --op matmul --version v8 --same-as v7` passes only when every number matches
# v7's exactly (it did, on that H200). The ladder is drawn when a GPU run has recorded it:

# %%
if "matmul_ladder" in report.record:
    fig = GS.ladder_figure(report)
else:
    print("No matmul ladder recorded on a GPU yet. On a machine with one: gpt2lab bench --device cuda --ladder")

# %% [markdown]
# Where does one training step's GPU time go? Every kernel launch of one step, bracketed by two *CUDA events*
# (markers the GPU stamps with its clock when it reaches them in its queue), grouped by kernel: each bar is
# that kernel's share of the step. The last bar is the time the GPU sat idle between two of our kernels,
# waiting for the host to launch the next one: a big idle bar means the step is bound by launches, not by
# the kernels. In the H200 record (GPT-2 at B = 8, T = 64, that day's defaults, matmul v7) the per-op path's
# three matmul kernels take 41% of the step and its attention, which stores the T × T matrix, 39%. The second
# chart is the fused path's step: flash attention is down to 3%, and the three matmul kernels are 65% of what
# is left, which is why the next rung of the ladder above (v8) was the next thing built.

# %%
if "profile" in report.record:
    fig = GS.profile_figure(report)
    if "profile_fused" in report.record:
        fig_fused = GS.profile_figure(report, fused=True)
else:
    print("No per-kernel profile recorded on a GPU yet. On a machine with one: "
          "gpt2lab bench --device cuda --profile --steps gpt2")

# %% [markdown]
# How close does each kernel come to what the GPU can do? Each op must at least read its inputs and write its
# outputs once, and do its arithmetic: divide by its time and you get the memory bandwidth and FLOP rate it
# reached, here as a percentage of the GPU's data-sheet peaks. Elementwise ops (gelu, residual, layernorm)
# can only be limited by memory; the matmuls, by arithmetic. An op far below 100% on its own limit is where
# a faster kernel can still win.

# %%
if "op_rates" in report.record and "peaks" in report.record:
    fig = GS.op_rate_figure(report)
else:
    print("No per-op rates recorded on a GPU yet. On a machine with one: gpt2lab bench --device cuda")

# %% [markdown]
# ## 9. Puzzle: the residual add on the CPU (`@njit` + `prange`)
#
# The MLP's output joins the stream: `out = inp1 + inp2`. On the CPU numba's `prange` splits the loop over the
# cores (compile with `parallel=True`). The arrays arrive flat, `(n,)`.

# %% tags=["exercise", "puzzle"]
@njit(parallel=True)
def residual_forward(out, inp1, inp2):
    # your code: a prange loop over the elements (numba splits it over the cores)
    raise NotImplementedError


# %% tags=["check", "puzzle"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("residual_forward")

check("residual_forward", residual_forward)

# %%
train_with("residual_forward", residual_forward, steps=3)

# %% [markdown]
# ## 10. Exercise: the MLP's backward by hand
#
# Write `mlp_backward`: given `dout (N, C)`, the input `x`, and the weights, return
# `(dx, dw_fc, db_fc, dw_proj, db_proj)` for `out = gelu(x @ w_fc.T + b_fc) @ w_proj.T + b_proj`. Recompute
# `h` and `a` from `x` (the cache). `gelu` and its derivative `gelu_grad` are in `gpt2lab.explain.mlp`. The check
# compares with PyTorch's autograd.

# %% tags=["exercise"]
def mlp_backward(dout, x, w_fc, b_fc, w_proj):
    from gpt2lab.explain.mlp import gelu, gelu_grad   # noqa: F401  (you will need them)
    # your code: h, a from x; then dw_proj, db_proj, da, dh, dw_fc, db_fc, dx
    raise NotImplementedError


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("mlp_backward")

check("mlp_backward", mlp_backward)
