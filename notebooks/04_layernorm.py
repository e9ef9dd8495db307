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
# # Lesson 4: Layer norm
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# Every token's vector drifts as it flows through the model: some rows end up centred far from zero, some
# spread wide, some narrow. **Layer norm** takes each token's row of C numbers on its own, shifts it to mean
# 0 and scales it to standard deviation 1, then lets the model choose, per channel, the scale `gamma` and
# shift `beta` it prefers. GPT-2 does this before every attention (`ln_1`), before every MLP (`ln_2`) and
# once at the end (`ln_f`), so the blocks always see numbers of a known size.
#
# The picture: each dot is one token of the running example as `ln_1` of layer 0 sees it: the mean of its
# row, with the row's standard deviation as a bar. Before (`x`, note its own small scale), every token has a
# spread of its own; after normalising (`norm`), every row has mean 0 and std 1; after gamma and beta (`out`),
# the rows are in the units the model chose per channel.

# %%
import numpy as np
import torch

from gpt2lab.explain import cudatrace as CT
from gpt2lab.explain import layernorm as LN
from gpt2lab.explain.check import cmp
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain.showkernel import show_kernel
from gpt2lab.explain.simulator import verify_in_simulator
from gpt2lab.explain.tokenize import token_labels
from gpt2lab.gpt2 import course_model
from gpt2lab.kernels import layernorm as LNK
from gpt2lab.widgets.layernorm import LayerNormExplorer, ReductionStepper

model, info = course_model()            # trained once on Shakespeare, then read from the cache
ln = LN.model_layernorm(model, RUNNING_EXAMPLE, layer=0, which="ln_1")   # what ln_1 saw, and its gradients
x, gamma, beta = ln["x"], ln["gamma"], ln["beta"]
tokens = token_labels(ln["ids"])
fig = LN.idea_figure(x, gamma, beta, tokens)

# %% [markdown]
# `ln` holds what layer 0's `ln_1` saw on our sentence in one ordinary forward pass (caught with a hook), and
# the gradients that flowed back through it when the model was asked to predict each next token. The model
# reads the first T = 12 tokens and predicts tokens 1..12, so there are 12 rows of C = 128 channels.

# %%
print("x      ", x.shape, "  (T, C): the residual stream at layer 0 = token + position embeddings")
print("gamma  ", gamma.shape, "      the learned scale, one per channel")
print("beta   ", beta.shape, "      the learned shift, one per channel")
print("tokens ", tokens)

# %% [markdown]
# Why bother? Look at the size of the rows entering `ln_1` at each layer of our model: the residual stream
# grows as every block adds its output to it. Layer norm hands each block rows of std 1 all the same.

# %%
for layer in range(model.config.n_layer):
    seen = LN.model_layernorm(model, RUNNING_EXAMPLE, layer=layer)["x"]
    print(f"ln_1 of layer {layer}: row std from {seen.std(-1).min():6.3f} to {seen.std(-1).max():6.3f}")

# %% [markdown]
# ## 1. The forward, one line at a time
#
# We follow one row: the token `t = 3`. For a row x of C numbers:
#
# | line | shape | what it does |
# |---|---|---|
# | `mean = sum(x) / C` | 1 | the row's centre |
# | `xc = x - mean` | C | the row centred on 0 |
# | `var = sum(xc²) / C` | 1 | its spread (biased: / C, as PyTorch) |
# | `rstd = 1 / sqrt(var + eps)` | 1 | the *reciprocal* standard deviation; eps = 1e-5 keeps a flat row finite |
# | `norm = xc * rstd` | C | mean 0, std 1 |
# | `out = norm * gamma + beta` | C | the model's own scale and shift, per channel |

