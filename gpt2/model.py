"""GPT-2 in plain PyTorch: the reference every kernel in gpt2lab is checked against.

Read top to bottom: LayerNorm -> CausalSelfAttention -> MLP -> Block -> GPT2. Shapes use
B (batch), T (time/context), C (n_embd), H (heads), hd (C // H), V (vocab_size).

Parameter names follow nanoGPT (and so, after transposing the Conv1D weights, Hugging Face):

    transformer.wte.weight            (V, C)   token embedding, tied to lm_head.weight
    transformer.wpe.weight            (T, C)   learned position embedding
    transformer.h.{i}.ln_1.weight/bias          (C,)
    transformer.h.{i}.attn.c_attn.weight/bias   (3C, C) / (3C,)   q, k, v stacked on the output axis
    transformer.h.{i}.attn.c_proj.weight/bias   (C, C) / (C,)
    transformer.h.{i}.ln_2.weight/bias          (C,)
    transformer.h.{i}.mlp.c_fc.weight/bias      (4C, C) / (4C,)
    transformer.h.{i}.mlp.c_proj.weight/bias    (C, 4C) / (C,)
    transformer.ln_f.weight/bias                (C,)

Linear weights are nn.Linear's (out, in) layout: y = x @ W.T + b. There is no dropout: it is off in every
run this kit makes, and leaving it out keeps forward and backward deterministic.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2lab.kernels.layernorm import EPS  # GPT-2's layer_norm_epsilon

from .config import GPTConfig



class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis. x: (..., C)."""

    def __init__(self, C: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.bias = nn.Parameter(torch.zeros(C))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, EPS)


class CausalSelfAttention(nn.Module):
    """Multi-head attention where position t only sees positions <= t. x: (B, T, C) -> (B, T, C)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        T = config.block_size
        # mask[t, s] is True where s > t (the future); a buffer, not a parameter, and never saved
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1),
                             persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hd = C // self.n_head
        qkv = self.c_attn(x)                                              # (B, T, 3C)
        q, k, v = qkv.split(C, dim=2)                                     # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)                 # (B, H, T, hd)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))          # (B, H, T, T) scores
        att = att.masked_fill(self.mask[:T, :T], float("-inf"))           # exp(-inf) = 0: no look-ahead
        att = F.softmax(att, dim=-1)                                      # each row sums to 1
        y = att @ v                                                       # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)                  # heads side by side again
        return self.c_proj(y)


class MLP(nn.Module):
    """x: (B, T, C) -> 4C wide tanh-GELU -> (B, T, C)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        # GPT-2 used the tanh approximation of GELU ("gelu_new" in Hugging Face)
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)). x: (B, T, C)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, generator=None):
    """The next token (B, 1) int64 from the last position's logits (B, V). Shared by both GPT-2s, so the same
    weights and seed give the same text. temperature <= 0: greedy; top_k keeps the k most likely tokens."""
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


