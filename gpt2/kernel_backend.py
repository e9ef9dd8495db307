"""NumbaBackend: the trainer's backend protocol (see gpt2/train.py) over the kernel-backed KernelGPT2.

`gpt2lab train --backend numba` trains with it. It starts from `init_params(config, seed)` like TorchBackend,
clips the global gradient norm with torch's formula and applies the same AdamW (decay on the matrices only),
so the two backends follow each other step by step up to float32 rounding.

Denormals: tiny gradients squared in AdamW's v (and tiny activations) fall into float32's denormal range,
where x86 arithmetic is many times slower. PyTorch flushes them with torch.set_flush_denormal(True), which sets
the FTZ/DAZ bits of the calling thread's MXCSR register. numba's kernels run on numba's own worker threads,
so `flush_denormals()` sets the same bits in each of them (and in this thread), from inside a parallel loop.

The step time against the torch backend: `gpt2lab bench` (gpt2/bench.py); its figures, and how OpenBLAS's
own threads skew them, are in docs/figures.md.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import GPTConfig
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
        from .train import OptimConfig
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
