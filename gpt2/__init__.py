"""gpt2lab.gpt2: the reference GPT-2 in PyTorch, its trainer, checkpoints, the course model and the CLI.

The trainer itself is `gpt2lab.gpt2.train.train` (the name `train` here is the module).
Names are imported lazily (PEP 562) so that `gpt2lab --help` does not pay for importing torch. Each is listed
twice, and tests/test_packaging.py checks the two lists agree: in _EXPORTS for the interpreter, and as
TYPE_CHECKING imports so that static tools (Pylance, code maps) see where it lives.
"""
from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "GPTConfig": "config", "PRESETS": "config", "OptimConfig": "config", "decays": "config",
    "GPT2": "model", "init_params": "model", "hf_config": "model",
    "TorchBackend": "train", "RunConfig": "train", "Trainer": "train", "TrainResult": "train",
    "lr_at": "train", "BACKENDS": "train", "make_backend": "train",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "course_model": "course", "course_checkpoints": "course",
}

if TYPE_CHECKING:  # what static tools (Pylance, code maps) read: where each name really lives
    from .config import GPTConfig, PRESETS, OptimConfig, decays
    from .model import GPT2, init_params, hf_config
    from .train import TorchBackend, RunConfig, Trainer, TrainResult, lr_at, BACKENDS, make_backend
    from .checkpoint import save_checkpoint, load_checkpoint, load_model
    from .course import course_model, course_checkpoints

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
