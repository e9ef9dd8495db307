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
# # Lesson 5: Backpropagation
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# Training needs one number per weight: how much the loss would change if that weight moved a little, the
# **gradient**. Backpropagation gets all of them in one sweep backwards through the computation: every
# operation knows its own *local* derivative, and the chain rule multiplies them along each path, adding
# where paths meet.
#
# We build that idea twice: first for single numbers, with a graph you can see; then for one whole
# transformer block of our Shakespeare model, every gradient by hand with our kernels and checked against
# PyTorch. Forward is drawn in blue, gradients in orange, as in every lesson.

# %%
import numpy as np
import torch
from IPython.display import display

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain import backprop as BP
from gpt2lab.explain.autograd import Value, neuron
from gpt2lab.explain.check import cmp
from gpt2lab.explain.gradflow import gradflow_animation, gradflow_over_training, stream_grads
from gpt2lab.explain.graph import backward_animation, draw_graph
from gpt2lab.explain.jshtml import animation_html
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.gpt2 import course_checkpoints, course_model
from gpt2lab.widgets.backprop import BackpropStepper, GradFlowView

model, info = course_model()   # the tiny GPT-2 trained on Shakespeare (trained once, then loaded from the cache)
enc = gpt2_encoding()
ids = np.array(enc.encode_ordinary(RUNNING_EXAMPLE))
print(RUNNING_EXAMPLE, "->", len(ids), "tokens")

# %% [markdown]
# ## 1. One neuron, one graph
#
# `out = tanh(x1*w1 + x2*w2 + b)`. Each box is a `Value`: its number (`data`) and, after `backward()`,
# d out / d itself (`grad`). Each operation stores a tiny closure, its *local backward*: `+` passes the
# gradient through unchanged, `*` hands each input the other input's value times the gradient,
# `tanh` multiplies by `1 - tanh²`. `backward()` visits the nodes in reverse topological order, so a node's
# gradient is complete before it is passed on.

# %%
x1, x2 = Value(2.0, "x1"), Value(0.0, "x2")
w1, w2, b = Value(-3.0, "w1"), Value(1.0, "w2"), Value(6.8813735870195432, "b")
out = neuron([x1, x2], [w1, w2], b)
out.backward()
fig = draw_graph(out)

# %% [markdown]
# Watch the gradient arrive, one local backward at a time (a dot means no gradient has arrived yet):

# %%
animation_html(backward_animation(out))

# %% [markdown]
# ## 2. Check against PyTorch
#
# The same expression with `torch` tensors, and autograd's gradients next to ours. `cmp` prints whether the
# two are exactly equal, close, and the largest difference: the one-line check every lesson uses.

# %%
t = {n: torch.tensor(v.data, dtype=torch.float64, requires_grad=True) for n, v in
     dict(x1=x1, x2=x2, w1=w1, w2=w2, b=b).items()}
torch.tanh(t["x1"] * t["w1"] + t["x2"] * t["w2"] + t["b"]).backward()
for v in (x1, x2, w1, w2, b):
    assert cmp(f"d{v.label}", v.grad, t[v.label].grad)

# %% [markdown]
# A value used twice gets a gradient from each use, which is why every local backward *adds* (`+=`):

# %%
a = Value(3.0, "a")
y = a * a + a          # dy/da = 2a + 1 = 7
y.backward()
assert cmp("da", a.grad, 7.0)

# %% [markdown]
# ### Play
#
# Type any expression over `a`, `b`, `c` (with `+ - * / **`, `.tanh() .exp() .relu() .log()`), set the
# inputs, and step backwards through it. Try `a*a` or `(a + b) * (a - b)`: where two paths leave a node, two
# gradients come back and add.

# %%
BackpropStepper("(a*b + c).tanh() * a", "a=2, b=-3, c=6.5")

# %% [markdown]
# ## 3. The same, for a whole transformer block
#
# Tensors instead of numbers, but the same story. The forward of one GPT-2 block, and what each backward
# will need cached (llm.c's list):
#
# | forward | shape | cached for backward |
# |---|---|---|
# | `ln1 = layernorm(x)` | (B, T, C) | `mean1, rstd1` |
# | `qkv = ln1 @ Wqkv.T + b` | (B, T, 3C) | `ln1` (the matmul's input) |
# | `atty = attention(qkv)` | (B, T, C) | `att`, the softmax (B, NH, T, T) |
# | `res2 = x + atty @ Wproj.T + b` | (B, T, C) | `atty` |
# | `ln2 = layernorm(res2)` | (B, T, C) | `mean2, rstd2` |
# | `fchg = gelu(ln2 @ Wfc.T + b)` | (B, T, 4C) | `ln2`, `fch` |
# | `out = res2 + fchg @ Wfcproj.T + b` | (B, T, C) | `fchg` |
#
# Backward runs the list bottom to top. Each op's backward takes d loss / d its output and *adds* d loss /
# d each input (and weight) into zeroed buffers, so the residual connections need nothing special: x and
# res2 each receive one gradient through the branch and one straight through, and they add up. These are
# the ops we run, our numba kernels:

# %%
print({op: kind for op, (_, _, kind) in BP.block_ops().items()})

