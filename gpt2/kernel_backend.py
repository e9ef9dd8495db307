"""NumbaBackend: the trainer's backend protocol (see gpt2/train.py) over the kernel-backed KernelGPT2.

`gpt2lab train --backend numba` trains with it. It starts from `init_params(config, seed)` like TorchBackend,
clips the global gradient norm with torch's formula and applies the same AdamW (decay on the matrices only),
so the two backends follow each other step by step up to float32 rounding.

Denormals: tiny gradients squared in AdamW's v (and tiny activations) fall into float32's denormal range,
where x86 arithmetic is many times slower. PyTorch flushes them with torch.set_flush_denormal(True), which sets
the FTZ/DAZ bits of the calling thread's MXCSR register. numba's kernels run on numba's own worker threads,
so `flush_denormals()` sets the same bits in each of them (and in this thread), from inside a parallel loop.

    python -m gpt2lab.gpt2.kernel_backend --config tiny --batch 8 --seq 64   # step time, numba vs torch

Threads: the CPU matmul calls OpenBLAS (through scipy), which starts its own thread pool beside numba's and
torch's. On a small machine those extra threads spin-wait and the comparison measures that, not the kernels:
set OPENBLAS_NUM_THREADS=1 (before Python starts) for a fair one. Measured on the 2-core CI machine while it
was heavily loaded (load average 11-19, so only the ratios mean much), tiny, T=64, median of 8 steps:

    OPENBLAS_NUM_THREADS=1, --threads 1, B=8    numba/torch 0.70 (CPU time 296 ms vs 426 ms per step)
    OPENBLAS_NUM_THREADS=1, --threads 1, B=4    numba/torch 0.76 (155 ms vs 205 ms)
    OPENBLAS_NUM_THREADS=1, --threads 2, B=8    numba/torch 0.89 (wall), 0.86 (CPU time)
    OpenBLAS default,       --threads 1, B=4    numba/torch 2.9  (OpenBLAS's own threads spinning)
"""
from __future__ import annotations

import time

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import GPTConfig, OptimConfig
from .guards import check_finite
from .kernel_model import KernelGPT2

# ---------------------------------------------------------------- flush-to-zero on numba's threads
MXCSR_FTZ = 1 << 15  # flush-to-zero: a result that would be denormal becomes 0
MXCSR_DAZ = 1 << 6   # denormals-are-zero: a denormal input is read as 0