# %%
t = 3
row = x[t]
C = row.size
mean = row.sum() / C
xc = row - mean
var = (xc ** 2).sum() / C
rstd = 1 / np.sqrt(var + 1e-5)
norm = xc * rstd
out = norm * gamma + beta
print(f"token {t} '{tokens[t]}': mean = {mean:+.4f}   var = {var:.3e}   rstd = {rstd:.2f}")
print(f"norm: mean {norm.mean():+.1e}, std {norm.std():.4f}")
assert cmp(f"out[t={t}] vs the model", out, ln["out"][t])

# %% [markdown]
# The embeddings are small numbers (std about 0.05), so rstd is large: normalising *magnifies* this row about
# 20 times. The histograms below show the same C = 128 numbers at the three stages; the strip under each
# shows every channel as a dot. The shape of the distribution survives normalising (it is a shift and a
# zoom); gamma and beta then stretch and shift each channel differently, which can change the shape.

# %%
fig = LN.row_distribution_figure(row, gamma, beta, title=f"ln_1 input x[layer=0, t={t}]")

# %% [markdown]
# All rows at once: `forward_steps` keeps every intermediate, with `mean`, `var` and `rstd` as (T, 1)
# columns so that they broadcast along the row.

# %%
fwd = LN.forward_steps(x, gamma, beta)
for name in LN.FORWARD_NAMES:
    print(f"{name:5s} {fwd[name].shape}")
assert cmp("out (all rows) vs the model", fwd["out"], ln["out"])

# %% [markdown]
# ## 2. The backward, derived step by step
#
# Given `dout` = dL/d out (T, C), we want `dx`, `dgamma` and `dbeta`. We walk the forward lines backwards,
# like makemore's manual backprop, and check each gradient against PyTorch's autograd on exactly the same
# lines (`autograd_steps` keeps `.grad` of every intermediate). `dout` is the real gradient that reached
# `ln_1` when the model predicted the next tokens of our sentence.
#
# * `out = norm * gamma + beta`: `dnorm = dout * gamma`; gamma and beta are shared by all rows, so their
#   gradients add up over rows: `dgamma = Σ_rows dout * norm`, `dbeta = Σ_rows dout`.
# * `norm = xc * rstd`: xc gets `dnorm * rstd`; rstd is one number used by the whole row, so
#   `drstd = Σ_i dnorm_i * xc_i`.
# * `rstd = (var + eps)^(-1/2)`: `dvar = drstd * (-1/2) (var + eps)^(-3/2)`.
# * `var = Σ xc² / C`: xc gets a second share, `dvar * 2 xc / C`. So `dxc` has two paths, and they add.
# * `xc = x - mean`: `dmean = -Σ_i dxc_i`, and x gets `dxc` directly.
# * `mean = Σ x / C`: every x_i gets `dmean / C`.

# %%
dout = ln["dout"]
ref = LN.autograd_steps(x, gamma, beta, dout)        # float64 autograd over the same lines
N = C
dnorm = dout * gamma
dgamma = (dout * fwd["norm"]).sum(0)
dbeta = dout.sum(0)
drstd = (dnorm * fwd["xc"]).sum(-1, keepdims=True)
dvar = drstd * -0.5 * (fwd["var"] + 1e-5) ** -1.5
dxc = dnorm * fwd["rstd"] + dvar * 2 * fwd["xc"] / N
dmean = -dxc.sum(-1, keepdims=True)
dx = dxc + dmean / N
for name, ours in [("dnorm", dnorm), ("dgamma", dgamma), ("dbeta", dbeta), ("drstd", drstd),
                   ("dvar", dvar), ("dxc", dxc), ("dmean", dmean), ("dx", dx)]:
    assert cmp(name, ours, ref[name])   # cmp scales its tolerance by max|ref|: dvar is ~1e4, dx ~1e-1

