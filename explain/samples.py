"""What the model says as it learns: one prompt continued by every saved frame of a training run."""
from __future__ import annotations

import html

import torch

from gpt2lab.datasets import gpt2_encoding
from gpt2lab.explain.palette import token_color


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
    """A table: step | prompt (grey) + continuation, each generated token in its course colour."""
    enc = gpt2_encoding()
    rows = []
    for step, text in samples:
        spans = "".join(f"<span style='background:{token_color(t)}33'>{html.escape(enc.decode([t]))}</span>"
                        for t in enc.encode(text))
        rows.append(f"<tr><td style='text-align:right;padding-right:8px'>{step}</td>"
                    f"<td style='font-family:monospace;white-space:pre-wrap'><span style='color:#888'>"
                    f"{html.escape(prompt)}</span>{spans}</td></tr>")
    return "<table><tr><th>step</th><th>prompt + sample</th></tr>" + "".join(rows) + "</table>"