class GPT2(nn.Module):
    """GPT-2 language model. forward(idx (B, T) int64, targets (B, T) int64 | None) -> (logits (B, T, V), loss)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: reading a token in and scoring it out share one (V, C) matrix
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 paper: residual projections scaled by 1/sqrt(2L), since each of the L blocks adds two of them
        # to the residual stream and the stream's variance would otherwise grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        """idx: (B, T) int64 token ids, T <= block_size; targets: (B, T) int64, -1 = ignore.

        Returns logits (B, T, V) float32 and the mean cross-entropy loss (a 0-d tensor), or None without targets.
        """
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"GPT2.forward: sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)       # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)                                        # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def num_params(self) -> int:
        """Distinct parameters (the tied wte/lm_head matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None):
        """Append max_new_tokens sampled tokens to idx (B, T) int64; returns (B, T + max_new_tokens).

        temperature <= 0 means greedy (argmax). top_k keeps only the k most likely tokens. Pass a seeded
        torch.Generator for a reproducible sample. The context is cropped to the last block_size tokens.
        """
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            idx_next = sample_next(logits[:, -1, :], temperature, top_k, generator)  # only the next token matters
            idx = torch.cat((idx, idx_next), dim=1)
        return idx

    # ---- parameters as plain numpy arrays (the format backends and checkpoints share) ----

    def params_numpy(self) -> dict[str, np.ndarray]:
        """Every distinct parameter as name -> float32 numpy copy (lm_head.weight is wte's, so not listed)."""
        return {n: p.detach().cpu().numpy().astype(np.float32, copy=True) for n, p in self.named_parameters()}

    def load_params_numpy(self, params: dict) -> None:
        """Copy name -> array (numpy or tensor) into this model; names and shapes must match exactly."""
        own = dict(self.named_parameters())
        missing, unexpected = sorted(set(own) - set(params)), sorted(set(params) - set(own))
        if missing or unexpected:
            raise ValueError(f"load_params_numpy: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for name, p in own.items():
                src = torch.as_tensor(np.asarray(params[name], dtype=np.float32))
                if src.shape != p.shape:
                    raise ValueError(f"load_params_numpy: {name} has shape {tuple(src.shape)}, "
                                     f"expected {tuple(p.shape)}")
                p.copy_(src)

    # ---- Hugging Face GPT-2 checkpoints, read from a local folder ----

    @classmethod
    def from_hf_state_dict(cls, sd: dict, config: GPTConfig) -> "GPT2":
        """Our model from a Hugging Face GPT2LMHeadModel / GPT2Model state dict (keys with or without the
        "transformer." prefix). HF stores its Conv1D weights as (in, out); we transpose them to (out, in)."""
        model = cls(config)
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        params = {}
        for name in dict(model.named_parameters()):
            key = name.removeprefix("transformer.")
            if key not in sd:
                raise ValueError(f"from_hf_state_dict: the checkpoint has no {key!r}")
            w = sd[key].detach().to(torch.float32).cpu()
            params[name] = w.t().contiguous() if key.endswith(transposed) else w
        model.load_params_numpy(params)
        return model

    @classmethod
    def from_pretrained(cls, path) -> "GPT2":
        """Load a local Hugging Face GPT-2 folder (config.json + model.safetensors or pytorch_model.bin).

        Never touches the network: `path` must be a folder on disk, e.g. one written by save_pretrained.
        """
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"from_pretrained: {str(folder)!r} has no config.json "
                                    f"(expected a local Hugging Face GPT-2 folder)")
        config = hf_config(json.loads((folder / "config.json").read_text()))
        if (folder / "model.safetensors").is_file():
            from safetensors.torch import load_file
            sd = load_file(str(folder / "model.safetensors"))
        elif (folder / "pytorch_model.bin").is_file():
            sd = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"from_pretrained: {str(folder)!r} has neither model.safetensors "
                                    f"nor pytorch_model.bin")
        return cls.from_hf_state_dict(sd, config)


def hf_config(cfg: dict) -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 config.json dict; refuses variants this model does not implement."""
    act = cfg.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"hf_config: activation_function must be tanh-GELU ('gelu_new'), got {act!r}")
    eps = cfg.get("layer_norm_epsilon", EPS)
    if eps != EPS:
        raise ValueError(f"hf_config: layer_norm_epsilon must be {EPS}, got {eps}")
    if cfg.get("scale_attn_by_inverse_layer_idx") or cfg.get("reorder_and_upcast_attn"):
        raise ValueError("hf_config: scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported")
    block_size = cfg.get("n_positions", cfg.get("n_ctx"))  # very old configs only have n_ctx
    return GPTConfig(block_size=block_size, vocab_size=cfg["vocab_size"], n_layer=cfg["n_layer"],
                     n_head=cfg["n_head"], n_embd=cfg["n_embd"])


def init_params(config: GPTConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """GPT-2-initialised parameters as name -> float32 numpy, identical for every backend given the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2(config).params_numpy()