# %% [markdown]
# The same walk lives in the package as `backward_long`. Now simplify. Substituting `dvar` and `dmean` into
# `dx` and using `norm = xc * rstd`, everything collapses to one line (llm.c's `layernorm_backward`):
#
# $$dx = \text{rstd}\,\Big(dnorm - \operatorname{mean}(dnorm) - norm \cdot \operatorname{mean}(dnorm \cdot norm)\Big)$$
#
# Read it term by term:
# * `dnorm`: the direct path, as if mean and rstd were constants;
# * `- mean(dnorm)`: the path through `mean`. Adding the same number to every x changes nothing after
#   normalising, so the part of the gradient that is the same for every channel must vanish;
# * `- norm * mean(dnorm * norm)`: the path through `rstd`. Scaling x changes nothing after normalising, so
#   the part of the gradient along `norm` itself must vanish too.
#
# **What to cache.** The one-liner needs `norm` and `rstd`. The forward keeps just two numbers per row,
# `mean` and `rstd` (B, T), and the backward rebuilds `norm = (x - mean) * rstd` from x, which it has
# anyway. Storing `norm` instead would cost a second (B, T, C) tensor per layer norm, 25 of them in GPT-2
# small; recomputing mean and rstd would cost two more passes over every row.

# %%
compact = LN.backward_compact(dout, fwd["norm"], fwd["rstd"], gamma)
scale = np.abs(ref["dx"]).max()
assert cmp("dx (one line) vs autograd", compact["dinp"], ref["dx"])
assert cmp("dx vs the model's own", compact["dinp"], ln["dinp"])
assert cmp("dgamma vs the model's", compact["dgamma"], ln["dgamma"])
assert cmp("dbeta vs the model's", compact["dbeta"], ln["dbeta"])
# both mean terms are really there: drop one and the gradient is wrong
dx_no_rstd = fwd["rstd"] * (compact["dnorm"] - compact["dnorm_mean"])
print("without the rstd term, max error:", f"{np.abs(dx_no_rstd - ref['dx']).max():.2e}")

# %% [markdown]
# What the two mean terms buy: each row of `dx` sums to 0 (shifting x does not change the output). And
# without eps, each row of `dx` would be orthogonal to `norm` too (scaling x would not change the output);
# eps breaks that a little: `var + eps` grows more slowly than `var` when x is scaled. Our rows have var of
# only ~2e-3, so eps is ~0.5% of it, and it shows:

# %%
dx_no_eps = fwd["xc"] / np.sqrt(fwd["var"])                      # norm with eps = 0
dx_no_eps = LN.backward_compact(dout, dx_no_eps, 1 / np.sqrt(fwd["var"]), gamma)["dinp"]
print("row sums of dx:                 ", f"{np.abs(compact['dinp'].sum(-1)).max():.1e}")
print("rows of dx · x, with eps:       ", f"{np.abs((compact['dinp'] * fwd['xc']).sum(-1)).max():.1e}")
print("rows of dx · x, eps = 0:        ", f"{np.abs((dx_no_eps * fwd['xc']).sum(-1)).max():.1e}")

# %% [markdown]
# ## 3. The reference in a few lines of PyTorch
#
# This is what the model runs (`F.layer_norm`), and what every kernel below is checked against.

# %%
xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
gt = torch.tensor(gamma, dtype=torch.float64, requires_grad=True)
bt = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
yt = torch.nn.functional.layer_norm(xt, (C,), gt, bt, eps=1e-5)
yt.backward(torch.tensor(dout, dtype=torch.float64))
assert cmp("out", fwd["out"], yt)
assert cmp("dx", compact["dinp"], xt.grad)
assert cmp("dgamma", compact["dgamma"], gt.grad, atol=1e-7)
assert cmp("dbeta", compact["dbeta"], bt.grad, atol=1e-7)

# %% [markdown]
# ## 4. The kernels
#
# `gpt2lab.kernels.layernorm` has the same math as numba kernels. On the CPU, one `prange` iteration per
# row, three passes over it (mean, variance, write); the backward makes the two sums of the one-liner,
# then writes dx, and gives each chunk of rows its own partial dgamma/dbeta to add up at the end (no race).
# llm.c-style: the caller allocates, kernels write in place, the forward writes the `mean`/`rstd` cache and
# the backward *accumulates* (`dx += ...`).
#
# First our real rows (as a batch of one), against the model:

