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
# # Lesson 3: Attention
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# Until now every token has its own vector, blind to its neighbours. **Attention** lets each token look back
# at the tokens before it and take a weighted average of what they offer, with weights computed from the
# tokens themselves: the model decides *where to look*, for every token anew. It is the only place in GPT-2
# where information moves between positions; everything else works on one token at a time.
#
# Here is one head of our trained course model reading the running example. Row `t1` is a token asking
# (the *query*), column `t2` a token answering (the *key*); the darker the cell, the more of `t2` flows
# into `t1`. The grey triangle is the future, which a token may never see. This head has learned something
# on its own: once a comma or colon has gone by, every token looks at the latest one, as if to ask which
# clause it is in.

# %%
import math

import numpy as np
import torch

from gpt2lab.explain import attention as A
from gpt2lab.explain.check import cmp
from gpt2lab.explain.jshtml import animation_html
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.gpt2 import course_model
from gpt2lab.widgets.attention import AttentionStepper

model, info = course_model()          # trained once on Shakespeare, then read from the cache
LAYER, HEAD = 2, 0                    # the head we follow through the lesson: "the latest punctuation"
steps = A.attention_steps(model, RUNNING_EXAMPLE, LAYER, HEAD)
fig = A.heatmap(steps, "weights")

# %% [markdown]
# The model is the course's tiny GPT-2: 4 layers, 4 heads each, width C = 128, so each head works with
# hs = 128 / 4 = 32 numbers per token.

# %%
print(model.config)
print(f"T = {steps.T} tokens: {steps.tokens}")

# %% [markdown]
# ## 1. Queries, keys and values
#
# The block's input is the residual stream after layer norm, `h = ln_1(x)`, one row of C numbers per token.
# One matrix multiply, `c_attn`, turns each row into three vectors of C numbers, and each head takes its own
# hs of them:
#
# * the **query** `q[t]`: what token t is looking for,
# * the **key** `k[t]`: what token t offers, to be matched against queries,
# * the **value** `v[t]`: what token t hands over when it is attended to.

# %%
h, _ = A.block_inputs(model, steps.ids, LAYER)
print("h       ", h.shape, "  (T, C)")
print("c_attn  ", tuple(model.transformer.h[LAYER].attn.c_attn.weight.shape), " (3C, C): q, k, v stacked")
print("q, k, v ", steps.q.shape, "  (T, hs) for one head")

# %%
fig = A.steps_figure(steps, names=("q", "k", "v"))

# %% [markdown]
# ## 2. Scores: every query against every key
#
# How well does query t1 match key t2? Their dot product: large when the two vectors point the same way.
# All pairs at once are one matrix product, `scores = q @ k.T`, a T × T table.

# %%
scores = steps.q @ steps.k.T
assert cmp("scores", scores, steps.scores)

# %% [markdown]
# ## 3. Why divide by √hs
#
# A dot product of length d adds up d products. If the entries of q and k have variance 1, the sum has
# variance d: the longer the head, the wider the scores. Wide scores make the softmax (next step) nearly
# one-hot, and a one-hot softmax passes almost no gradient. Dividing by √d brings the variance back to 1
# whatever the head size. Measured on random vectors:

# %%
var = A.score_variance()
for d, raw, scaled in zip(var["dims"], var["raw"], var["scaled"]):
    print(f"d = {d:5d}   var(q·k) = {raw:7.1f}   var(q·k / √d) = {scaled:.2f}")

# %%
fig = A.scale_figure(d=256)

# %% [markdown]
# ## 4. The causal mask
#
# GPT-2 learns to predict the next token, so token t may only use tokens 0..t: were it to see token t+1, it
# would copy the answer. We set every score above the diagonal to −∞; the softmax turns exp(−∞) into an
# exact 0.

# %%
T = steps.T
future = np.triu(np.ones((T, T), dtype=bool), k=1)      # True where key t2 > query t1
masked = np.where(future, -np.inf, steps.scores / math.sqrt(steps.hs))
assert cmp("masked", np.where(future, 0, masked), np.where(future, 0, steps.masked))
print("the first query sees", np.isfinite(masked[0]).sum(), "key; the last sees", np.isfinite(masked[-1]).sum())

# %% [markdown]
# ## 5. Softmax: scores become weights
#
# Each row goes through a softmax, `exp(s) / Σ exp(s)`: all weights positive, each row summing to 1. We
# subtract the row's max before `exp` (the same value, and `exp` never overflows). The model and the kernels
# call these weights `att`, and so do the figures' titles.

# %%
weights = np.exp(masked - masked.max(axis=1, keepdims=True))
weights /= weights.sum(axis=1, keepdims=True)
assert cmp("weights", weights, steps.weights)
print("row sums:", weights.sum(axis=1).round(6))

# %%
fig = A.steps_figure(steps)

