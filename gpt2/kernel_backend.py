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

import sys
from typing import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .config import GPTConfig, OptimConfig
from .guards import check_finite
from .kernel_model import KernelGPT2
from .parity import ParityMismatch, ParityMonitor, ParityReport, format_mismatch

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

    def __init__(self, config: GPTConfig, optim=None, seed: int = 0, device: str = "cpu", kernels=None,
                 fused: bool = False):
        if device == "cpu":
            flush_denormals()
        self.config, self.optim = config, optim or OptimConfig()
        # fused: the fused classifier and the one-launch AdamW (CUDA only; see KernelGPT2)
        self.model = KernelGPT2(config, device=device, seed=seed, kernels=kernels, fused=fused)
        self._norm = None   # the grad norm loss_and_grads read back with the loss

    def loss_and_grads(self, x, y) -> float:
        """Forward and backward on one batch x, y: (B, T) ints; leaves the gradients in model.grads.

        On a GPU the loss and the grad norm are reduced there after the backward and come back in one copy,
        the step's only device-to-host copy (the norm is kept for optimizer_step)."""
        m = self.model
        m.forward(x, y, read_loss=False)
        m.zero_grad()
        m.backward()
        loss, self._norm = m.loss_and_grad_norm()
        return loss

    def optimizer_step(self, lr: float) -> float:
        """Clip (if OptimConfig.grad_clip) and one AdamW update. Returns the global grad norm before clipping."""
        o, m = self.optim, self.model
        norm, self._norm = self._norm, None   # loss_and_grads' norm, unless the grads changed since
        if norm is None:
            norm = m.grad_norm()
        check_finite("gradient norm", norm, m.step + 1)  # before AdamW: the params stay as they were
        if o.grad_clip is not None and norm > o.grad_clip:
            m.scale_grads(o.grad_clip / (norm + 1e-6))  # torch.nn.utils.clip_grad_norm_'s formula, on the device
        m.adamw_step(lr, o.beta1, o.beta2, o.eps, o.weight_decay)
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


# ---------------------------------------------------------------- verified training (live parity)
class VerifiedBackend:
    """The trainer's backend protocol around a numba backend, with every K-th step checked by a ParityMonitor.

    backend: a backend whose `.model` is a KernelGPT2. every: verify steps 1, 1+K, 1+2K, ... (the first step
    always, so a broken kernel shows at once). on_mismatch: "warn" prints the failure and goes on; "stop" also
    makes `on_step` (pass it to train()) raise ParityMismatch: the trainer stops, keeps latest.pt as it was
    before the mismatch and saves the mismatching state to its own file.
    log(text): where mismatch lines go (default: stderr). `step_extras()` hands the trainer the parity
    figures of the step just taken, {"parity": {summary, rows}}, to merge into its JSON log line. fault: the
    gpt2.faults.Fault injected on purpose, if any (`--inject-fault`): the parity record names it.
    """

    def __init__(self, backend, every: int = 1, on_mismatch: str = "warn", log: Callable | None = None,
                 fault=None):
        if on_mismatch not in ("warn", "stop"):
            raise ValueError(f"VerifiedBackend: on_mismatch must be 'warn' or 'stop', got {on_mismatch!r}")
        if every < 1:
            raise ValueError(f"VerifiedBackend: every must be >= 1, got {every}")
        self.backend, self.every, self.on_mismatch, self.fault = backend, every, on_mismatch, fault
        self.monitor = ParityMonitor(backend.model)
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.reports, self.mismatch, self.stopped = [], None, False
        self._rows, self._step, self._extras = None, None, {}

    def __getattr__(self, name):  # config, name, eval_loss, generate, state_dict, ... pass straight through
        if name == "backend":       # not set yet (copy, pickle): no endless recursion
            raise AttributeError(name)
        return getattr(self.backend, name)

    def loss_and_grads(self, x, y) -> float:
        self._extras = {}
        step = self.backend.model.step + 1          # the optimizer step this batch is for (1-based)
        self._step = step if (step - 1) % self.every == 0 else None
        # the fused classifier writes probs only when asked: on the verified steps, so parity can read them
        self.backend.model.write_probs = self._step is not None
        if self._step is None:
            return self.backend.loss_and_grads(x, y)
        self.monitor.reference_step(x, y)
        loss = self.backend.loss_and_grads(x, y)
        self._rows = self.monitor.compare(step)
        return loss

    def optimizer_step(self, lr: float) -> float:
        if self._step is None:
            return self.backend.optimizer_step(lr)
        self.monitor.snapshot_optimizer()
        norm = self.backend.optimizer_step(lr)
        o = self.backend.optim
        adamw_rows = self.monitor.compare_adamw(self._step, lr, o.beta1, o.beta2, o.eps, o.weight_decay)
        report = ParityReport(self._step, self._rows + adamw_rows)
        self.reports.append(report)
        self._extras = {"parity": report.to_dict()}
        if self.fault is not None:   # the log says which kernel was broken on purpose, for the record
            self._extras["parity"]["injected_fault"] = {"name": self.fault.name, "op": self.fault.op,
                                                        "doc": self.fault.doc}
        if not report.ok:
            self.log(format_mismatch(report))
            self.mismatch = self.mismatch or report
        return norm

    def step_extras(self) -> dict:
        """Extra fields for the trainer's JSON log line of the step just taken ({} on unverified steps)."""
        return self._extras

    def on_step(self, record: dict) -> None:
        """The trainer's step callback: with on_mismatch="stop", raise ParityMismatch after a failed step."""
        if self.on_mismatch == "stop" and self.mismatch is not None:
            self.stopped = True
            raise ParityMismatch(self.mismatch)

    def stop_report(self, max_rows: int = 12) -> str:
        """What stopped training: the first failing op, layer, tensor and error, then the failing rows."""
        report = self.mismatch
        if report is None:
            return "parity: no mismatch"
        lines = ["training stopped: " + format_mismatch(report), "failing tensors, in pass order:"]
        lines += [f"  {r.describe()}" for r in report.failures[:max_rows]]
        if len(report.failures) > max_rows:
            lines.append(f"  ... and {len(report.failures) - max_rows} more")
        return "\n".join(lines)


def verified_backend(backend, every: int, on_mismatch: str = "warn", log: Callable | None = None, fault=None):
    """`gpt2lab train --verify-every K`: the backend wrapped in a VerifiedBackend; CommandError (one line) for
    a backend that has no kernel model to verify."""
    if not hasattr(backend, "model") or not hasattr(backend.model, "grads_acts"):
        from .cli import CommandError
        raise CommandError(f"--verify-every checks the numba kernels against PyTorch: it needs --backend numba, "
                           f"not {getattr(backend, 'name', type(backend).__name__)!r}")
    return VerifiedBackend(backend, every, on_mismatch, log, fault)