# %%
from gpt2lab.kernels.layernorm import layernorm_backward, layernorm_forward

B, T = 1, x.shape[0]
k_out = np.zeros((B, T, C), np.float32)
k_mean, k_rstd = np.zeros((B, T), np.float32), np.zeros((B, T), np.float32)
layernorm_forward(k_out, k_mean, k_rstd, x[None], gamma, beta)
k_dx, k_dgamma, k_dbeta = np.zeros((B, T, C), np.float32), np.zeros(C, np.float32), np.zeros(C, np.float32)
layernorm_backward(k_dx, k_dgamma, k_dbeta, dout[None], x[None], gamma, k_mean, k_rstd)
assert cmp("kernel out", k_out[0], ln["out"])
assert cmp("kernel rstd", k_rstd[0], fwd["rstd"][:, 0], rtol=1e-5)
assert cmp("kernel dx", k_dx[0], ln["dinp"])
assert cmp("kernel dgamma", k_dgamma, ln["dgamma"], atol=1e-7)

# %% [markdown]
# Then the harness every kernel shares: random rows with their own offsets and scales (so a wrong mean or a
# one-pass variance shows), GPT-2's shape and awkward ones, per tensor. PyTorch runs twice: in float64 (the
# answer) and in float32 (what PyTorch itself gets in our precision). `ours/torch32` is our error in units of
# PyTorch float32's error: about 1 means as accurate as PyTorch; a tensor fails above 16.

# %%
from gpt2lab.kernels.check import check_op, format_table, get_spec

rows = check_op(get_spec("layernorm"), "cpu")
print(format_table(rows))
assert all(r.ok for r in rows)

# %% [markdown]
# **Timings** (measured here, median of 5, one forward + backward at GPT-2 small's width, B=4, T=64, C=768).
# PyTorch's fused C++ layer norm is the bar; ours is three plain loops per row compiled by numba.

# %%
tm = LN.kernel_timings(B=4, T=64, C=768, reps=5)
for name in ("torch", "numba"):
    print(f"{name:6s} {1e6 * tm[name]:8.0f} us   ({tm[name] / tm['torch']:.2f}x torch)")

# %% [markdown]
# ### On a GPU: three CUDA versions
#
# * **v1, one thread per row**: each thread runs the CPU loop. Only N threads, and neighbouring threads read
#   addresses C floats apart, so no load is coalesced.
# * **v2, one block per row**: thread `tid` takes channels `tid, tid + blockDim, ...`, so neighbouring threads
#   read neighbouring floats; the row's sums are shared-memory *tree reductions* (below, traced).
# * **v3, one warp per row**: the sums are warp shuffles in registers, no shared memory, no barrier.
#
# No GPU is needed to check them: numba's CUDA **simulator** runs every CUDA thread in Python.
# It is switched on by `NUMBA_ENABLE_CUDASIM=1` before numba is imported, and this notebook has already
# imported numba for the CPU kernels, so the check runs in its own process. Its threads take turns: one runs
# until it reaches a barrier (`cuda.syncthreads()`), an atomic or its end, then the next. So a thread that
# loops waiting for another thread's plain write would wait forever; after 30 seconds the simulator prints a
# line naming that thread (interrupt the cell then):

# %%
sim = verify_in_simulator("layernorm")   # `gpt2lab verify --device cudasim --op layernorm`, in a child process
sim

# %%
assert sim.ok, sim

# %% [markdown]
# And where there is a real GPU, the same harness at real sizes:

# %%
from numba import cuda

if cuda.is_available():
    print(format_table(check_op(get_spec("layernorm"), "cuda")))
