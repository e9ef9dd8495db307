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
# # Lesson 7: Logits, loss and sampling
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# The last block leaves one vector of C numbers per position. To predict the next token GPT-2 scores every one
# of the 50,257 tokens against it — with the **same** matrix that turned tokens into vectors in lesson 2
# (weight tying) — turns the scores into probabilities with a softmax, and either learns from them
# (cross-entropy, whose gradient is simply `probs − onehot`) or draws the next token from them (sampling).
#
# ```
#   x (T, C) ──ln_f──▶ (T, C) ──@ wte.T──▶ logits (T, V) ──softmax──▶ probs ──┬─▶ loss = −log probs[target]
#                                                                             └─▶ sample the next token
# ```

# %%
import numpy as np
import torch
from numba import cuda, float32

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain import sampling as S
from gpt2lab.explain.brokenkernel import broken_run
from gpt2lab.explain.check import cmp
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain.puzzles import draw_puzzle, train_with
from gpt2lab.gpt2 import course_model
from gpt2lab.widgets import SamplingLab

model, info = course_model()   # the tiny GPT-2 trained on Shakespeare (trained once, then loaded from the cache)
enc = gpt2_encoding()
ids = np.array(enc.encode_ordinary(RUNNING_EXAMPLE))
print(RUNNING_EXAMPLE, "->", len(ids), "tokens")

# %% [markdown]
# ## 1. Unembedding and weight tying
#
# `logits = ln_f(x) @ wte.T`: the score of token v is the dot product of the final vector with token v's own
# embedding row. GPT-2 does not learn a separate output matrix: `lm_head.weight` *is* `wte.weight` (one tensor,
# 50257 × C — most of the tiny model's parameters). Check both claims on the running sentence:

# %%
print("lm_head.weight is wte.weight:", S.tied_weights(model))
with torch.no_grad():
    x = model.transformer.wte(torch.as_tensor(ids)) + model.transformer.wpe(torch.arange(len(ids)))
    for block in model.transformer.h:
        x = block(x[None])[0]
    logits_by_hand = model.transformer.ln_f(x) @ model.transformer.wte.weight.T
    logits, _ = model(torch.as_tensor(ids)[None])
cmp("logits", logits_by_hand, logits[0])

# %% [markdown]
# Since the gradient of `wte` arrives from two places — the lookup at the bottom and the scores at the top — the
# model's backward *adds* the encoder's scatter-add on top of `lm_head`'s share (`dwte += ...`).
#
# ## 2. Softmax, cross-entropy and the fused backward
#
# $$p = \mathrm{softmax}(z),\qquad \mathrm{loss} = -\log p_{target},\qquad
#   \frac{\partial\,\mathrm{loss}}{\partial z_v} = p_v - [v = target]$$
#
# The softmax's Jacobian and the log's derivative cancel into `probs − onehot`: the kernel never builds the
# V × V Jacobian. Check it against autograd at the last position of the sentence (target: the token after it,
# here the newline GPT-2 would see next):

# %%
target = enc.encode_ordinary("\n")[0]
steps = S.crossentropy_steps(logits[0, -1].numpy(), target)
print(f"loss = -log p[target] = {steps['loss']:.4f}")
cmp("dlogits = probs - onehot", steps["dlogits"], steps["autograd"])

# %% [markdown]
# ## 3. Puzzle: your row softmax (CUDA, a shared-memory reduction)
#
# One block per row; thread `tid` takes channels `tid, tid + blockDim.x, ...`. Two tree reductions in shared
# memory: the row's max (so `exp` never overflows — one case has logits near 500), then the sum of
# `exp(x − max)`. Every thread must see `scratch` complete before reading it: `cuda.syncthreads()`. Names you can
# use: `math`, `cuda`, `float32`, `BLOCK` (the scratch size, 256).
#
# `out[r, i] = exp(inp[r, i] − m) / sum_j exp(inp[r, j] − m)`,  `m = max_j inp[r, j]`

