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
# # Lesson 2: Embeddings
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# Lesson 1 turned our sentence into token ids. A network needs vectors, so GPT-2 keeps two learned tables:
# `wte`, one row of C numbers per token in the vocabulary, and `wpe`, one row per position in the context.
# The vector for token `t` of the input is simply their sum, `x[t] = wte[ids[t]] + wpe[t]`: *what* the token
# is, plus *where* it stands.
#
# Below, the running example through the tables of our course model (a tiny GPT-2 trained on
# Shakespeare; the first time you run this it trains, once, in a minute or two). Each row is one token, in its
# colour from lesson 1; red is positive, blue negative.

# %%
import numpy as np

from gpt2lab.datasets import gpt2_encoding, load_tokens
from gpt2lab.explain import embeddings as E
from gpt2lab.explain.check import cmp
from gpt2lab.explain.gradflow import stream_grads
from gpt2lab.explain.jshtml import animation_html
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain.tokenize import token_labels
from gpt2lab.gpt2 import course_checkpoints, course_model
from gpt2lab.widgets.embeddings import NeighbourExplorer, PositionSimilarityView

model, info = course_model()        # trained once, then read from the cache
enc = gpt2_encoding()
ids = np.array(enc.encode_ordinary(RUNNING_EXAMPLE))
labels = token_labels(ids, enc)
wte = model.transformer.wte.weight.detach().numpy()   # (V, C)
wpe = model.transformer.wpe.weight.detach().numpy()   # (maxT, C)
print(f"wte {wte.shape}, wpe {wpe.shape}; the sentence is {len(ids)} tokens: {labels}")
fig = E.embedding_figure(wte, wpe, ids, labels)

# %% [markdown]
# ## 1. A lookup is a matrix product
#
# Write token `ids[t]` as a **one-hot** row: V zeros with a single 1 at column `ids[t]`. Multiplying it by
# `wte` picks out exactly row `ids[t]`. So the embedding is an ordinary linear layer whose input happens to
# be one-hot; the lookup is just the fast way to compute it (copy one row instead of V·C multiply-adds).

# %%
onehot = E.one_hot(ids, wte.shape[0])          # (T, V)
print(onehot.shape, "ones per row:", onehot.sum(1)[:5], "...")
assert cmp("onehot @ wte", onehot @ wte, wte[ids])

# %% [markdown]
# ## 2. The backward is a scatter-add
#
# Since `x_tok = onehot @ wte`, the matmul rule gives `dwte = onehot.T @ dx`: row `v` of `dwte` is the sum of
# `dx[t]` over every position where token `v` occurs. Token ` be` occurs twice in our sentence, so its row
# gets *two* gradients added; the other 50,000-odd rows get exactly zero. The position table is simpler:
# `dwpe[t] = dx[t]` (summed over the batch).
#
# Here `dx` is the real gradient d loss / d x that the trained model sends back into the embeddings when it
# predicts each next token of the sentence.

# %%
loss, xs, dxs = stream_grads(model, ids[None, :-1], ids[None, 1:])   # predict token t+1 from tokens <= t
x_ids, dx = ids[:-1], dxs[0][0]                                    # (T, C): dL/dx for the first T tokens
fig = E.scatter_add_figure(dx, x_ids, labels[:-1])

# %%
V, maxT = wte.shape[0], wpe.shape[0]
dwte, dwpe = E.scatter_add_backward(dx, x_ids, V, maxT)       # the loop: dwte[ids[t]] += dx[t]
assert cmp("dwte vs onehot.T@dx", dwte, E.one_hot(x_ids, V).T @ dx)
be = enc.encode_ordinary(" be")[0]
assert cmp("dwte[' be']", dwte[be], dx[1] + dx[6])               # ' be' stands at positions 1 and 6
print("rows of dwte that are not zero:", np.flatnonzero(np.abs(dwte).sum(1)).size, "of", V)

# %% [markdown]
# ## 3. The reference in PyTorch
#
# `torch.nn.functional.embedding` and autograd do the same (in one line each); our numpy versions agree.

# %%
ref = E.torch_encoder(wte, wpe, x_ids, dx)
assert cmp("x", E.embed(wte, wpe, x_ids), ref["x"])
assert cmp("dwte", dwte, ref["dwte"])
assert cmp("dwpe", dwpe, ref["dwpe"])