# %% [markdown]
# Where does ` question` look? One row of the weights, as bars in the tokens' colours: mostly at the colon,
# the latest punctuation before it, a little at the comma, hardly anywhere else.

# %%
fig = A.query_bar(steps, query=T - 2)

# %% [markdown]
# ## 6. The weighted sum of values
#
# Each token's output is the average of the values, weighted by its row: `out = weights @ v`, (T, hs).
# Compare with what the model itself computed for this head in its forward pass (caught with a hook, just
# before `c_proj`):

# %%
out = weights @ steps.v
assert cmp(f"out[layer={LAYER}, head={HEAD}]", out, A.model_head_output(model, RUNNING_EXAMPLE, LAYER, HEAD))

# %% [markdown]
# ## 7. Many heads
#
# A layer runs several heads side by side, each with its own slice of q, k, v, so each can look for
# something different. Their outputs are concatenated back to C numbers and mixed by one more matrix,
# `c_proj`. Every head has its colour; layers run top to bottom. Look for the punctuation heads (ours, layer 2
# head 0, and two of the last layer's), heads that spread their weight evenly over the past, and heads that
# keep going back to the first tokens.

# %%
for layer in range(model.config.n_layer):
    fig = A.all_heads_figure(model, RUNNING_EXAMPLE, layer)

# %% [markdown]
# ## 8. The reference in a few lines of PyTorch
#
# The whole of it, all heads at once: this is what `gpt2lab.gpt2.model.CausalSelfAttention` does, and
# what every kernel below is checked against.

