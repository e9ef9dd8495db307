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
# # Lesson 1: Tokenizing
#
# *Widgets and pictures appear when you run the cells. After reopening a notebook, run it again
# (Run → Run All Cells): a widget that says "model not found" is waiting for that.*
#
# A language model never sees letters. It sees a list of integers, **tokens**, each standing for a short
# piece of text. GPT-2 cuts text into pieces it learned from data with **byte-pair encoding (BPE)**: start
# from raw bytes and repeatedly glue together the pair of neighbours seen most often.
#
# Here is our running example, the line we follow through the whole course, cut into GPT-2's tokens.
# Every token has its own colour, and keeps it in every lesson; hover over a box to see its id and bytes.

# %%
from IPython.display import HTML, display

from gpt2lab.datasets import EOT, gpt2_encoding, shakespeare
from gpt2lab.datasets.bpe import BPETokenizer, count_pairs, presplit, printable_token
from gpt2lab.explain.jshtml import animation_html
from gpt2lab.explain.palette import RUNNING_EXAMPLE
from gpt2lab.explain import tokenize as T
from gpt2lab.widgets.tokenizer import MergeStepper, TokenizerPlayground

gpt2 = gpt2_encoding()   # the reference: OpenAI's GPT-2 tokenizer (tiktoken), loaded offline
display(HTML(T.spans_html(T.token_spans(RUNNING_EXAMPLE, gpt2))))

# %% [markdown]
# ## 1. Characters become bytes
#
# Text is a sequence of Unicode characters. UTF-8 writes each one as 1 to 4 bytes, numbers from 0 to 255.
# So *any* text, in any language, with emoji, is a list of numbers from a tiny alphabet of 256: a byte-level
# tokenizer can never meet an unknown symbol.

# %%
print(list(RUNNING_EXAMPLE.encode("utf-8"))[:12], "...", len(RUNNING_EXAMPLE.encode()), "bytes")
for ch in ["a", "é", "問", "👋"]:
    print(f"{ch!r}: {len(ch.encode())} bytes {list(ch.encode())}")

# %% [markdown]
# GPT-2 stores its tokens in text files, so it gives every byte a printable stand-in: printable bytes stand
# for themselves, the others (space, newline, ...) are moved to characters 256 and up. That is why GPT-2
# tokens are often written `Ġthe`: `Ġ` is the space.

# %%
print(printable_token(b" the"), printable_token(b"\n\n"), printable_token("é".encode()))

# %% [markdown]
# ## 2. Cut into chunks, then merge inside them
#
# Before merging, GPT-2 cuts text with a regular expression into words (with their leading space), numbers,
# punctuation, whitespace and contractions. Merges never cross a chunk boundary, so `" dog"` and `"dog."`
# end up sharing the token `dog` instead of GPT-2 learning `g.` and friends.

# %%
print(presplit(RUNNING_EXAMPLE))
print(presplit("I'll pay 1,000,000 coins!!  OK?"))

# %% [markdown]
# **Training BPE** repeats one step: count every adjacent pair of tokens inside the chunks, and merge the
# most frequent pair into a new token (ids 256, 257, ...). Watch it on our sentence: after each merge the
# sequence is shorter by the number of times the pair occurred. After four merges no pair occurs twice.

# %%
trace = T.bpe_trace(RUNNING_EXAMPLE, n_merges=10)
for step in trace:
    print(step.describe())

# %%
fig = T.draw_merge_step(trace[-1])

# %% [markdown]
# ## 3. Train a tokenizer on Shakespeare
#
# On a real corpus the same loop runs thousands of times. The pair counts are kept up to date incrementally:
# a merge only changes the chunks that contain the pair, so only those are recounted. Every chunk counts as
# many times as it occurs in the text (`" the"` is one chunk seen thousands of times).
# We learn a small vocabulary of 512 tokens (GPT-2 has 50,257).

# %%
text = shakespeare("tiny")
print(f"{len(text):,} characters of Shakespeare")
tok = BPETokenizer().train(text, vocab_size=512, progress=True)
tok

# %%
print("first merges:", [printable_token(tok.vocab[i]) for i in list(tok.merges.values())[:16]])
longest = sorted((tok.vocab[i] for i in tok.merges.values()), key=len)[-8:]
print("longest tokens:", [printable_token(t) for t in longest])

