"""GPTConfig: the five numbers that fix a GPT-2's shape.

Parameter counts (wte tied to lm_head, so the vocabulary matrix is counted once):

    total = V*C + T*C                      token + position embeddings
          + L * (12*C*C + 13*C)            per block: qkv 3C*C+3C, proj C*C+C, fc 4C*C+4C, fc-proj 4C*C+C, 2 LN 4C
          + 2*C                            final LayerNorm

with V = vocab_size, T = block_size, C = n_embd, L = n_layer. The presets:

    "gpt2"   L=12 H=12 C=768 T=1024 V=50257  124,439,808 parameters (OpenAI's GPT-2 small, "124M")
    "small"  L=6  H=6  C=384 T=256  V=50257   30,044,544 parameters (19.3M of them in wte)
    "tiny"   L=4  H=4  C=128 T=128  V=50257    7,242,624 parameters (6.4M of them in wte)

OptimConfig (AdamW's hyper-parameters, shared by every backend) lives here too, beside the shape, so that a
backend needs only this module, not the trainer.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

PRESETS: dict[str, dict[str, int]] = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50257),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=50257),
}


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2. Defaults are OpenAI's 124M model.

    block_size: longest context T the position table wpe covers.
    vocab_size: rows of the token table wte (50257 for the GPT-2 tokenizer).
    n_layer:    number of transformer blocks L.
    n_head:     attention heads H per block; each head has n_embd // n_head dimensions.
    n_embd:     residual stream width C.
    """
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"GPTConfig: {f.name} must be an int, got {type(v).__name__} {v!r}")
            if v <= 0:
                raise ValueError(f"GPTConfig: {f.name} must be positive, got {v}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}), "
                             f"so that every head gets n_embd // n_head dimensions")

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named shape ("gpt2", "small", "tiny"), optionally with fields replaced: preset("tiny", n_layer=2)."""
        if name not in PRESETS:
            raise ValueError(f"GPTConfig.preset: unknown config {name!r}; expected one of {sorted(PRESETS)}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"GPTConfig.preset: unknown field(s) {sorted(unknown)}; "
                             f"fields are {[f.name for f in fields(cls)]}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def head_size(self) -> int:
        """Dimensions per attention head, hd = C // H."""
        return self.n_embd // self.n_head

    def num_params(self) -> int:
        """Parameter count with wte and lm_head tied (see the module docstring for the formula)."""
        C, L = self.n_embd, self.n_layer
        return self.vocab_size * C + self.block_size * C + L * (12 * C * C + 13 * C) + 2 * C

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def check_number(owner: str, name: str, value, *, low: float | None = None, low_open: bool = False,
                 high: float | None = None, high_open: bool = False) -> None:
    """ValueError (one line, naming the field) unless `value` is a finite real number within the bounds.

    low/high: bounds (None = unbounded); *_open: the bound itself is excluded. NaN and +-inf always fail:
    a NaN compares False with everything, so `x > 0`-style checks alone let it through.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{owner}: {name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{owner}: {name} must be {'<' if high_open else '<='} {high}, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW hyper-parameters shared by every backend; checked when made (ValueError naming the field)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float | None = None  # clip the global grad norm to this value; None = no clipping

    def __post_init__(self):
        check_number("OptimConfig", "beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        check_number("OptimConfig", "beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        check_number("OptimConfig", "eps", self.eps, low=0.0, low_open=True)
        check_number("OptimConfig", "weight_decay", self.weight_decay, low=0.0)
        if self.grad_clip is not None:  # a negative clip would flip the gradient: gradient ascent
            check_number("OptimConfig", "grad_clip", self.grad_clip, low=0.0, low_open=True)


def decays(name: str, shape) -> bool:
    """True for the parameters AdamW's weight decay applies to: the matrices (ndim >= 2), never biases or LN."""
    return len(shape) >= 2
