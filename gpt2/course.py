"""The course's shared model: the "tiny" GPT-2 trained on Shakespeare once, then read from the cache.

    model, info = course_model()          # the final model (GPT2, eval mode) and facts about it
    model, info = course_model(step=100)  # the model as it was after 100 steps (a frame)
    for step, path in course_checkpoints(): ...   # every frame, for animations

The first call trains it (COURSE below; BUILD_MINUTES on a 2-core laptop, with a progress bar) into
cache_dir()/course-tiny/, keeping a frame every COURSE["keep_every"] steps; later calls only load. A file
lock makes a second notebook wait for the first instead of training alongside it, and a done.json marker
(written last, atomically) says the folder is complete. Interrupting the first training (Ctrl-C, or the
notebook's stop button) keeps its checkpoint, and the next call continues from there.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

COURSE = dict(config="tiny", data="shakespeare", steps=500, batch=8, seq=64, lr=2e-3, warmup=60,
              schedule="cosine", keep_every=50, seed=1337, grad_clip=1.0)
BUILD_MINUTES = "2-3"   # the first build on a quiet 2-core laptop (docs/figures.md); said while it trains
MARKER = "done.json"


def course_dir() -> Path:
    """cache_dir()/course-tiny: where the course model's frames and marker live."""
    from gpt2lab.datasets import cache_dir
    return cache_dir() / "course-tiny"


def _key() -> str:
    """Fingerprint of the recipe: a changed COURSE retrains instead of serving a stale model."""
    return hashlib.sha256(json.dumps(COURSE, sort_keys=True).encode()).hexdigest()[:16]