else:
    print("No CUDA GPU here. On a machine with one: gpt2lab verify --device cuda --op layernorm")

# %% [markdown]
# ## 5. Which thread touched which memory
#
# GPU-Puzzles draws, for every puzzle, which thread read and wrote which element. We do the same on the real
# kernels: `trace_layernorm` runs a kernel in the simulator (in a subprocess) with its arrays replaced by
# *recording* stand-ins, so every `inp[r, i]` read and `out[r, i] = ...` write logs (block, thread, element,
# barrier phase). Shared memory is recorded too. The input: the first 16 channels of two of our tokens' rows.
#
# **v1** (4 threads in one block; two rows, so threads 2 and 3 have nothing to do). Each cell is an element of
# `inp` read by a thread, labelled with *when* (its 0th, 1st, ... read): thread 0 walks its row one element at
# a time, and at each step thread 1 is 16 floats away. On a GPU that is two separate memory transactions.

# %%
show_kernel(LNK.layernorm_forward_kernel_v1)

# %%
small = x[[t, t + 1], :16]
trace_v1 = CT.trace_layernorm("v1", small, block=4)
fig = CT.access_diagram(trace_v1)

# %% [markdown]
# **v2** (one block of 8 threads per row). At step 0, threads 0..7 of block 0 read elements 0..7: one
# contiguous piece of memory, a *coalesced* load. Each thread then holds a partial sum of two channels. (Every
# element is read three times, for the mean, the variance and the output; the numbers show the first time.)

# %%
show_kernel(LNK.layernorm_forward_kernel_v2)

# %%
trace = CT.trace_layernorm("v2", small, block=8)
fig = CT.access_diagram(trace)

# %%
print(f"{len(trace.events)} memory accesses recorded in {trace.title()}")
assert cmp("traced v2 mean", trace.outputs["mean"], small.mean(-1))
steps = CT.reduction_steps(trace, block=0, reduction=0)
for s in steps:
    print(CT.step_caption(s))

# %% [markdown]
# The partial sums meet in a **tree reduction** in shared memory (`block_sum`). Rows are the block's threads,
# columns the `scratch` array; light cells are read, dark cells written, arrows show the
# element each thread adds in. The stride halves each phase (4, 2, 1), each phase a `syncthreads()` barrier
# apart, so after log2(8) = 3 steps `scratch[0]` holds the row's sum, and every thread reads it.

# %%
fig = CT.reduction_diagram(trace, block=0, reduction=0)

# %% [markdown]
# **The backward, v2.** Each block makes its row's `dx` on its own, after two block sums (of `dnorm` and of
# `dnorm * norm`, the two mean terms). But `dgamma` and `dbias` are sums over *all* rows: every block adds into
# the same C floats. Below, each cell is an atomic add (`cuda.atomic.add`) into `dweight`: block 0 and block 1
# hit exactly the same elements. Without atomics, two blocks adding at once would lose one of the additions;
# with them, the order of the additions (and so the last bits of the float sum) depends on timing.

# %%
show_kernel(LNK.layernorm_backward_kernel_v2)

# %%
trace_bwd = CT.trace_layernorm("v2", small, block=8, direction="backward")
fig = CT.access_diagram(trace_bwd, "dweight", op="atomic")

# %%
o = trace_bwd.outputs
norm_small = (small - small.mean(-1, keepdims=True)) / np.sqrt(small.var(-1, keepdims=True) + 1e-5)
assert cmp("traced dweight", o["dweight"], (o["dout"] * norm_small).sum(0))
print("atomic adds per dweight element:", CT.access_grid(trace_bwd, "dweight", op="atomic").sum(0))

# %% [markdown]
# ## 6. Play
#
# **A row through layer norm.** Change the scale (multiplies every gamma) and the shift (adds to every
# beta): `norm` never moves, only `out` does. With scale 0 every channel is just its beta. Pick a channel to
# follow it through the three stages.

