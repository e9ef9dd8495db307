"""Where a training step's host time goes: the kernel GPT-2's step (forward, backward, AdamW) under cProfile.

On a GPU the tiny config's step is host-bound. On an H200 (2026-11-26, docs/figures.md) it took 20.3 ms, 20.1
of them host time, for 158 launches: ~127 us of host time a launch, where numba's own launch of a compiled
kernel took ~15 us on an H100 (../shared/guide/RECIPES.md). This says which code that time is in, grouped by
where it lives:

    gpt2lab    ours: the model, the entry points, their argument checks, the launcher (kernels/_cuda.py)
    numba      numba's launch: argument preparation, the compiled kernel's launch
    cuda       cuda.core and cuda.bindings (NVIDIA's Python driver layer numba-cuda launches through)
    builtin    C functions called from Python (the driver calls themselves land here or in cuda)
    other      the rest

    python -m gpt2lab.gpt2.host_profile_cli --device cuda --config tiny --batch 8 --seq 64
    NUMBA_ENABLE_CUDASIM=1 python -m gpt2lab.gpt2.host_profile_cli --device cudasim   (kernel bodies skipped)

In the simulator the kernels' bodies are skipped (their launches still counted and configured), so only the
host side runs: our code as on a GPU, numba's simulator in place of its launch path. The host time of a step
is measured without the profiler first (cProfile slows Python calls down), then the profile gives the shares.
"""
from __future__ import annotations

import cProfile
import pstats

GROUPS = ("gpt2lab", "numba", "cuda", "builtin", "other")


def group_of(filename: str) -> str:
    """The GROUPS entry of a profiled function's file ("~" is cProfile's name for built-in functions)."""
    path = filename.replace("\\", "/")
    if path == "~" or path.startswith("<built-in"):
        return "builtin"
    if "/gpt2lab/" in path:
        return "gpt2lab"
    if "/numba" in path:
        return "numba"
    if "/cuda/" in path or "/cuda_core" in path or "/cuda_bindings" in path:
        return "cuda"
    return "other"


def host_profile(config: str = "tiny", B: int = 8, T: int = 64, steps: int = 20, device: str = "cuda",
                 fused: bool = True, top: int = 25, warm: int = 2) -> dict:
    """Host ms and launches per step of `steps` steps (unprofiled, after `warm`), then the same steps under
    cProfile: each group's share of the profiled time, and the `top` functions by their own time. On
    device="cudasim" the kernels' bodies are skipped from here on, for the rest of the process."""
    import numpy as np
    from numba import cuda

    from gpt2lab.kernels import _cuda

    from .bench import _batches, _time_steps
    from .config import GPTConfig
    from .kernel_backend import NumbaBackend
    from .train import OptimConfig
    if device == "cudasim":
        _cuda.skip_kernel_bodies()
    cfg = GPTConfig.preset(config)
    backend = NumbaBackend(cfg, OptimConfig(), seed=0, device=device, fused=fused)
    batches = _batches(cfg, B, T, warm + steps)

    def step(x, y):
        backend.loss_and_grads(x, y)
        backend.optimizer_step(1e-4)
    # bench's timing: each step between two synchronizes; host time = until its last call returned, less
    # the time the host waited for the GPU in the step's one read-back (the loss)
    timed = _time_steps(backend, batches, warm, cuda.synchronize)
    host = [issue - wait for issue, wait in zip(timed["issue"], timed["wait"])]
    launches = timed["launches"]
    profiler = cProfile.Profile()
    profiler.enable()
    for x, y in batches[warm:]:
        step(x, y)
    cuda.synchronize()
    profiler.disable()
    stats = pstats.Stats(profiler).stats   # (file, line, name) -> (calls, calls, own s, cumulative s, callers)
    total = sum(own for _, _, own, _, _ in stats.values()) or 1.0
    groups = dict.fromkeys(GROUPS, 0.0)
    for (filename, _, _), (_, _, own, _, _) in stats.items():
        groups[group_of(filename)] += own
    rows = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    host_ms = float(np.median(host) * 1e3)
    per_step = int(np.median(launches))
    return {"config": config, "B": B, "T": T, "device": device, "fused": fused, "steps": steps,
            "prepared_launch": _cuda.PREPARED_LAUNCH and device == "cuda",
            "host_ms_per_step": host_ms, "launches_per_step": per_step,
            "host_us_per_launch": 1e3 * host_ms / per_step if per_step else None,
            "groups_pct": {g: 100 * s / total for g, s in groups.items()},
            "top": [{"function": f"{name} ({_short(filename)}:{line})", "group": group_of(filename),
                     "calls_per_step": calls / steps, "own_ms_per_step": 1e3 * own / steps,
                     "cumulative_ms_per_step": 1e3 * cumulative / steps}
                    for (filename, line, name), (calls, _, own, cumulative, _) in rows]}


def _short(filename: str) -> str:
    """The path from its package on (gpt2lab/kernels/_cuda.py, numba/cuda/dispatcher.py), or as it is."""
    path = filename.replace("\\", "/")
    for root in ("/gpt2lab/", "/numba/", "/cuda/"):
        if root in path:
            return root.strip("/") + "/" + path.split(root, 1)[1]
    return path


def format_report(r: dict) -> str:
    """The report as text: the unprofiled host time, the groups' shares, the top functions."""
    lines = [f"host time of one training step: {r['config']} B={r['B']} T={r['T']} on {r['device']}"
             f"{' (fused path)' if r['fused'] else ' (per-op path)'}, median of {r['steps']} steps, prepared "
             f"launches {'on' if r['prepared_launch'] else 'off'} (kernels/_cuda.py)",
             f"  {r['host_ms_per_step']:.2f} ms a step, {r['launches_per_step']} launches, "
             + (f"{r['host_us_per_launch']:.1f} us a launch" if r["host_us_per_launch"] else "no launches"),
             "  share of the profiled time: " + ", ".join(f"{g} {p:.0f}%" for g, p in r["groups_pct"].items()),
             f"  {'own ms/step':>11} {'cum ms/step':>11} {'calls/step':>10}  function"]
    lines += [f"  {t['own_ms_per_step']:11.3f} {t['cumulative_ms_per_step']:11.3f} {t['calls_per_step']:10.1f}  "
              f"[{t['group']}] {t['function']}" for t in r["top"]]
    return "\n".join(lines)
