"""One training step of the numba backend against the torch backend, timed side by side (`gpt2lab bench`).

On the CPU (`bench_steps`) and on a GPU (`bench_steps_cuda`: our CUDA kernels against PyTorch on CUDA).

Both are the trainer's own backends (train.TorchBackend, kernel_backend.NumbaBackend) with the same config,
seed, batch and optimizer settings, so this is the step `gpt2lab train` takes: forward, backward, gradient
clip and AdamW. The steps alternate (kernels.bench.side_by_side's scheme), so a busy machine slows them alike.
Our step is timed twice: the per-op path, and the fused path (KernelGPT2(fused=True): flash attention and
residual + LayerNorm fused, and on a GPU the fused classifier and the one-launch AdamW), the fused_* fields;
on a GPU the fused path is the one `gpt2lab train` takes (gpt2/choices.default_fused).

Threads: the CPU matmul calls OpenBLAS (through scipy), which starts its own thread pool beside numba's and
torch's. On a small machine those extra threads spin-wait and the comparison measures that, not the
kernels: set OPENBLAS_NUM_THREADS=1 (before Python starts) for a fair one (docs/figures.md has the figures).
"""
from __future__ import annotations

import functools

import numpy as np

from .choices import default_path
from .config import GPTConfig


def alternating(fns, reps: int) -> list[float]:
    """Median seconds of each zero-argument function in `fns`, run once to warm up, then `reps` rounds of
    each in turn, so load hits them alike (kernels.bench.side_by_side for any number of them)."""
    import statistics
    import time
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, acc in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def bench_steps(device="cpu", configs=("tiny", "small", "gpt2"), B=4, T=64, reps=3, progress=print,
                kernels=None, rows: list | None = None) -> list[dict]:
    """One row per config: median milliseconds and tokens/s of one step of ours and torch's, and ours/torch;
    fused_ms, fused_tok_s, fused_ratio: our step on the fused path (KernelGPT2(fused=True)), in the same rounds.

    kernels: the numba model's entry points (gpt2.kernel_model.Kernels; None: the defaults), e.g. the cuBLAS
    matmul of `gpt2lab bench --matmul cublas`, which needs the step on the GPU. rows: the list each row is
    appended to the moment it is measured (gpt2lab bench passes its output's, so an interrupt keeps every
    finished row); returned."""
    import torch

    from .kernel_backend import NumbaBackend
    from .train import OptimConfig, TorchBackend
    if device == "cuda":
        return bench_steps_cuda(configs, B, T, reps, progress=progress, kernels=kernels, rows=rows)
    torch.set_flush_denormal(True)
    rows = [] if rows is None else rows
    for name in configs:
        cfg = GPTConfig.preset(name)
        ours_b = NumbaBackend(cfg, OptimConfig(), seed=0, kernels=kernels)
        fused_b = NumbaBackend(cfg, OptimConfig(), seed=0, kernels=kernels, fused=True)
        torch_b = TorchBackend(cfg, OptimConfig(), seed=0)
        rng = np.random.default_rng(0)
        x = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int64)
        y = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int64)

        def step(backend):
            backend.loss_and_grads(x, y)
            backend.optimizer_step(1e-4)
        t_ours, t_torch, t_fused = alternating([functools.partial(step, b) for b in (ours_b, torch_b, fused_b)], reps)
        row = {"config": name, "B": B, "T": T, "device": "cpu", "ours_ms": t_ours * 1e3, "torch_ms": t_torch * 1e3,
               "ratio": t_ours / t_torch, "ours_tok_s": B * T / t_ours, "torch_tok_s": B * T / t_torch,
               "fused_ms": t_fused * 1e3, "fused_tok_s": B * T / t_fused, "fused_ratio": t_fused / t_torch}
        rows.append(row)
        progress(f"  step {name:6s} B={B},T={T}  ours {row['ours_ms']:8.1f} ms ({row['ours_tok_s']:7.0f} tok/s)"
                 f"  torch {row['torch_ms']:8.1f} ms ({row['torch_tok_s']:7.0f} tok/s)  ratio {row['ratio']:.2f}"
                 f"  fused=True {row['fused_ms']:8.1f} ms, ratio {row['fused_ratio']:.2f}")
    return rows


# ---------------------------------------------------------------- on a GPU
def _batches(cfg, B: int, T: int, n: int) -> list:
    rng = np.random.default_rng(0)
    return [(rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int64),
             rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int64)) for _ in range(n)]