def _read_marker(folder: Path) -> dict | None:
    try:
        info = json.loads((folder / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info if info.get("key") == _key() else None


def _write_json_atomic(path: Path, obj) -> None:
    from gpt2lab.atomic import atomic_write
    atomic_write(path, lambda f: f.write(json.dumps(obj).encode()))


def _can_resume(folder: Path) -> bool:
    """True when folder holds an interrupted run of this very recipe (same key, a readable latest.pt).

    A damaged latest.pt (a crash, a full disk) is not an error here: the course model trains again, and says so.
    """
    from .checkpoint import CheckpointError, load_checkpoint
    if not (folder / "key").is_file() or (folder / "key").read_text() != _key():
        return False
    try:
        load_checkpoint(folder / "latest.pt", kind="full")
    except FileNotFoundError:
        return False
    except CheckpointError as e:
        print(f"gpt2lab: course model: {e}; training it again from the start", file=sys.stderr)
        return False
    return True


def _train_course(folder: Path, progress: bool) -> dict:
    from gpt2lab.datasets import gpt2_encoding, load_tokens

    from .config import GPTConfig
    from .train import OptimConfig, RunConfig, TorchBackend, train

    resume = _can_resume(folder)
    if not resume:  # a stale or foreign folder: start clean
        for p in folder.glob("*.pt"):
            p.unlink()
        (folder / "key").write_text(_key())
    c = COURSE
    print(f"gpt2lab: {'continuing' if resume else 'training'} the course model once ({c['steps']} steps of the "
          f"{c['config']} GPT-2 on Shakespeare, about {BUILD_MINUTES} minutes); cached in {folder}", file=sys.stderr)
    config = GPTConfig.preset(c["config"])
    run = RunConfig(steps=c["steps"], batch=c["batch"], seq=c["seq"], lr=c["lr"], warmup=c["warmup"],
                    schedule=c["schedule"], seed=c["seed"], keep_every=c["keep_every"], eval_every=50,
                    ckpt_every=50, sample_tokens=0, data=c["data"])
    backend = TorchBackend(config, OptimConfig(grad_clip=c["grad_clip"]), seed=c["seed"])
    result = train(backend, load_tokens(c["data"]), run, folder, resume=resume, json_log=folder / "log.jsonl",
                   progress=progress, encoding=gpt2_encoding())
    if result.interrupted:
        raise KeyboardInterrupt(f"course model: training stopped at step {result.step}; "
                                f"call course_model() again to continue")
    if result.stopped:  # a nan/inf loss: the recipe itself is broken, retrying would not help
        raise RuntimeError(f"course model: {result.message}")
    history = [json.loads(ln) for ln in (folder / "log.jsonl").read_text().splitlines()]
    info = dict(key=_key(), course=COURSE, config=config.to_dict(), steps=result.step,
                train_loss=[[r["step"], r["loss"]] for r in history],
                val_loss=[[r["step"], r["val_loss"]] for r in history if "val_loss" in r],
                final_val_loss=result.val_loss, seconds=round(result.seconds, 1),
                tokens_per_s=round(result.tokens_per_s))
    _write_json_atomic(folder / MARKER, info)  # last: its presence means every frame is on disk
    (folder / "latest.pt").unlink(missing_ok=True)  # resume state (AdamW moments): 3x a frame, no longer needed
    return info


def _course_lock(folder: Path):
    """The course cache's lock: a second notebook asking for the model while another process trains it waits,
    and says what for (on stderr), instead of training it twice."""
    from gpt2lab.lock import file_lock

    def waiting(holder):
        print(f"gpt2lab: waiting for the course model: {holder} is training it now (about {BUILD_MINUTES} "
              f"minutes on a laptop, {COURSE['steps']} steps; its progress bar is in that notebook). This cell "
              f"goes on by itself when it is done.", file=sys.stderr, flush=True)
    return file_lock(folder.parent / "course-tiny.lock", wait=True, what="the course model", on_wait=waiting)


def ensure_course_model(progress: bool = True) -> dict:
    """Train the course model unless the cache has it; returns the marker's info (losses, timing, recipe)."""
    folder = course_dir()
    info = _read_marker(folder)
    if info is not None:
        return info
    with _course_lock(folder):
        info = _read_marker(folder)  # another process may have finished while we waited for the lock
        if info is None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MARKER).unlink(missing_ok=True)
            info = _train_course(folder, progress)
    return info


def course_checkpoints() -> list[tuple[int, Path]]:
    """Every saved frame of the course run as (step, path), by step: 0, 50, 100, ... 500 (trains on first use)."""
    ensure_course_model()
    frames = [(int(p.stem.split("_")[1]), p) for p in course_dir().glob("ckpt_*.pt")]
    return sorted(frames)


def course_model(step: int | None = None):
    """(GPT2 in eval mode, info) of the course model after `step` steps (None: the final model).

    info: step, config (dict), path of the frame, train_loss at that step (None at step 0), val_loss at that
    step (None where it was not evaluated: every 50 steps and at the end), course (the recipe), seconds (the
    training time), and the whole run's history {"train_loss": [[step, loss], ...], "val_loss": [...]}.
    """
    run_info = ensure_course_model()
    frames = dict(course_checkpoints())
    if step is None:
        step = max(frames)
    if step not in frames:
        raise ValueError(f"course_model: no frame at step {step}; frames exist at steps {sorted(frames)}")
    model = _load_frame(frames[step])
    if model is None:  # damaged: the cache was rebuilt, read it again
        return course_model(step)
    train_loss = dict((s, v) for s, v in run_info["train_loss"]).get(step)
    info = dict(step=step, config=run_info["config"], path=str(frames[step]), train_loss=train_loss,
                val_loss=dict((s, v) for s, v in run_info["val_loss"]).get(step),
                history={"train_loss": run_info["train_loss"], "val_loss": run_info["val_loss"]},
                course=run_info["course"], seconds=run_info["seconds"])
    return model, info


def _load_frame(path: Path):
    """The course frame at `path` as a GPT2, or None after finding it damaged and rebuilding the cache.

    A frame damaged on disk cannot be repaired from the others (each is the weights at one step), so the
    cache is dropped and the course model trained again; the learner is told which file was at fault.
    """
    from .checkpoint import CheckpointError, load_model
    try:
        return load_model(path)[0]
    except CheckpointError as e:
        print(f"gpt2lab: course model: {e}; rebuilding the course cache", file=sys.stderr)
        (path.parent / MARKER).unlink(missing_ok=True)
        ensure_course_model()
        return None


def models_over_training(checkpoints=None):
    """Yield (step, GPT2 in eval mode) for each frame of a run, oldest first, loading one at a time.

    checkpoints: [(step, model or checkpoint path)]; default: the course model's frames (course_checkpoints()).
    Every animation over training walks its frames through this.
    """
    import torch

    from .checkpoint import load_model
    if checkpoints is None:
        for step, frame in course_checkpoints():
            model = _load_frame(frame)
            yield int(step), model if model is not None else _load_frame(frame)
        return
    for step, frame in checkpoints:
        yield int(step), frame if isinstance(frame, torch.nn.Module) else load_model(frame)[0]