@intrinsic
def _set_mxcsr_ftz_daz(typingctx):
    """Set FTZ and DAZ in this thread's MXCSR (x86 SSE control register): stmxcsr, or the bits in, ldmxcsr."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        slot = cgutils.alloca_once(builder, i32)
        fnty = ir.FunctionType(ir.VoidType(), [slot.type])
        stmxcsr = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
        ldmxcsr = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
        builder.call(stmxcsr, [slot])
        builder.store(builder.or_(builder.load(slot), ir.Constant(i32, MXCSR_FTZ | MXCSR_DAZ)), slot)
        builder.call(ldmxcsr, [slot])
        return context.get_dummy_value()
    return types.void(), codegen


@njit
def _flush_this_thread():
    _set_mxcsr_ftz_daz()


@njit(parallel=True)
def _flush_every_thread(n):
    # numba splits prange's range into one chunk per worker thread: n >= the thread count reaches them all
    done = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        _set_mxcsr_ftz_daz()
        done[i] = numba.get_thread_id()
    return done


@njit(parallel=True)
def _denormal_results(tiny, n):
    # tiny * 0.5 is a denormal float32 when tiny is the smallest normal; flushed, it is exactly 0
    out = np.empty(n, dtype=np.float32)
    for i in prange(n):
        out[i] = tiny[0] * np.float32(0.5)
    return out


def flush_denormals() -> bool:
    """Flush denormals to zero in this thread and in every numba worker thread. Returns True when verified:
    a denormal result computed on each thread then comes out as 0."""
    import platform
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # MXCSR is x86's; elsewhere leave the default
    _flush_this_thread()
    n = 64 * numba.get_num_threads()
    _flush_every_thread(n)
    tiny = np.array([np.finfo(np.float32).tiny], dtype=np.float32)
    return not _denormal_results(tiny, n).any()


# ---------------------------------------------------------------- the backend
class NumbaBackend:
    """The trainer's backend protocol over KernelGPT2 (numba kernels on the CPU, or CUDA with device="cuda")."""
    name = "numba"

    def __init__(self, config: GPTConfig, optim=None, seed: int = 0, device: str = "cpu", kernels=None):
        if device == "cpu":
            flush_denormals()
        self.config, self.optim = config, optim or OptimConfig()
        self.model = KernelGPT2(config, device=device, seed=seed, kernels=kernels)

    def loss_and_grads(self, x, y) -> float:
        """Forward and backward on one batch x, y: (B, T) ints; leaves the gradients in model.grads."""
        loss = self.model.forward(x, y)
        self.model.zero_grad()
        self.model.backward()
        return loss

    def optimizer_step(self, lr: float) -> float:
        """Clip (if OptimConfig.grad_clip) and one AdamW update. Returns the global grad norm before clipping."""
        o = self.optim
        norm = self.model.clip_grad_norm(o.grad_clip) if o.grad_clip is not None else self.model.grad_norm()
        check_finite("gradient norm", norm, self.model.step + 1)  # before AdamW: the params stay as they were
        self.model.adamw_step(lr, o.beta1, o.beta2, o.eps, o.weight_decay)
        return norm

    def eval_loss(self, x, y) -> float:
        return self.model.forward(x, y)

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0) -> np.ndarray:
        return self.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)

    def state_dict(self) -> dict:
        return {"params": self.model.params_numpy(), "optim": self.model.optimizer_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_params(state["params"])
        if state.get("optim") is not None:
            self.model.load_optimizer_state(state["optim"])


# ---------------------------------------------------------------- step time, side by side
def compare_step_times(config: GPTConfig, B: int = 8, T: int = 64, steps: int = 10, warmup: int = 2,
                       seed: int = 0) -> dict:
    """Seconds per training step (forward, backward, AdamW) of the numba and torch backends, in one process.

    Both flush denormals. The steps alternate (numba, torch, numba, ...) so that anything else the machine is
    doing slows both alike; the median of each is reported, as wall-clock seconds and as this process's CPU
    seconds (all threads; less sensitive to a busy machine, though a spinning idle thread counts too).
    Returns {"numba": s, "torch": s, "ratio": numba/torch, "numba_cpu": s, "torch_cpu": s, "ratio_cpu": ...}.
    """
    import torch

    from .train import TorchBackend
    torch.set_flush_denormal(True)
    backends = {"numba": NumbaBackend(config, OptimConfig(grad_clip=1.0), seed),
                "torch": TorchBackend(config, OptimConfig(grad_clip=1.0), seed)}
    rng = np.random.default_rng(seed)
    wall = {name: [] for name in backends}
    cpu = {name: [] for name in backends}
    for i in range(warmup + steps):
        x, y = (rng.integers(0, config.vocab_size, size=(B, T)) for _ in range(2))
        for name, backend in backends.items():
            t0, c0 = time.perf_counter(), time.process_time()
            backend.loss_and_grads(x, y)
            backend.optimizer_step(1e-3)
            if i >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    out = {name: float(np.median(t)) for name, t in wall.items()}
    out.update({f"{name}_cpu": float(np.median(t)) for name, t in cpu.items()})
    out["ratio"] = out["numba"] / out["torch"]
    out["ratio_cpu"] = out["numba_cpu"] / out["torch_cpu"]
    return out


def main(argv=None) -> int:
    import argparse

    import torch
    p = argparse.ArgumentParser(description="step time of the numba backend vs the torch backend")
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="threads for both torch and numba (default: theirs)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    config = GPTConfig.preset(args.config)
    r = compare_step_times(config, args.batch, args.seq, args.steps)
    print(f"{args.config} B={args.batch} T={args.seq}, {torch.get_num_threads()} torch threads, "
          f"{numba.get_num_threads()} numba threads: numba {r['numba'] * 1e3:.1f} ms/step, "
          f"torch {r['torch'] * 1e3:.1f} ms/step, ratio numba/torch {r['ratio']:.2f} "
          f"(CPU time: numba {r['numba_cpu'] * 1e3:.1f} ms, torch {r['torch_cpu'] * 1e3:.1f} ms, "
          f"ratio {r['ratio_cpu']:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
