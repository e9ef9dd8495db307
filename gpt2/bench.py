"""One training step of the numba backend against the torch backend, timed side by side (`gpt2lab bench`).

Both are the trainer's own backends (train.TorchBackend, kernel_backend.NumbaBackend) with the same config,
seed, batch and optimizer settings, so this is the step `gpt2lab train` takes: forward, backward, gradient
clip and AdamW. The two steps alternate (kernels.bench.side_by_side), so a busy machine slows both alike.

Threads: the CPU matmul calls OpenBLAS (through scipy), which starts its own thread pool beside numba's and
torch's. On a small machine those extra threads spin-wait and the comparison measures that, not the
kernels: set OPENBLAS_NUM_THREADS=1 (before Python starts) for a fair one (docs/figures.md has the figures).
"""
from __future__ import annotations

import functools

import numpy as np

from gpt2lab.kernels.bench import side_by_side

from .config import GPTConfig


def bench_steps(device="cpu", configs=("tiny", "small", "gpt2"), B=4, T=64, reps=3, progress=print,
                kernels=None) -> list[dict]:
    """One row per config: median milliseconds and tokens/s of one step of ours and torch's, and ours/torch.

    kernels: the numba model's entry points (gpt2.kernel_model.Kernels; None: the defaults), e.g. the cuBLAS
    matmul of `gpt2lab bench --matmul cublas`, which needs the step on the GPU."""
    import torch

    from .kernel_backend import NumbaBackend
    from .train import OptimConfig, TorchBackend
    if device != "cpu":
        progress("  training step: the torch backend runs on the CPU only; comparing on cpu")
        kernels = None  # a GPU-only matmul (cublas) cannot run in this CPU step
    torch.set_flush_denormal(True)
    rows = []
    for name in configs:
        cfg = GPTConfig.preset(name)
        ours_b = NumbaBackend(cfg, OptimConfig(), seed=0, kernels=kernels)
        torch_b = TorchBackend(cfg, OptimConfig(), seed=0)
        rng = np.random.default_rng(0)
        x = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int64)
        y = rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int64)

        def step(backend):
            backend.loss_and_grads(x, y)
            backend.optimizer_step(1e-4)
        t_ours, t_torch = side_by_side(functools.partial(step, ours_b), functools.partial(step, torch_b), reps)
        row = {"config": name, "B": B, "T": T, "device": "cpu", "ours_ms": t_ours * 1e3, "torch_ms": t_torch * 1e3,
               "ratio": t_ours / t_torch, "ours_tok_s": B * T / t_ours, "torch_tok_s": B * T / t_torch}
        rows.append(row)
        progress(f"  step {name:6s} B={B},T={T}  ours {row['ours_ms']:8.1f} ms ({row['ours_tok_s']:7.0f} tok/s)"
                 f"  torch {row['torch_ms']:8.1f} ms ({row['torch_tok_s']:7.0f} tok/s)  ratio {row['ratio']:.2f}")
    return rows
