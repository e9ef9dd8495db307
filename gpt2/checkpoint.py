"""Checkpoints: one torch.save'd dict, written atomically, loadable with torch.load(weights_only=True).

Format (FORMAT = "gpt2lab-checkpoint", VERSION = 1):

    format, version   "gpt2lab-checkpoint", 1
    kind              "full" (latest.pt: everything to resume) or "frame" (ckpt_{step:06d}.pt: weights only,
                      for animations; a third of the size since it has no AdamW moments)
    config            GPTConfig as a dict
    step              optimizer steps completed
    backend           name of the backend that trained it ("torch", ...)
    params            {name: float32 tensor} in the reference GPT2 naming (lm_head.weight is tied to
                      transformer.wte.weight and not stored)
    optim             full only: {"step": int, "m": {name: tensor}, "v": {name: tensor}} (AdamW moments)
    sampler_state     full only: the train BatchSampler's numpy bit-generator state, as a JSON string
    torch_rng_state   full only: torch.get_rng_state()
    run               full only: the RunConfig the run was started with, as a dict
    train_loss, val_loss   the latest values seen (None if not measured yet)

`load_checkpoint` hands params and optimizer moments back as numpy float32, the backends' common currency.
A file it cannot use (empty, truncated, corrupt, a frame where a full checkpoint is needed) raises
CheckpointError with one line naming the file and what is wrong.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from gpt2lab.atomic import atomic_write

from .config import GPTConfig

FORMAT, VERSION = "gpt2lab-checkpoint", 1


def _to_tensors(d: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in d.items()}


def _to_numpy(d: dict) -> dict:
    return {k: v.numpy() for k, v in d.items()}


def save_checkpoint(path, ckpt: dict) -> Path:
    """Write `ckpt` (numpy params/moments allowed) to `path` atomically: a temp file in the same folder, then
    os.replace, so a crash or Ctrl-C never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(ckpt, format=FORMAT, version=VERSION, params=_to_tensors(ckpt["params"]))
    if ckpt.get("optim") is not None:
        o = ckpt["optim"]
        data["optim"] = {"step": int(o["step"]), "m": _to_tensors(o["m"]), "v": _to_tensors(o["v"])}
    return atomic_write(path, lambda f: torch.save(data, f))


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, corrupt, not ours, or the wrong kind. The
    message is one line naming the file and what is wrong (the CLI prints it and exits with code 2)."""


REQUIRED = {"frame": ("config", "step", "params"),
            "full": ("config", "step", "params", "optim", "sampler_state", "torch_rng_state")}


def _read(path: Path, mmap: bool = False):
    """torch.load with weights_only=True (nothing but tensors and plain data is ever executed), its failures
    turned into one line. torch's own message is not passed on: it suggests weights_only=False, which would
    run arbitrary code from a file that is broken or not ours. mmap: map the tensors, read none of them."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): written by a process that was killed?")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: not a complete torch.save archive "
                              f"({size:,} bytes; truncated or not a checkpoint)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 -- zip, pickle, storage errors: all mean "damaged" to the user
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: torch.load failed "
                              f"({type(e).__name__}; {size:,} bytes)") from None


def load_checkpoint(path, kind: str | None = None) -> dict:
    """Read a checkpoint; params and optim moments come back as numpy float32 and config as a GPTConfig.

    kind: "full" to require a resumable checkpoint (latest.pt), "frame" or None to accept either.
    FileNotFoundError for a missing file; CheckpointError (a ValueError, one line) for anything unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no such checkpoint: {str(path)!r}")
    data = _read(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a gpt2lab checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has version {data.get('version')}, expected {VERSION}")
    if kind == "full" and data.get("kind") != "full":
        raise CheckpointError(f"checkpoint {str(path)!r} is a {data.get('kind')!r} checkpoint (weights only), "
                              f"not a full one: resuming needs the latest.pt that training writes")
    missing = [k for k in REQUIRED["full" if data.get("kind") == "full" else "frame"] if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: missing {', '.join(missing)}")
    try:
        data["config"] = GPTConfig.from_dict(data["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has an invalid config: {e}") from None
    data["params"] = _to_numpy(data["params"])
    if data.get("optim") is not None:
        o = data["optim"]
        data["optim"] = {"step": o["step"], "m": _to_numpy(o["m"]), "v": _to_numpy(o["v"])}
    return data


def saved_run(path) -> dict:
    """The run settings a checkpoint was saved with ("run": RunConfig as a dict), read without loading its
    tensors (memory-mapped), for decisions made before the run starts (`gpt2lab train --resume`); {} when the
    file has none or cannot be read (load_checkpoint then says why, in one line)."""
    try:
        data = _read(Path(path), mmap=True)
    except (OSError, CheckpointError):   # missing or unusable: the full load that follows says so
        return {}
    return dict(data.get("run") or {}) if isinstance(data, dict) else {}


def load_model(path):
    """(GPT2 in eval mode, checkpoint dict) from any gpt2lab checkpoint, full or frame, whatever backend wrote it."""
    from .model import GPT2
    ckpt = load_checkpoint(path)
    model = GPT2(ckpt["config"])
    model.load_params_numpy(ckpt["params"])
    return model.eval(), ckpt
