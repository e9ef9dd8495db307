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

    python -m gpt2lab.gpt2.host_profile --device cuda --config tiny --batch 8 --seq 64
    NUMBA_ENABLE_CUDASIM=1 python -m gpt2lab.gpt2.host_profile --device cudasim   (kernel bodies skipped)

In the simulator the kernels' bodies are skipped (their launches still counted and configured), so only the
host side runs: our code as on a GPU, numba's simulator in place of its launch path. The host time of a step
is measured without the profiler first (cProfile slows Python calls down), then the profile gives the shares.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time

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


def _skip_kernel_bodies() -> None:
    """In numba's simulator: launches still counted and configured, their bodies not run (the host side alone)."""
    from gpt2lab.kernels import _cuda
    _cuda._SimLauncher.launch = lambda self, args: None


def host_profile(config: str = "tiny", B: int = 8, T: int = 64, steps: int = 20, device: str = "cuda",
                 fused: bool = True, top: int = 25, warm: int = 2) -> dict:
    """Host ms and launches per step of `steps` steps (unprofiled, after `warm`), then the same steps under
    cProfile: each group's share of the profiled time, and the `top` functions by their own time."""
    import numpy as np
    from numba import cuda

    from gpt2lab.kernels._cuda import launch_count

    from .bench import _batches
    from .config import GPTConfig
    from .kernel_backend import NumbaBackend
    from .train import OptimConfig
    if device == "cudasim":
        _skip_kernel_bodies()
    cfg = GPTConfig.preset(config)
    backend = NumbaBackend(cfg, OptimConfig(), seed=0, device=device, fused=fused)
    batches = _batches(cfg, B, T, warm + steps)

    def step(x, y):
        backend.loss_and_grads(x, y)
        backend.optimizer_step(1e-4)
    for x, y in batches[:warm]:
        step(x, y)
    host, launches = [], []
    for x, y in batches[warm:]:
        cuda.synchronize()   # the GPU idle: what follows is the host's issuing of one step
        n0, t0 = launch_count(), time.perf_counter()
        step(x, y)
        host.append(time.perf_counter() - t0)
        launches.append(launch_count() - n0)
    cuda.synchronize()
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
             f"{' (fused path)' if r['fused'] else ' (per-op path)'}, median of {r['steps']} steps",
             f"  {r['host_ms_per_step']:.2f} ms a step, {r['launches_per_step']} launches, "
             + (f"{r['host_us_per_launch']:.1f} us a launch" if r["host_us_per_launch"] else "no launches"),
             "  share of the profiled time: " + ", ".join(f"{g} {p:.0f}%" for g, p in r["groups_pct"].items()),
             f"  {'own ms/step':>11} {'cum ms/step':>11} {'calls/step':>10}  function"]
    lines += [f"  {t['own_ms_per_step']:11.3f} {t['cumulative_ms_per_step']:11.3f} {t['calls_per_step']:10.1f}  "
              f"[{t['group']}] {t['function']}" for t in r["top"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt2lab.gpt2.host_profile", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cudasim"), default="cuda")
    p.add_argument("--config", default="tiny", help="a preset of gpt2/config.py (default tiny: the host-bound one)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps timed, then profiled (after 2 warm-up steps)")
    p.add_argument("--per-op", action="store_true", help="the per-op path (default: the fused one, a GPU's default)")
    p.add_argument("--top", type=int, default=25, help="functions listed, by their own time")
    p.add_argument("--json", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .config import PRESETS
    if args.config not in PRESETS:
        print(f"host_profile: --config {args.config}: unknown; choose from {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    for name in ("batch", "seq", "steps", "top"):
        if getattr(args, name) <= 0:
            print(f"host_profile: --{name} must be positive, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.seq > PRESETS[args.config]["block_size"]:
        print(f"host_profile: --seq {args.seq} is longer than {args.config}'s context", file=sys.stderr)
        return 2
    from numba import config as numba_config
    from numba import cuda
    if args.device == "cudasim" and not numba_config.ENABLE_CUDASIM:
        print("host_profile: --device cudasim needs NUMBA_ENABLE_CUDASIM=1 set before Python starts", file=sys.stderr)
        return 2
    if args.device == "cuda" and (numba_config.ENABLE_CUDASIM or not cuda.is_available()):
        print("host_profile: --device cuda needs an NVIDIA GPU that numba sees; none found", file=sys.stderr)
        return 2
    report = host_profile(args.config, args.batch, args.seq, args.steps, args.device, not args.per_op, args.top)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