def _time_steps(backend, batches, warm: int, sync) -> dict:
    """One training step per batch (lr 1e-4), each between two sync() (the GPU idle), so a step's time is the
    whole step's, not its launches'. Lists over the steps after `warm`: "seconds" (wall), "issue" (until
    the last call returned, before the final sync), "launches" and "wait" (kernel launches, and seconds the
    host waited in the model's read-back; only for our backend, else 0); "losses" of every step."""
    import time

    from gpt2lab.kernels._cuda import launch_count
    scalars = getattr(getattr(backend, "model", None), "scalars", None)

    def waited():
        return scalars.wait_seconds if scalars is not None else 0.0
    out = {"seconds": [], "issue": [], "launches": [], "wait": [], "losses": []}
    for i, (x, y) in enumerate(batches):
        sync()
        n0, w0, t0 = launch_count(), waited(), time.perf_counter()
        out["losses"].append(float(backend.loss_and_grads(x, y)))
        backend.optimizer_step(1e-4)
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        if i >= warm:
            for key, value in (("seconds", t2 - t0), ("issue", t1 - t0), ("launches", launch_count() - n0),
                               ("wait", waited() - w0)):
                out[key].append(value)
    return out


def _ours_cuda(cfg, batches, warm: int, fused: bool = False, kernels=None) -> dict:
    """Our CUDA step (NumbaBackend on cuda): ms, launches and host ms per step, GPU memory. fused: on
    KernelGPT2's fused path (fused=True: flash attention, residual + LayerNorm, the fused classifier, the
    one-launch AdamW); its fields are then named fused_*."""
    import gc

    from numba import cuda

    from .kernel_backend import NumbaBackend
    from .train import OptimConfig
    ctx = cuda.current_context()
    free0, _ = ctx.get_memory_info()
    ours = NumbaBackend(cfg, OptimConfig(), seed=0, device="cuda", fused=fused, kernels=kernels)
    t = _time_steps(ours, batches, warm, cuda.synchronize)
    free1, _ = ctx.get_memory_info()
    m = ours.model
    buffers = sum(b.memory.nbytes for b in (m.params_memory, m.grads_memory, m.m_memory, m.v_memory,
                                            m.acts_memory, m.grads_acts_memory))
    host = [issue - wait for issue, wait in zip(t["issue"], t["wait"])]
    row = {"ours_ms": float(np.median(t["seconds"]) * 1e3), "ours_losses": t["losses"],
           "launches_per_step": int(np.median(t["launches"])), "ours_host_ms": float(np.median(host) * 1e3),
           "ours_gpu_mib": (free0 - free1) / 2**20, "ours_buffers_mib": buffers / 2**20}
    if fused:
        row = {"fused_ms": row["ours_ms"], "fused_losses": row["ours_losses"],
               "fused_launches_per_step": row["launches_per_step"], "fused_host_ms": row["ours_host_ms"],
               "fused_gpu_mib": row["ours_gpu_mib"], "fused_buffers_mib": row["ours_buffers_mib"]}   # no T x T att
    del ours, m
    gc.collect()
    for owner in (getattr(ctx, "memory_manager", None), ctx):   # numba frees device memory lazily: give it
        pending = getattr(owner, "deallocations", None)          # back before the next side's turn
        if pending is not None:
            pending.clear()
    return row


