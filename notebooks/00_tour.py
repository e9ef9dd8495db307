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
# # A five-minute tour of gpt2lab
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# One sentence, all the way through GPT-2: cut it into tokens, run it through a small GPT-2 trained on
# Shakespeare, look at what one attention head does, and check our own numba kernels against PyTorch on it.
# Each step has a lesson of its own (01–06) that builds it from scratch.

# %%
from IPython.display import HTML, display

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain.tokenize import spans_html, token_spans

enc = gpt2_encoding()
text = RUNNING_EXAMPLE
ids = enc.encode(text)
print(text)
print(ids)

# %% [markdown]
# ## 1. Tokens (lesson 1)
# GPT-2 reads integers, not letters: each coloured box is one token. A token keeps its colour in every lesson.

# %%
display(HTML(spans_html(token_spans(text, enc))))

# %% [markdown]
# ## 2. Through the model (lessons 2–6)
# The course model is a 4-layer GPT-2 trained for a few minutes on Shakespeare (trained once, then cached).
# Given our sentence up to " question" (its full stop left off), what does it expect next?

# %%
import torch

from gpt2lab.gpt2 import course_model

model, info = course_model()
with torch.no_grad():
    logits, _ = model(torch.tensor([ids]))
probs = torch.softmax(logits[0, -2], dim=-1)           # position -2 is " question": what comes after it
top = torch.topk(probs, 5)
print(f"after {enc.decode(ids[:-1])!r}, the model expects:")
for p, i in zip(top.values, top.indices):
    print(f"  {enc.decode([int(i)])!r:12} {float(p):.1%}")

# %% [markdown]
# ## 3. One attention map (lesson 3)
# Each row is a token looking back at the tokens before it (never ahead: the causal mask, the grey triangle);
# darker blue means more attention.

# %%
from gpt2lab.explain.attention import attention_steps, heatmap

fig = heatmap(attention_steps(model, text, layer=1, head=2), "weights")   # fig = ...: drawn once, not twice

# %% [markdown]
# ## 4. One live parity check (lessons 4–6)
# The same model on our numba kernels (`KernelGPT2`, flat buffers like llm.c), one training step on our
# sentence, every activation, gradient and AdamW update compared with PyTorch (float64) op by op.

# %%
import numpy as np

from gpt2lab.gpt2.kernel_model import KernelGPT2
from gpt2lab.gpt2.parity import ParityMonitor

kernel_model = KernelGPT2.from_torch(model)
x, y = np.array([ids[:-1]]), np.array([ids[1:]])
report = ParityMonitor(kernel_model).verify_step(x, y, lr=1e-3)
summary = report.summary()
print(f"{summary['checked']} tensors checked against PyTorch, {summary['failed']} failed")
for op, worst in summary["worst"].items():
    print(f"  {op:13s} " + "  ".join(f"{d}: ours/torch32 {e:.2g}" for d, e in worst.items()))
assert report.ok

# %% [markdown]
# ## Where next
# - `01_tokenizing` — bytes, BPE merges, your own tokenizer equal to GPT-2's
# - `02_embeddings` — token and position vectors, the lookup and its scatter-add backward
# - `03_attention` — Q, K, V, the mask, softmax, heads; naive vs online-softmax kernels
# - `04_layernorm` — the forward, the backward derived, CPU and CUDA kernels, a traced GPU reduction
# - `05_backprop` — a tiny autograd engine, then one whole transformer block by hand
# - `06_mlp` — the MLP and the matmul: GELU, tiles, your own kernels plugged into GPT-2
# - `07_logits_sampling` — logits, loss and sampling; find the broken kernel
# - `08_train_gpt2` — train GPT-2 on the kernels with every kernel checked live