# %% [markdown]
# ## 4. The kernel
#
# `gpt2lab.kernels.encoder` does the same in numba, llm.c style: the caller allocates the output, the
# forward writes one `(b, t)` row per iteration, the backward *adds* into `dwte` and `dwpe` (a repeated token
# must never overwrite its first gradient). Run it on the running example and check it against PyTorch:

# %%
from gpt2lab.kernels.encoder import encoder_backward, encoder_forward

inp = x_ids[None].astype(np.int32)                             # (B=1, T) int32
out = np.zeros((1, len(x_ids), wte.shape[1]), np.float32)
encoder_forward(out, inp, wte, wpe)
k_dwte, k_dwpe = np.zeros_like(wte), np.zeros_like(wpe)
encoder_backward(k_dwte, k_dwpe, dx[None].astype(np.float32), inp)
assert cmp("encoder out", out[0], ref["x"])
assert cmp("encoder dwte", k_dwte, ref["dwte"])
assert cmp("encoder dwpe", k_dwpe, ref["dwpe"])

# %% [markdown]
# And the harness that checks every kernel, on GPT-2-sized and awkward shapes (float64 PyTorch reference):

# %%
from gpt2lab.kernels.check import check_op, format_table, get_spec

rows = check_op(get_spec("encoder"), "cpu")
print(format_table(rows))
assert all(r.ok for r in rows)

# %% [markdown]
# ## 5. Play: which tokens live close together?
#
# After training, tokens used alike get rows pointing alike. Type a word to see its nearest neighbours by
# cosine similarity (the angle between rows, ignoring their length). Only tokens seen at least 20 times in
# training are searched: a row the model never trained is still random noise.

# %%
counts = E.token_counts(load_tokens().train, V)
seen = np.flatnonzero(counts >= 20)
NeighbourExplorer(wte, enc, candidates=seen, counts=counts, text="the")

# %% [markdown]
# `the` finds `a`, `his`, `your`, `my`, `thy`: words that can stand in the same place in a sentence. Try `.`
# (the other punctuation), `he`, `my`, `thou`, then `king` or `night`: the model is tiny and trained for a
# minute or two, so rarer words have rough neighbours. (GPT-2 small, trained for weeks, finds `queen`,
# `prince`, `kings` for `king`.)
#
# ## 6. Watch: the table organises itself
#
# The 60 most frequent words of Shakespeare, their `wte` rows projected to 2-D with PCA at every checkpoint of
# training. Each frame is rotated onto the next (PCA's axes have no fixed sign), so points move only when the
# embeddings do. At step 0 the rows are random; watch groups form.

# %%
words = E.frequent_tokens(counts, enc, n=60)
steps, wte_rows, wpes = E.checkpoint_tables(course_checkpoints(), words)   # (F, 60, C), (F, maxT, C)
coords = E.aligned_pca(wte_rows)                                            # (F, 60, 2)
animation_html(E.pca_animation(coords, words, token_labels(words, enc), steps))

# %% [markdown]
# ## 7. Positions
#
# The cosine similarity of every pair of position rows. Nothing tells the model that position 5 is next to
# position 6: `wpe` starts random (step 0: about 0 everywhere but the diagonal) and only learns from use. In
# GPT-2 small, trained for weeks, nearby positions end up alike: a wide dark-red band along the diagonal. Our
# tiny model, after 500 steps, has only begun: its rows drift towards a shared direction (the map turns pale
# red, most among the later positions), but there is no band yet beyond the diagonal itself (each position
# with itself, always 1). Slide through training to see it happen.

# %%
T = 64    # the course model was trained on 64-token windows: later positions were never used
fig = E.position_similarity_figure(E.position_similarity(wpe, T), step=info["step"])

# %%
PositionSimilarityView(wpes, steps, T=T)

# %% [markdown]
# ## 8. Exercise: the embedding backward
#
# Write the encoder's backward: given `dx` of shape `(B, T, C)` and `ids` of shape `(B, T)`, return `dwte`
# `(V, C)` and `dwpe` `(maxT, C)`. Careful with tokens that repeat: the check uses ids that do.

# %% tags=["exercise"]
def embedding_backward(dx, ids, V, maxT):
    """Your code: return (dwte (V, C), dwpe (maxT, C))."""
    raise NotImplementedError("write me, then run the check below")


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("embedding_backward")

check("embedding_backward", embedding_backward)

# %% [markdown]
# ## What's next
#
# Each token is now a vector that knows what it is and where it stands, but not what is around it. Lesson 3
# lets the tokens of our sentence look at each other: attention.