def _torch_cuda(cfg, batches, warm: int) -> dict:
    """PyTorch's step on the GPU (train.TorchBackend on cuda: fp32, TF32 off, fused AdamW): ms, peak memory."""
    import torch

    from .train import OptimConfig, TorchBackend
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    backend = TorchBackend(cfg, OptimConfig(), seed=0, device="cuda")
    t = _time_steps(backend, batches, warm, torch.cuda.synchronize)
    row = {"torch_ms": float(np.median(t["seconds"]) * 1e3), "torch_losses": t["losses"],
           "torch_peak_mib": torch.cuda.max_memory_allocated() / 2**20,
           "torch_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}
    del backend
    torch.cuda.empty_cache()
    return row


def bench_steps_cuda(configs=("tiny", "small", "gpt2"), B=4, T=64, reps=3, warm=2, progress=print,
                     kernels=None, rows: list | None = None) -> list[dict]:
    """Whole training steps on the GPU: our CUDA kernels (NumbaBackend on cuda) against PyTorch on CUDA, the same
    init (seed 0), the same `warm + reps` batches and optimizer settings; ours first, then torch's, each on
    an otherwise empty GPU. One row per config: median ms/step, tokens/s, ours/torch, memory (ours: what the
    driver reports in use after our steps minus before, and our flat buffers alone; torch: its allocator's
    peak), our launches per step (kernels and memsets, kernels._cuda.launch_count) and host ms per step (from
    the step's start until its last call returned, minus the time the host waited for the GPU in the one
    read-back: the host's own work), and the largest |loss difference| over the steps (the two follow each
    other up to float32 rounding). The fused_* fields: our step again with fused=True (flash attention,
    residual + LayerNorm fused, the fused classifier and the one-launch AdamW); "default_path": which of the two
    `gpt2lab train` takes on a GPU (gpt2/choices.default_path: the fused one). kernels: our model's entry points
    for both of our runs (None: the defaults; `--matmul cublas` passes the cuBLAS matmul). rows: as bench_steps'."""
    rows = [] if rows is None else rows
    for name in configs:
        cfg = GPTConfig.preset(name)
        batches = _batches(cfg, B, T, warm + reps)
        row = {"config": name, "B": B, "T": T, "device": "cuda", **_ours_cuda(cfg, batches, warm, kernels=kernels),
               **_ours_cuda(cfg, batches, warm, fused=True, kernels=kernels), **_torch_cuda(cfg, batches, warm)}
        row["ratio"], row["fused_ratio"] = row["ours_ms"] / row["torch_ms"], row["fused_ms"] / row["torch_ms"]
        row["default_path"] = default_path("numba", "cuda")   # the one train runs here
        row["ours_tok_s"], row["torch_tok_s"] = B * T / row["ours_ms"] * 1e3, B * T / row["torch_ms"] * 1e3
        row["max_loss_diff"] = max(abs(a - b) for a, b in zip(row["ours_losses"], row["torch_losses"]))
        rows.append(row)
        progress(f"  step {name:6s} B={B},T={T}  ours {row['ours_ms']:8.2f} ms ({row['ours_tok_s']:8.0f} tok/s, "
                 f"{row['launches_per_step']} launches, host {row['ours_host_ms']:.2f} ms, "
                 f"{row['ours_gpu_mib']:.0f} MiB)  torch {row['torch_ms']:8.2f} ms ({row['torch_tok_s']:8.0f} tok/s, "
                 f"peak {row['torch_peak_mib']:.0f} MiB)  ratio {row['ratio']:.2f}; "
                 f"fused=True{' (the default)' if row['default_path'] == 'fused' else ''} {row['fused_ms']:.2f} ms "
                 f"({row['fused_launches_per_step']} launches, host {row['fused_host_ms']:.2f} ms, "
                 f"{row['fused_gpu_mib']:.0f} MiB), "
                 f"ratio {row['fused_ratio']:.2f}")
    return rows


def profile_step_cuda(config="gpt2", B: int = 4, T: int = 64, warm: int = 2, kernels=None, progress=print,
                      device: str = "cuda", fused: bool = False) -> dict:
    """Where one training step's GPU time goes, kernel by kernel (kernels/profile.py): our CUDA step
    (NumbaBackend on cuda) `warm` times first (compiles, makes the buffers), then once inside `profile()`.
    The dict of Profile.as_dict (clock, launches, step_ms, rows: kernel, calls, ms, pct) plus config, B, T,
    launch_count (kernels._cuda's counter over the step: equals launches when every launch was profiled) and
    wall_ms, the host's time for that step including the final synchronize (the events add some host work).
    config: a preset name or a GPTConfig; device "cudasim" runs it in numba's simulator (the tests).
    fused: profile the fused path (KernelGPT2(fused=True)) instead of the per-op one."""
    import time

    from numba import cuda

    from gpt2lab.kernels._cuda import launch_count
    from gpt2lab.kernels.profile import profile

    from .kernel_backend import NumbaBackend
    from .train import OptimConfig
    cfg = GPTConfig.preset(config) if isinstance(config, str) else config
    backend = NumbaBackend(cfg, OptimConfig(), seed=0, device=device, kernels=kernels, fused=fused)
    batches = _batches(cfg, B, T, warm + 1)
    for x, y in batches[:warm]:
        backend.loss_and_grads(x, y)
        backend.optimizer_step(1e-4)
    x, y = batches[warm]
    cuda.synchronize()
    n0, t0 = launch_count(), time.perf_counter()
    with profile() as prof:
        backend.loss_and_grads(x, y)
        backend.optimizer_step(1e-4)
    wall = time.perf_counter() - t0   # the profile's close synchronizes
    out = {"config": config if isinstance(config, str) else "custom", "B": B, "T": T, "fused": fused,
           "wall_ms": wall * 1e3,
           "launch_count": launch_count() - n0, **prof.as_dict()}
    progress(f"  profile of one step{' (fused)' if fused else ''}, {out['config']} B={B},T={T} "
             f"(wall {out['wall_ms']:.2f} ms):")
    progress("    " + prof.table(top=12).replace("\n", "\n    "))
    return out
