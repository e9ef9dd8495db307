"""What the model says as it learns: one prompt continued by every saved frame of a training run."""
from __future__ import annotations

import html

import torch

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain.palette import token_color, token_tint


def samples_over_training(checkpoints, prompt: str, max_new_tokens: int = 24, seed: int = 0,
                          temperature: float = 0.8, top_k: int | None = 40) -> list[tuple[int, str]]:
    """[(step, continuation)] of `prompt` for each (step, path) in `checkpoints`, same seed for every frame,
    so the differences come from the weights alone."""
    from gpt2lab.gpt2.course import models_over_training
    enc = gpt2_encoding()
    ids = torch.tensor([enc.encode(prompt)], dtype=torch.long)
    out = []
    for step, model in models_over_training(checkpoints):
        gen = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k,
                             generator=torch.Generator().manual_seed(seed))
        out.append((step, enc.decode(gen[0, ids.shape[1]:].tolist())))
    return out


def samples_html(prompt: str, samples: list[tuple[int, str]]) -> str:
    """A table, left-aligned, one row per frame: step | prompt (grey) + continuation, each generated token in a
    box of its course colour (the tokenizer playground's boxes). Newlines in a sample show as ↵ so a row stays
    one block of text instead of breaking into gaps."""
    enc = gpt2_encoding()
    cell = "text-align:left;vertical-align:top;padding:2px 8px"
    rows = []
    for step, text in samples:
        spans = "".join(f"<span style='background:{token_tint(t)};border-bottom:2px solid {token_color(t)}'>"
                        f"{html.escape(enc.decode([t]).replace(chr(10), '↵'))}</span>" for t in enc.encode(text))
        rows.append(f"<tr><td style='{cell};font-variant-numeric:tabular-nums'>{step}</td>"
                    f"<td style='{cell};font-family:monospace'><span style='color:#666'>"
                    f"{html.escape(prompt.replace(chr(10), '↵'))}</span>{spans}</td></tr>")
    return (f"<table style='border-collapse:collapse'><tr><th style='{cell}'>step</th>"
            f"<th style='{cell}'>prompt + sample</th></tr>" + "".join(rows) + "</table>")