# %%
LayerNormExplorer(row, gamma, beta, title=f"ln_1 input x[layer=0, t={t}]")

# %% [markdown]
# **The reduction, one phase at a time.** Step through the phases (each dark cell now shows the value written);
# switch the block (row) or the sum (the second `block_sum` adds the squared deviations, for the variance).

# %%
ReductionStepper(trace)

# %% [markdown]
# ## 7. Watch: gamma and beta learn
#
# The same `ln_1` at every checkpoint of the course model's training. At step 0 gamma is all ones and beta
# all zeros (layer norm starts as pure normalising); as the loss falls, each channel picks its own scale and
# shift, and the distribution handed to attention (`out[t]`, token 3) changes with them. The bottom-right panel
# is the size of the rows coming in: the embeddings themselves are being learned too.

# %%
from gpt2lab.explain.jshtml import animation_html

frames = LN.layernorm_over_training(RUNNING_EXAMPLE, layer=0, which="ln_1", t=t)
animation_html(LN.layernorm_animation(frames))

# %% [markdown]
# ## 8. Exercise: the layer norm backward
#
# Write the backward from the cache. Inputs: `dout` and `x` (B, T, C) float32, `gamma` (C,), and the forward's
# cache `mean`, `rstd` (B, T). Return `(dx, dgamma, dbeta)` with the shapes of x, gamma and gamma. The check
# compares with PyTorch's autograd on four shapes, including rows far from mean 0 and a C that is no power of 2.

# %% tags=["exercise"]
def layernorm_backward_np(dout, x, gamma, mean, rstd):
    """Your code: rebuild norm from the cache, then dx, dgamma, dbeta."""
    raise NotImplementedError("write me, then run the check below")


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("layernorm_backward_np")

check("layernorm_backward_np", layernorm_backward_np)

# %% [markdown]
# ## 9. Puzzle: your layer norm kernel (CUDA, one block per row)
#
# Now write the v2 forward yourself. `block_sum(scratch, value)` (section 6) gives every thread of the block the
# block's total; thread `tid` takes channels `tid, tid + blockDim.x, ...`. Your kernel runs in numba's CUDA
# simulator (in a separate process) and is checked against PyTorch; one case has rows so flat that `EPS`
# matters. Names you can use: `math`, `cuda`, `float32`, `block_sum`, `BLOCK`, `EPS`.
#
# `mean = sum(x) / C`,  `rstd = 1 / sqrt(sum((x − mean)²) / C + EPS)`,  `out = (x − mean) rstd weight + bias`

# %% tags=["exercise", "puzzle"]
@cuda.jit
def layernorm_forward_kernel(out, mean, rstd, inp, weight, bias):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x                # this block's row
    tid = cuda.threadIdx.x             # thread tid takes channels tid, tid + blockDim.x, ...
    C = inp.shape[1]
    # your code: block_sum(scratch, my_partial_sum) returns the block's total to every thread (lesson 4)
    #            then out[r, i] for your channels, and one thread writes mean[r] and rstd[r]
    raise NotImplementedError


# %% tags=["check", "puzzle"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("layernorm_forward_kernel")

check("layernorm_forward_kernel", layernorm_forward_kernel)

# %% [markdown]
# Your block's shared scratch, phase by phase (the two tree reductions), and the micro GPT-2 trained with your
# kernel as every one of its layer norms, checked against PyTorch each step:

# %%
from gpt2lab.explain.puzzles import draw_puzzle, train_with

draw_puzzle("layernorm_forward_kernel", layernorm_forward_kernel)

# %%
train_with("layernorm_forward_kernel", layernorm_forward_kernel, steps=3)

# %% [markdown]
# ## What's next
#
# The layer norm's output feeds attention (lesson 3) and the MLP. Lesson 5 sends gradients back through a
# whole block, this layer norm's backward included, and checks every one of them against PyTorch.