# %% [markdown]
# Let's send the running example through the trained model and take block 0. Its input `x` is the
# embeddings of the sentence, and the upstream gradient `dout` is the real d loss / d (block 0's output)
# that the rest of the network sends back when the model predicts each next token.

# %%
loss, xs, dxs = stream_grads(model, ids[None, :-1], ids[None, 1:])
x, dout = xs[0], dxs[1]            # block 0: input x_0, upstream gradient dL/dx_1
params = BP.block_params(model, layer=0)
n_head = model.config.n_head
cache = BP.block_forward(x, params, n_head)
grads = BP.block_backward(dout, cache, params, n_head)
print(f"loss {loss:.3f}; x {x.shape}, qkv {cache['qkv'].shape}, att {cache['att'].shape}")

# %% [markdown]
# Where does the gradient go? The size of d loss / d activation at every token of the sentence, from the
# block's output (top) back to its input (bottom), on a log scale. It jumps where it passes a layernorm
# backwards: from `dln2` to `dres2` about fifteenfold, because a layernorm's backward multiplies by `rstd` and
# the rows it normalises are small (in block 0 the residual stream is little more than the embeddings); the
# residual connection then carries that large `dres2` straight on to `dx`.

# %%
from gpt2lab.explain.tokenize import token_labels

fig = BP.token_grad_figure(grads, ids[:-1], token_labels(ids[:-1], enc))

# %% [markdown]
# Now torch autograd of the very same block (in float64), and every gradient side by side, from the output
# back to the input, in the order backward produces them:

# %%
ref = BP.block_reference(x, params, n_head, dout)
assert cmp("out", cache["out"], ref["out"])
assert all([cmp(name, grads[name], ref[name]) for name in BP.gradient_names()])

# %% [markdown]
# The gradient we computed for the block's input is exactly the one the *whole* model's autograd put on the
# embeddings: our block slots into the real backward pass.

# %%
assert cmp("dx vs model", grads["dx"], dxs[0])

# %% [markdown]
# A few one-liners worth looking at: the attention's input gradient is three gradients side by side
# (q, k, v), and the last layernorm's weight gradient sums over every position.

# %%
C = model.config.n_embd
assert cmp("dq", grads["dqkv"][..., :C], ref["dqkv"][..., :C])
assert cmp("dv", grads["dqkv"][..., 2 * C:], ref["dqkv"][..., 2 * C:])
assert cmp("dln_2.weight", grads["dln_2.weight"], ref["dln_2.weight"])

# %% [markdown]
# ## 4. Watch: gradient flow during training
#
# How big are the gradients, layer by layer? For a fixed batch of Shakespeare, at every saved checkpoint of
# the course model: on the left, the norm of d loss / d W for each layer's parameter groups (log scale); on
# the right, the gradient on the residual stream entering each block. Layers run left to right.

# %%
from gpt2lab.datasets import load_tokens

xb, yb = load_tokens().batch("val", 4, 64, np.random.default_rng(0))   # a fixed batch of Shakespeare
flow = gradflow_over_training(course_checkpoints(), xb, yb)
animation_html(gradflow_animation(flow))

# %% [markdown]
# Things to notice:
#
# - **Step 0**: the loss is ln(50257) ≈ 10.8 (a uniform guess), and every layer gets gradients of about the
#   same size; along the residual stream the gradient barely shrinks from `x4` back to `x0`. The `+` in
#   `x + f(x)` passes the gradient through unchanged, the same rule as in the neuron above.
# - **Later**: block 0 learns to make the stream large (its spread grows from about 0.08 to about 9), and
#   every layernorm after it divides by that spread, in the backward too (`dx` is multiplied by `rstd`). So the
#   gradients on `x1`..`x4` and on layers 1-3 drop about a hundredfold, while `x0`, the small embeddings, still
#   gets a large one. AdamW divides each update by its gradient's running size, so training carries on.
# - The layernorm groups (`ln_1`, `ln_2`) have few parameters, so their norms stay small.
#
# The slider below shows the same frames, with the embedding tables' gradient norms (watch `wte` at step 25).

# %%
GradFlowView(flow)

# %% [markdown]
# ## 5. Exercise: write `backward()` yourself
#
# Section 1 called `out.backward()`. Now write it: `backward(root)` must fill `.grad` of every `Value` the
# root depends on. Each node already knows its own local step (`node._backward()` adds its `grad` into its
# inputs' `grad`s, and `node._prev` are its inputs); what is left is the order:
#
# - put every node after its inputs (depth first from the root, each node once: keep a set of the nodes seen),
# - set `root.grad = 1.0` (dL/dL),
# - call `_backward()` for the nodes in *reverse* order, so a node passes its gradient on only once every
#   path into it has delivered (the `a*a + a` above needed both).
#
# The check builds four expressions (a value used twice, a node reached by two paths, the neuron) and
# compares your gradients with PyTorch's autograd.

# %% tags=["exercise"]
def backward(root):
    """Your code: fill .grad of every Value that root depends on."""
    raise NotImplementedError("write me, then run the check below")


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("backward")

check("backward", backward)

# %% [markdown]
# ## What's next
#
# We can now get every gradient of the model. Lesson 8 uses them: AdamW turns gradients into updates, and
# we watch the model that continues *"To be, or not to be"* learn, step by step.