# %%
def attention(qkv, n_head):
    """qkv: (B, T, 3C) -> (B, T, C), causal multi-head attention."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (x.view(B, T, n_head, C // n_head).transpose(1, 2) for x in qkv.split(C, dim=2))  # (B, NH, T, hs)
    att = q @ k.transpose(-2, -1) / math.sqrt(C // n_head)                                     # (B, NH, T, T)
    att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    att = torch.softmax(att, dim=-1)
    return (att @ v).transpose(1, 2).reshape(B, T, C)                                          # heads side by side


qkv, y = A.layer_qkv(model, RUNNING_EXAMPLE, LAYER)     # the model's own input to attention, and its output
assert cmp("reference vs model", attention(torch.from_numpy(qkv), model.config.n_head), y)

# %% [markdown]
# **Backward, and what to keep.** With P = weights and dout the gradient of the output: dv = Pᵀ dout, dP =
# dout vᵀ, then the softmax backward dS = P ⊙ (dP − rowsum(P ⊙ dP)), and dq = dS k / √hs, dk = dSᵀ q / √hs.
# Every line needs P, the softmax *output*: the forward keeps it, a (B, NH, T, T) tensor. That table grows
# with T², and is what the online softmax below learns to do without.
#
# ## 9. The kernels: naive, blas, then online softmax
#
# `gpt2lab.kernels.attention` has numba kernels for the CPU (and CUDA, checked the same way on a GPU):
#
# * **naive** (`attention_forward(..., version="rows")`): for each query, all its scores, the max, the sum
#   of exps, the weights, then the weighted sum of v. It stores the T × T weights for the backward.
# * **blas** (`attention_forward`, the default, what the model runs): the very same math per head as three
#   matrix products, S = Q Kᵀ, the row softmax, O = P V, each one BLAS call. It computes the masked upper
#   triangle only to throw it away, and is still several times faster: BLAS is that much better at
#   multiply-adds than our scalar loops.
# * **online** (`attention_forward_online`): one pass over the keys, never a full row of scores; it keeps
#   only one number per query, the log-sum-exp `lse`, from which the backward can rebuild any weight.
#
# Both, forward and backward, against PyTorch (in float64) on GPT-2's shape and awkward ones:

# %%
from gpt2lab.kernels.attention import attention_forward, attention_forward_online
from gpt2lab.kernels.check import check_op, format_table, get_spec

rows = check_op(get_spec("attention"), "cpu")
print(format_table(rows))
assert all(r.ok for r in rows)

# %% [markdown]
# The CUDA versions (v1 naive, v2 online softmax, and the online forward with lse) go through the same harness
# where there is a GPU:

# %%
from numba import cuda

if cuda.is_available():
    print(format_table(check_op(get_spec("attention"), "cuda")))
else:
    print("No CUDA GPU here. On a machine with one: gpt2lab verify --device cuda --op attention")

# %% [markdown]
# And on our real input: the model's qkv at our layer through the three kernels, compared with the model's output.

# %%
n_head = model.config.n_head
B, T, C = y.shape
out_naive, att = np.zeros((B, T, C), np.float32), np.zeros((B, n_head, T, T), np.float32)
attention_forward(out_naive, att, qkv, n_head, version="rows")
out_blas = np.zeros((B, T, C), np.float32)
attention_forward(out_blas, np.zeros_like(att), qkv, n_head)
out_online, lse = np.zeros((B, T, C), np.float32), np.zeros((B, n_head, T), np.float32)
attention_forward_online(out_online, lse, qkv, n_head)
assert cmp("naive kernel", out_naive, y)
assert cmp("blas kernel", out_blas, y)
assert cmp("online kernel", out_online, y)
assert cmp(f"att[head={HEAD}]", att[0, HEAD], steps.weights)

# %% [markdown]
# ### How can a softmax be online?
#
# The softmax needs the row's max and the sum of all its exps before any weight is known, so it seems to need
# the whole row first. The trick: read the keys in blocks and keep three running things, the max `m` so far,
# the sum `l = Σ exp(s − m)` so far, and the accumulator `acc = Σ exp(s − m) v` so far. When a block brings a
# bigger max m', everything summed so far is rescaled by `exp(m − m')`, because
# exp(s − m) · exp(m − m') = exp(s − m'). Nothing is approximated. Below, the last query's scores read 4
# keys at a time, with v = the identity so that `acc / l` is the weights row itself:

# %%
row = steps.masked[-1]
trace = A.online_softmax_trace(row, block=4)
for st in trace:
    print(f"keys {st.start:2d}..{st.stop - 1:2d}:  m = {st.m:7.3f}   l = {st.l:8.4f}")
assert cmp("online == softmax", trace[-1].acc / trace[-1].l, A.softmax_rows(row.astype(np.float64)),
    atol=1e-12, rtol=1e-12)

# %%
fig = A.online_softmax_figure(trace, row)

# %% [markdown]
# With the real values instead of the identity, the same walk ends on this head's output for that token:

# %%
trace_v = A.online_softmax_trace(row, block=4, v=steps.v)
assert cmp("online out[-1]", trace_v[-1].acc / trace_v[-1].l, steps.out[-1])

# %% [markdown]
# The model's CUDA kernels take the same walk: `_online_row` is the part every query's thread runs (here one key
# at a time, where the trace above took 4; `_score` is q·k times 1/√hs). Three running numbers and no stored row:

# %%
from gpt2lab.explain.showkernel import show_kernel
from gpt2lab.kernels import attention as ATT

show_kernel(ATT._online_row)

# %% [markdown]
# **Timings** (measured here, best of 3, GPT-2 small's attention shape B=4, T=256, C=768, 12 heads).
# PyTorch's fused `scaled_dot_product_attention` is the bar to reach; naive and online are plain loops
# compiled by numba, blas hands the same math to the matrix-multiply library.
# On a CPU the online kernel's gain is mostly memory: its cache for the backward is one number per query
# instead of T. On a GPU that is the whole game (flash attention): the T × T table never travels to memory.

# %%
t = A.kernel_timings(B=4, T=256, C=768, n_head=12, repeat=3)
for name in ("torch", "naive", "blas", "online"):
    print(f"{name:7s} {1e3 * t[name]:8.2f} ms   ({t[name] / t['torch']:.1f}x torch)")
print(f"softmax cache for the backward: att {t['att_bytes'] / 2**20:.1f} MiB (naive) vs lse "
      f"{t['lse_bytes'] / 2**10:.0f} KiB (online)")

# %% [markdown]
# ## 10. Play
#
# Pick a layer, a head and a query token; step through the intermediates (`show`): the heatmap frames the
# query's row, the bars show it. Type your own text (at most 128 tokens, the model's context).

# %%
AttentionStepper(model, RUNNING_EXAMPLE, layer=LAYER, head=HEAD)

# %% [markdown]
# ## 11. Watch: a head learns where to look
#
# The same head at every checkpoint of the course model's training. At step 0 the weights are nearly
# uniform (tiny random weights give scores near 0, so each query spreads evenly over its past). By step 100
# the head has found the punctuation: every token after the comma looks at the comma, and after the colon
# most of each row moves on to the colon, the *latest* punctuation mark, and stays there to the end.

# %%
frames = A.attention_over_training(RUNNING_EXAMPLE, LAYER, HEAD)
anim = A.attention_animation(frames)
animation_html(anim)

# %% [markdown]
# ## 12. Exercise: the causal mask and softmax
#
# Write the heart of attention for one head. `scaled` is a (T, T) float32 array of scaled scores; return the
# weights: −∞ above the diagonal (key t2 > query t1), then a softmax along each row. Mind large scores:
# `exp(200)` overflows float32. The check compares with PyTorch on four inputs.

# %% tags=["exercise"]
def causal_softmax(scaled):
    """Your code: mask the future, then softmax each row. scaled: (T, T) -> weights (T, T)."""
    raise NotImplementedError("write me, then run the check below")


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("causal_softmax")

check("causal_softmax", causal_softmax)

# %% [markdown]
# ## What's next
#
# Attention's output is added to the residual stream, then each token goes through a small MLP on its own.
# Both are preceded by a layer norm: lesson 4 looks at what it does to every row, and how its backward works.