# %% [markdown]
# **Encoding** replays the merges in the order they were learned; **decoding** joins the tokens' bytes.
# Nothing is lost: `decode(encode(text)) == text` for every text.

# %%
ids = tok.encode(RUNNING_EXAMPLE)
print(ids)
print([tok.decode([i]) for i in ids])
assert tok.decode(ids) == RUNNING_EXAMPLE
print(f"yours: {len(ids)} tokens, GPT-2: {len(gpt2.encode(RUNNING_EXAMPLE))} tokens")

# %% [markdown]
# A tokenizer is just its merges. Saved, it is a small text file: a header, the pre-split pattern, the id of
# each byte, the special tokens, then one merge per line.

# %%
import tempfile
from pathlib import Path

path = tok.save(Path(tempfile.mkdtemp()) / "shakespeare-512.bpe")
for line in path.read_text().splitlines()[:8]:
    print(line if len(line) < 70 else line[:66] + " ...")
assert BPETokenizer.load(path).encode(text[:5000]) == tok.encode(text[:5000])

# %% [markdown]
# ## 4. Play
#
# Type anything: your own language, code, emoji, numbers. Switch between your 512-token tokenizer and
# GPT-2's. A bigger vocabulary means longer tokens, so fewer of them for the same text (more characters per
# token): the model then sees more text in the same context length.

# %%
TokenizerPlayground({"yours (512)": tok, "GPT-2 (50,257)": gpt2},
                    text=RUNNING_EXAMPLE + "\nnumbers 1234567, emoji 👩‍👩‍👧, 東京")

# %% [markdown]
# Notice the emoji: GPT-2 cuts it *between* its bytes. Boxes like `<f0 9f 91>` are tokens holding part of a
# character; only the whole sequence decodes to the emoji again.
#
# ## 5. Watch
#
# The merges of BPE trained on the opening of Hamlet's soliloquy, one per frame. Each box is as wide as its
# bytes; the token just made has a black edge; small gaps separate the chunks.

# %%
hamlet = ("To be, or not to be: that is the question:\n"
          "Whether 'tis nobler in the mind to suffer\n")
hamlet_trace = T.bpe_trace(hamlet, n_merges=12)
anim = T.merge_animation(hamlet_trace)
animation_html(anim)

# %% [markdown]
# Or step through it yourself (the slider, or the play button):

# %%
MergeStepper(hamlet_trace)

# %% [markdown]
# ## 6. Check: GPT-2's merges in our tokenizer give GPT-2's ids
#
# Load GPT-2's own 50,000 merges (`vocab.bpe`) into the readable tokenizer and compare with tiktoken,
# OpenAI's fast implementation, on Shakespeare and on awkward text.

# %%
ours = BPETokenizer.from_gpt2()
assert T.check_same_ids(text, ours, gpt2)
assert T.check_same_ids("emoji 👍🏽🏳️‍🌈, 中文, cafe\u0301, 12345678, 'VE, \t\n\n  x", ours, gpt2)

# %% [markdown]
# One token is not learned: `<|endoftext|>` (id 50256) separates documents in training data. It is only
# produced when you allow it; otherwise the same characters are ordinary text.

# %%
print(ours.encode("The end.<|endoftext|>", allowed_special={EOT}))
print(ours.encode("The end.<|endoftext|>"))

# %% [markdown]
# ## 7. Exercise: count the pairs
#
# Write the heart of BPE training. `chunks` maps each chunk (a tuple of token ids) to how many times it
# occurs; return a dict `{(a, b): count}` of adjacent pairs, each weighted by its chunk's count.
# For example `{(1, 2, 1, 2): 3}` gives `{(1, 2): 6, (2, 1): 3}`.

# %% tags=["exercise"]
def pair_counts(chunks):
    """Your code: {(a, b): count} over adjacent pairs, weighted by chunk frequency."""
    raise NotImplementedError("write me, then run the check below")


# %% tags=["check"]
from gpt2lab.explain.exercises import check, show_solution  # stuck? show_solution("pair_counts")

check("pair_counts", pair_counts)

# %% [markdown]
# ## What's next
#
# Our sentence is now a list of integers. Lesson 2 gives each token id a vector (the embedding) and adds
# where in the sentence it stands.