# %% tags=["exercise", "puzzle"]
@cuda.jit
def softmax_kernel(out, inp):
    scratch = cuda.shared.array(BLOCK, float32)   # one float per thread of the block, shared by all of them
    r = cuda.blockIdx.x                           # this block's row
    tid = cuda.threadIdx.x                        # thread tid takes channels tid, tid + blockDim.x, ...
    C = inp.shape[1]
    # your code: 1. the row max (each thread's, then a tree in scratch: stride blockDim.x // 2, halving)
    #            2. the sum of exp(x - max), the same way   3. out[r, i] = exp(inp[r, i] - max) / sum
    # every thread must see scratch complete before reading it: cuda.syncthreads()
    raise NotImplementedError


# %% tags=["check", "puzzle"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("softmax_kernel")

check("softmax_kernel", softmax_kernel)

# %%
draw_puzzle("softmax_kernel", softmax_kernel)    # block 0's scratch, phase by phase: the tree halves

# %% [markdown]
# Plugged in, your softmax computes the model's `probs` (and the loss from them): the `crossentropy` parity
# rows are yours.

# %%
train_with("softmax_kernel", softmax_kernel, steps=3)

# %% [markdown]
# ## 4. The sampling lab
#
# The course model's distribution over the token after the context. **Temperature** divides the logits
# (below 1 sharpens, above 1 flattens, 0 is greedy); **top-k** keeps the k most likely tokens; **top-p**
# keeps the smallest set of likely tokens whose probabilities reach p. Grey outlines are the raw
# probabilities, coloured bars what the sampler draws from. **generate** writes text with those settings.

# %%
lab = SamplingLab(model)
lab

# %% [markdown]
# ## 5. Puzzle: the embeddings' backward, with atomics
#
# `dwte[inp[b, t], c] += dout[b, t, c]` and `dwpe[t, c] += dout[b, t, c]`, one thread per `(b, t, c)`. In our
# sentence " be" occurs twice: two threads add into the same row of `dwte` at once, and a plain `+=` (read, add,
# write) can lose one of the adds. `cuda.atomic.add(array, (row, col), value)` makes each add indivisible; the
# check reports a race if two threads write one element without it.

# %% tags=["exercise", "puzzle"]
@cuda.jit
def encoder_backward_kernel(dwte, dwpe, dout, inp):
    B, T, C = dout.shape
    e = cuda.grid(1)          # one thread per (b, t, c): e = (b * T + t) * C + c
    # your code: add dout[b, t, c] into dwte[inp[b, t], c] and dwpe[t, c] -- a repeated token (" be" occurs
    # twice) makes two threads add into one element: cuda.atomic.add(array, (row, col), value)
    raise NotImplementedError


# %% tags=["check", "puzzle"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("encoder_backward_kernel")

check("encoder_backward_kernel", encoder_backward_kernel)

# %%
draw_puzzle("encoder_backward_kernel", encoder_backward_kernel)

# %%
train_with("encoder_backward_kernel", encoder_backward_kernel, steps=3)

# %% [markdown]
# ## 6. Find the broken kernel
#
# One kernel of the model below is secretly wrong (one of the classic bugs in `gpt2lab.gpt2.faults`). It trains
# one step with the live check; the table sums up the parity rows per op, **in the order the kernels finish
# their tensors**: the forward pass, then the backward from the loss down to the embeddings, then AdamW. A
# teacher can pick the fault: `FAULT = "gelu_backward_off"` (`gpt2lab train --inject-fault list` lists them);
# `None` draws one with `SEED`.

# %%
FAULT, SEED = None, 7
run = broken_run(FAULT, seed=SEED)
run

# %% [markdown]
# **Exercise.** Write `broken_op(rows)`: given the parity rows of a step in pass order (dicts with `"op"`,
# `"tensor"`, `"direction"`, `"ratio"` — our error over PyTorch float32's — and `"ok"`), return the name of the op
# whose kernel is broken. Careful: a wrong tensor makes everything computed from it wrong too, sometimes by more.
# The check tries it on steps with three different broken kernels.

# %% tags=["exercise"]
def broken_op(rows):
    # your code: which row tells you the broken op?
    raise NotImplementedError


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("broken_op")

check("broken_op", broken_op)

# %% [markdown]
# The answer for the run above (for the teacher — look after you have named it):

# %%
print(f"{run.answer.op}: {run.answer.doc}  (fault {run.answer.name})")
