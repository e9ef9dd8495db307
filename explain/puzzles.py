"""Kernel puzzles on the real model: the learner writes a kernel GPT-2 runs, sees its own threads drawn, gets it
checked against PyTorch, and trains the model with it while the live parity check watches.

    check_puzzle("gelu_forward_kernel", gelu_forward_kernel)   # a panel: OK, or FAIL with where / out of bounds / race
    draw_puzzle("gelu_forward_kernel", gelu_forward_kernel)    # which of *your* threads touched which memory
    train_with("gelu_forward_kernel", gelu_forward_kernel)     # a micro GPT-2 trains on your kernel, checked every step
    show_solution("gelu_forward_kernel")                       # on request

One Puzzle per kernel (PUZZLES): the math, a skeleton, the launch, the cases and the PyTorch reference of the
check, and `plug_in`: a gpt2.kernel_model.Kernels with the learner's kernel in place of ours (the model's one swap
point), so gpt2's VerifiedBackend judges it inside the real model -- the parity rows of its op are the
learner's kernel.

Where it runs. A CUDA puzzle runs in numba's CUDA simulator, which is switched on by NUMBA_ENABLE_CUDASIM=1 before
numba is imported -- never in a notebook that already runs the CPU kernels. So the kernel's *source* (its cell,
`inspect.getsource`) is written to a file after HEADER (the names every puzzle cell may use) and run by
`python -m gpt2lab.explain.puzzle_sim` in a subprocess, which hands back the check's panel and the traced launch as
JSON. The CPU puzzle (numba @njit + prange) runs in this process. Simulated threads run in Python: the check
shapes are tiny, and so is the model the plug-in trains (PLUG_MODEL).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .check import Mismatch, first_mismatch
from .exercise import Case, CheckResult, run_check
from .simulator import run_simulated

# What every puzzle cell gets for free: the file the simulator runs is HEADER + the learner's cell. Keep in step
# with explain/puzzle_solutions.py, whose solutions are checked through it.
HEADER = '''import math
import numpy as np
from numba import cuda, float32, njit, prange
from gpt2lab.kernels.layernorm import EPS as LN_EPS, block_sum

GELU_SCALE = float32(math.sqrt(2.0 / math.pi))
GELU_CUBIC = float32(0.044715)
EPS = float32(LN_EPS)
BLOCK = 256
TILE = 4
'''
TILE = 4

# The micro GPT-2 a plugged-in kernel trains (every CUDA thread of every launch runs in Python in the
# simulator): one block, C = 32, the running sentence as ASCII characters.
PLUG_MODEL = dict(block_size=16, vocab_size=128, n_layer=1, n_head=2, n_embd=32)
PLUG_BATCH = (2, 16)
PLUG_LR = 3e-3
SENTENCE = "To be, or not to be: that is the question."


def ceil_div(a: int, b: int) -> int:
    return (a + b - 1) // b


@dataclass
class PCase:
    """One launch a check tries: the kernel's arguments in order (outputs pre-filled), which of them to compare."""
    label: str
    given: str
    arrays: dict
    outputs: tuple
    hint: str = ""       # said when this case fails


@dataclass(frozen=True)
class Puzzle:
    """One kernel to write. name: the kernel's function name (also its exercise name); op: the parity op it
    computes inside the model; entry: the Kernels field it replaces; device: "cuda" (simulator) or "cpu".
    launch(kernel, args, block) runs it on the check's arrays and returns (grid, block); reference(arrays)
    -> {output: expected}; plug(kernel, block) -> the model's entry point; block: threads per block in the
    checks (small, for a readable picture); plug_block: in the model."""
    name: str
    op: str
    entry: str
    device: str
    title: str
    math: str
    skeleton: str
    make_cases: Callable[[], list]
    reference: Callable[[dict], dict]
    launch: Callable
    plug: Callable
    block: int = 8
    plug_block: int = 32
    hint: str = ""
    hints: dict = field(default_factory=dict)
    draw: str = "access"    # which picture draw_puzzle makes (see explain/puzzle_draw.py)


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _torch_outputs(fn, **arrays) -> dict:
    """fn(**float64 tensors) -> {name: tensor}, as numpy."""
    import torch
    out = fn(**{k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()})
    return {k: v.detach().numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------
# 1. GELU forward: elementwise, one thread per element
# ---------------------------------------------------------------------------------------------------------
def _gelu_cases() -> list:
    rng = _rng(1)
    x37 = _f32(np.linspace(-6, 6, 37) + 0.05 * rng.standard_normal(37))
    x_mlp = _f32(2 * rng.standard_normal(2 * 3 * 128))
    return [PCase("37 values from -6 to 6", "n = 37: 3 blocks of 16 threads, the last one 11 threads past the end",
                  {"out": np.zeros(37, np.float32), "inp": x37}, ("out",)),
            PCase("an MLP activation (2, 3, 4C=128), flat", "n = 768 values ~ N(0, 2^2)",
                  {"out": np.zeros(x_mlp.size, np.float32), "inp": x_mlp}, ("out",))]


def _gelu_reference(a: dict) -> dict:
    import torch.nn.functional as F
    return _torch_outputs(lambda inp: {"out": F.gelu(inp, approximate="tanh")}, inp=a["inp"])


def _gelu_launch(kernel, a: dict, block: int):
    n = a["inp"].size
    grid = ceil_div(n, block)
    kernel[grid, block](a["out"], a["inp"], n)
    return grid, block


def _gelu_plug(kernel, block: int):
    def gelu_forward(out, inp):
        n = inp.size
        kernel[ceil_div(n, block), block](out.reshape(n), inp.reshape(n), n)
    return gelu_forward


GELU = Puzzle(
    name="gelu_forward_kernel", op="gelu", entry="gelu_forward", device="cuda", block=16, plug_block=64,
    title="GELU forward, one thread per element",
    math=r"out[i] = 0.5 x (1 + tanh(GELU_SCALE (x + GELU_CUBIC x^3))),  x = inp[i],  for i < n",
    skeleton='''@cuda.jit
def gelu_forward_kernel(out, inp, n):
    i = cuda.grid(1)        # this thread's element: blockIdx.x * blockDim.x + threadIdx.x
    # your code: out[i] = gelu(inp[i]) -- but the last block has threads past the end
    raise NotImplementedError
''',
    make_cases=_gelu_cases, reference=_gelu_reference, launch=_gelu_launch, plug=_gelu_plug,
    hint="GPT-2's GELU is the tanh one: 0.5 x (1 + tanh(GELU_SCALE * (x + GELU_CUBIC * x**3)))")


# ---------------------------------------------------------------------------------------------------------
# 2. residual forward on the CPU: numba @njit(parallel=True) and prange
# ---------------------------------------------------------------------------------------------------------
def _residual_cases() -> list:
    rng = _rng(2)

    def case(label, given, n):
        return PCase(label, given, {"out": np.zeros(n, np.float32), "inp1": _f32(rng.standard_normal(n)),
                                    "inp2": _f32(3 * rng.standard_normal(n))}, ("out",))
    return [case("37 values", "n = 37", 37), case("a (4, 64, 128) stream, flat", "n = 32768", 4 * 64 * 128)]


def _residual_reference(a: dict) -> dict:
    return _torch_outputs(lambda inp1, inp2: {"out": inp1 + inp2}, inp1=a["inp1"], inp2=a["inp2"])


def _residual_launch(kernel, a: dict, block: int):
    kernel(a["out"], a["inp1"], a["inp2"])
    return 1, 1


def _residual_plug(kernel, block: int):
    def residual_forward(out, inp1, inp2):
        kernel(out.reshape(-1), inp1.reshape(-1), inp2.reshape(-1))
    return residual_forward


RESIDUAL = Puzzle(
    name="residual_forward", op="residual", entry="residual_forward", device="cpu",
    title="the residual stream on the CPU: @njit(parallel=True) and prange",
    math="out[i] = inp1[i] + inp2[i] for every i; the arrays arrive flat, (n,)",
    skeleton='''@njit(parallel=True)
def residual_forward(out, inp1, inp2):
    # your code: a prange loop over the elements (numba splits it over the cores)
    raise NotImplementedError
''',
    make_cases=_residual_cases, reference=_residual_reference, launch=_residual_launch, plug=_residual_plug,
    hint="write into out; inp1 and inp2 are only read")


# ---------------------------------------------------------------------------------------------------------
# 3. row softmax: one block per row, two shared-memory tree reductions (max, then sum)
# ---------------------------------------------------------------------------------------------------------
def _softmax_cases() -> list:
    rng = _rng(3)

    def case(label, given, x):
        x = _f32(x)
        return PCase(label, given, {"out": np.zeros_like(x), "inp": x}, ("out",))
    return [case("2 rows of 12 (blocks of 8)", "inp (2, 12): a thread takes channels tid, tid + 8",
                 rng.standard_normal((2, 12))),
            case("3 rows of 5: fewer channels than threads", "inp (3, 5), blocks of 8 threads",
                 rng.standard_normal((3, 5))),
            case("large logits", "inp (2, 20) with values near 500: exp(500) overflows float32",
                 500 + 5 * rng.standard_normal((2, 20)))]


def _softmax_reference(a: dict) -> dict:
    return _torch_outputs(lambda inp: {"out": inp.softmax(-1)}, inp=a["inp"])


def _softmax_launch(kernel, a: dict, block: int):
    N = a["inp"].shape[0]
    kernel[N, block](a["out"], a["inp"])
    return N, block


def _host_losses(losses, probs, targets) -> None:
    """losses[b, t] = -log probs[b, t, targets[b, t]], on host copies of device arrays."""
    from gpt2lab.gpt2.faults import _on_host

    @_on_host
    def nll(losses, probs, targets):
        p = np.take_along_axis(probs, targets[..., None].astype(np.int64), -1)[..., 0]
        losses[:] = -np.log(p)
    nll(losses, probs, targets)


def _softmax_plug(kernel, block: int):
    def crossentropy_forward(losses, probs, logits, targets):
        B, T, V = logits.shape
        kernel[B * T, block](probs.reshape(B * T, V), logits.reshape(B * T, V))
        _host_losses(losses, probs, targets)
    return crossentropy_forward


SOFTMAX = Puzzle(
    name="softmax_kernel", op="crossentropy", entry="crossentropy_forward", device="cuda", draw="shared",
    title="row softmax: one block per row, a shared-memory reduction",
    math="out[r, i] = exp(inp[r, i] - m) / sum_j exp(inp[r, j] - m),  m = max_j inp[r, j]",
    skeleton='''@cuda.jit
def softmax_kernel(out, inp):
    scratch = cuda.shared.array(BLOCK, float32)   # one float per thread of the block, shared by all of them
    r = cuda.blockIdx.x                           # this block's row
    tid = cuda.threadIdx.x                        # thread tid takes channels tid, tid + blockDim.x, ...
    C = inp.shape[1]
    # your code: 1. the row max (each thread's, then a tree in scratch: stride blockDim.x // 2, halving)
    #            2. the sum of exp(x - max), the same way   3. out[r, i] = exp(inp[r, i] - max) / sum
    # every thread must see scratch complete before reading it: cuda.syncthreads()
    raise NotImplementedError
''',
    make_cases=_softmax_cases, reference=_softmax_reference, launch=_softmax_launch, plug=_softmax_plug,
    hint="a thread with no channel must not change the max (start at -math.inf) nor the sum (start at 0)")


# ---------------------------------------------------------------------------------------------------------
# 4. layernorm forward: one block per row, block_sum for the mean and the variance
# ---------------------------------------------------------------------------------------------------------
def _layernorm_cases() -> list:
    rng = _rng(4)

    def case(label, given, N, C, spread=2.0):
        x = rng.normal(1.0 if spread > 0.01 else 0.0, spread, (N, C))
        return PCase(label, given, {"out": np.zeros((N, C), np.float32), "mean": np.zeros(N, np.float32),
                                    "rstd": np.zeros(N, np.float32), "inp": _f32(x),
                                    "weight": _f32(1 + 0.1 * rng.standard_normal(C)),
                                    "bias": _f32(0.1 * rng.standard_normal(C))}, ("out", "mean", "rstd"))
    cases = [case("2 rows of 12 (blocks of 8)", "inp (2, 12) ~ N(1, 2^2)", 2, 12),
            case("3 rows of 40", "inp (3, 40): 5 channels per thread", 3, 40),
            case("fewer channels than threads", "inp (2, 5), blocks of 8", 2, 5),
            case("nearly constant rows", "inp (2, 16) ~ N(0, 0.003^2): the variance is about EPS", 2, 16, 3e-3)]
    cases[-1].hint = "here EPS matters: rstd = 1 / sqrt(var + EPS), EPS inside the square root"
    return cases


def _layernorm_reference(a: dict) -> dict:
    def ln(inp, weight, bias):
        import torch
        mean = inp.mean(-1)
        rstd = 1 / torch.sqrt(inp.var(-1, unbiased=False) + 1e-5)
        return {"out": (inp - mean[:, None]) * rstd[:, None] * weight + bias, "mean": mean, "rstd": rstd}
    return _torch_outputs(ln, inp=a["inp"], weight=a["weight"], bias=a["bias"])


def _layernorm_launch(kernel, a: dict, block: int):
    N = a["inp"].shape[0]
    kernel[N, block](a["out"], a["mean"], a["rstd"], a["inp"], a["weight"], a["bias"])
    return N, block


def _layernorm_plug(kernel, block: int):
    def layernorm_forward(out, mean, rstd, inp, weight, bias):
        C = inp.shape[-1]
        N = inp.size // C
        kernel[N, block](out.reshape(N, C), mean.reshape(N), rstd.reshape(N), inp.reshape(N, C), weight, bias)
    return layernorm_forward


LAYERNORM = Puzzle(
    name="layernorm_forward_kernel", op="layernorm", entry="layernorm_forward", device="cuda", draw="shared",
    title="LayerNorm forward: one block per row",
    math="mean = sum(x) / C,  rstd = 1 / sqrt(sum((x - mean)^2) / C + EPS),  out = (x - mean) rstd weight + bias",
    skeleton='''@cuda.jit
def layernorm_forward_kernel(out, mean, rstd, inp, weight, bias):
    scratch = cuda.shared.array(BLOCK, float32)
    r = cuda.blockIdx.x                # this block's row
    tid = cuda.threadIdx.x             # thread tid takes channels tid, tid + blockDim.x, ...
    C = inp.shape[1]
    # your code: block_sum(scratch, my_partial_sum) returns the block's total to every thread (lesson 4)
    #            then out[r, i] for your channels, and one thread writes mean[r] and rstd[r]
    raise NotImplementedError
''',
    make_cases=_layernorm_cases, reference=_layernorm_reference, launch=_layernorm_launch, plug=_layernorm_plug,
    hint="the variance is the mean of (x - mean)^2 over the row, divided by C (not C - 1)",
    hints={"mean": "mean[r] is the row's mean; write it once (tid == 0)",
           "rstd": "rstd = 1 / sqrt(var + EPS): EPS inside the square root"})


# ---------------------------------------------------------------------------------------------------------
# 5. matmul with shared-memory tiles
# ---------------------------------------------------------------------------------------------------------
def _matmul_cases() -> list:
    rng = _rng(5)

    def case(label, given, N, C, OC):
        return PCase(label, given, {"out": np.zeros((N, OC), np.float32), "inp": _f32(rng.standard_normal((N, C))),
                                    "weight": _f32(rng.standard_normal((OC, C)) / np.sqrt(C)),
                                    "bias": _f32(0.1 * rng.standard_normal(OC))}, ("out",))
    return [case("inp (6, 10), weight (7, 10)", "N = 6, C = 10, OC = 7: no side a multiple of TILE = 4", 6, 10, 7),
            case("inp (8, 8), weight (8, 8)", "whole tiles only", 8, 8, 8),
            case("one row", "inp (1, 3), weight (5, 3)", 1, 3, 5)]


def _matmul_reference(a: dict) -> dict:
    return _torch_outputs(lambda inp, weight, bias: {"out": inp @ weight.T + bias},
                          inp=a["inp"], weight=a["weight"], bias=a["bias"])


def _matmul_launch(kernel, a: dict, block: int):
    N, OC = a["out"].shape
    grid = (ceil_div(OC, TILE), ceil_div(N, TILE))
    kernel[grid, (TILE, TILE)](a["out"], a["inp"], a["weight"], a["bias"])
    return grid[0] * grid[1], TILE * TILE


def _matmul_plug(kernel, block: int):
    def matmul_forward(out, inp, weight, bias):
        C, OC = inp.shape[-1], weight.shape[0]
        N = inp.size // C
        if bias is None:    # lm_head has no bias: a zero one keeps the kernel's signature
            bias = np.zeros(OC, np.float32) if isinstance(inp, np.ndarray) else _device_zeros(OC)
        kernel[(ceil_div(OC, TILE), ceil_div(N, TILE)), (TILE, TILE)](out.reshape(N, OC), inp.reshape(N, C),
                                                                      weight, bias)
    return matmul_forward


def _device_zeros(n: int):
    from numba import cuda
    return cuda.to_device(np.zeros(n, np.float32))


MATMUL = Puzzle(
    name="matmul_tiled_kernel", op="matmul", entry="matmul_forward", device="cuda", block=TILE * TILE,
    plug_block=TILE * TILE, draw="tiles",
    title="matmul with shared-memory tiles",
    math="out[n, o] = sum_c inp[n, c] weight[o, c] + bias[o]  (a Linear layer: weight is (OC, C))",
    skeleton='''@cuda.jit
def matmul_tiled_kernel(out, inp, weight, bias):
    inp_tile = cuda.shared.array((TILE, TILE), float32)   # inp[block's rows, k0:k0+TILE]
    w_tile = cuda.shared.array((TILE, TILE), float32)     # weight[block's columns, k0:k0+TILE]
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    N, C = inp.shape
    OC = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty     # this thread's output row ...
    o = cuda.blockIdx.x * TILE + tx     # ... and column: out[n, o]
    # your code: for k0 in range(0, C, TILE): each thread loads one element of each tile (0.0 past the edges),
    #            wait for all loads, add TILE products from the tiles, wait again before the next loads
    raise NotImplementedError
''',
    make_cases=_matmul_cases, reference=_matmul_reference, launch=_matmul_launch, plug=_matmul_plug,
    hint="a tile element past the edge of inp or weight must be 0.0, and out[n, o] written only if n < N and o < OC")


# ---------------------------------------------------------------------------------------------------------
# 6. encoder backward: a scatter-add, atomics
# ---------------------------------------------------------------------------------------------------------
def sentence_ids() -> np.ndarray:
    """The running sentence's GPT-2 token ids (T,)."""
    from gpt2lab.datasets import gpt2_encoding
    return np.array(gpt2_encoding().encode_ordinary(SENTENCE), dtype=np.int32)


def _encoder_cases() -> list:
    rng = _rng(6)
    ids = sentence_ids()
    _, small = np.unique(ids, return_inverse=True)     # the picture: the sentence's tokens renumbered 0..V-1

    def case(label, given, inp, V, C, maxT):
        B, T = inp.shape
        return PCase(label, given, {"dwte": _f32(rng.standard_normal((V, C))),
                                    "dwpe": _f32(rng.standard_normal((maxT, C))),
                                    "dout": _f32(rng.standard_normal((B, T, C))),
                                    "inp": np.ascontiguousarray(inp, np.int32)}, ("dwte", "dwpe"))
    V = int(small.max()) + 1
    return [case("the running sentence, tokens renumbered", f"inp (1, {ids.size}): {SENTENCE!r}, "
                 f"V = {V}, C = 2, dwte and dwpe start non-zero", small.reshape(1, -1), V, 2, ids.size),
            case("the sentence twice, GPT-2's ids", f"inp (2, {ids.size}), V = 50257, C = 3",
                 np.stack([ids, ids]), 50257, 3, 16)]


def _encoder_reference(a: dict) -> dict:
    def embed(dwte, dwpe, dout):
        import torch
        B, T, C = dout.shape
        wte = torch.zeros_like(dwte, requires_grad=True)
        wpe = torch.zeros_like(dwpe, requires_grad=True)
        (wte[torch.from_numpy(a["inp"]).long()] + wpe[:T]).backward(dout)
        return {"dwte": dwte + wte.grad, "dwpe": dwpe + wpe.grad}    # the kernel accumulates
    return _torch_outputs(embed, dwte=a["dwte"], dwpe=a["dwpe"], dout=a["dout"])


def _encoder_launch(kernel, a: dict, block: int):
    B, T, C = a["dout"].shape
    grid = ceil_div(B * T * C, block)
    kernel[grid, block](a["dwte"], a["dwpe"], a["dout"], a["inp"])
    return grid, block


def _encoder_plug(kernel, block: int):
    def encoder_backward(dwte, dwpe, dout, inp):
        B, T, C = dout.shape
        kernel[ceil_div(B * T * C, block), block](dwte, dwpe, dout, inp)
    return encoder_backward


ENCODER = Puzzle(
    name="encoder_backward_kernel", op="encoder", entry="encoder_backward", device="cuda", plug_block=64,
    draw="atomics",
    title="the embeddings' backward: a scatter-add with atomics",
    math="dwte[inp[b, t], c] += dout[b, t, c],  dwpe[t, c] += dout[b, t, c]  for every b, t, c",
    skeleton='''@cuda.jit
def encoder_backward_kernel(dwte, dwpe, dout, inp):
    B, T, C = dout.shape
    e = cuda.grid(1)          # one thread per (b, t, c): e = (b * T + t) * C + c
    # your code: add dout[b, t, c] into dwte[inp[b, t], c] and dwpe[t, c] -- a repeated token (" be" occurs
    # twice) makes two threads add into one element: cuda.atomic.add(array, (row, col), value)
    raise NotImplementedError
''',
    make_cases=_encoder_cases, reference=_encoder_reference, launch=_encoder_launch, plug=_encoder_plug,
    block=8, hint="add into dwte and dwpe (they hold other gradients already), with cuda.atomic.add")


PUZZLES: dict[str, Puzzle] = {p.name: p for p in (GELU, RESIDUAL, SOFTMAX, LAYERNORM, MATMUL, ENCODER)}

OOB_HINT = ("the grid is rounded up to whole blocks: threads past the end of the data must not touch it "
            "(guard with an if), and a GPU has no negative indices")
RACE_HINT = ("a cuda.syncthreads() between the writes and the reads of shared memory (and before it is "
             "overwritten), or cuda.atomic.add where several threads add into one element")


def puzzle(name: str) -> Puzzle:
    """PUZZLES[name]; ValueError listing them for an unknown name."""
    if name not in PUZZLES:
        raise ValueError(f"puzzle: no puzzle named {name!r}; expected one of {', '.join(PUZZLES)}")
    return PUZZLES[name]


# ---------------------------------------------------------------------------------------------------------
# running a check (in the simulator process for CUDA puzzles, here for the CPU one)
# ---------------------------------------------------------------------------------------------------------
def _run_case(p: Puzzle, kernel, case: PCase):
    """Launch the kernel on copies of the case's arrays: ({output: array}, Trace or None)."""
    arrays = {k: np.array(v, copy=True) for k, v in case.arrays.items()}
    if p.device == "cpu":
        import warnings

        from numba.core.errors import NumbaPerformanceWarning
        with warnings.catch_warnings():     # "parallel=True but nothing to parallelise": the check says it better
            warnings.simplefilter("ignore", NumbaPerformanceWarning)
            p.launch(kernel, arrays, p.block)
        return {k: arrays[k] for k in case.outputs}, None
    from . import cudatrace as CT
    recorder = CT.Recorder()
    CT._install_hooks(recorder, _shared_name)
    args = {k: CT.Recording(k, a, recorder) for k, a in arrays.items()}
    grid, block = p.launch(kernel, args, p.block)
    trace = CT.Trace(p.name, grid, block, {k: a.shape for k, a in arrays.items()},
                     sorted(recorder.events, key=lambda e: e.seq), {k: arrays[k] for k in case.outputs},
                     label=f"your {p.name}[grid={grid}, block={block}]  ({case.label})",
                     shared=sorted(CT._Active.shared_names))
    return {k: arrays[k] for k in case.outputs}, trace


def _shared_name(key) -> str:
    """A shared array's name from the line that makes it: `inp_tile = cuda.shared.array(...)` -> "inp_tile"."""
    import linecache
    import re
    filename, line = key
    m = re.match(r"\s*(\w+)\s*=\s*cuda\.shared\.array", linecache.getline(filename, line))
    return m.group(1) if m else f"shared@{line}"


def _case(p: Puzzle, case: PCase, traces: list) -> Case:
    want = p.reference(case.arrays)

    def run(kernel):
        outs, trace = _run_case(p, kernel, case)
        traces.append(trace)
        return outs, trace

    def compare(got) -> Mismatch | None:
        outs, trace = got
        for name in case.outputs:
            mismatch = first_mismatch(name, outs[name], want[name])
            if mismatch is not None:
                mismatch.hint = p.hints.get(name, "")
                return mismatch
        if trace is not None:
            from .cudatrace import hazards
            found = hazards(trace, limit=1)
            if found:
                h = found[0]
                return Mismatch(f"a race on {h.array}: the values may come out right here and wrong on a GPU",
                                "every element written by one thread between two barriers, or atomically",
                                h.describe(trace.shapes.get(h.array)), RACE_HINT)
        return None
    return Case(case.label, case.given, run, compare, case.hint)


def _parallel_case(kernel) -> Case:
    """The CPU puzzle's last case: compiled with parallel=True, so that prange really splits the loop."""
    def compare(got):
        return None if got else Mismatch("the function is not compiled with parallel=True: prange runs as range",
                                         "@njit(parallel=True)", "parallel off")
    return Case("runs in parallel", "@njit(parallel=True)",
                lambda fn: bool(getattr(fn, "targetoptions", {}).get("parallel")), compare)


def run_puzzle_check(name: str, kernel) -> tuple[CheckResult, object]:
    """Check `kernel` on puzzle `name`'s cases: (the panel, the first case's Trace or None). For a CUDA puzzle
    this must run where the simulator is on (puzzle_sim does); a CPU puzzle runs anywhere."""
    p = puzzle(name)
    traces: list = []
    cases = [_case(p, c, traces) for c in p.make_cases()]
    if p.device == "cpu":
        cases.append(_parallel_case(kernel))
    result = run_check(p.name, kernel, cases, hint=p.hint)
    if not result.ok and "out of bounds" in result.problem:
        result.hint = OOB_HINT
    if p.device == "cuda" and "object is not subscriptable" in result.problem:
        result.hint = "decorate the kernel with @cuda.jit: a kernel is launched as kernel[grid, block](...)"
    return result, (traces[0] if traces else None)


# ---------------------------------------------------------------------------------------------------------
# the caller's side: source -> subprocess -> panel, trace, training
# ---------------------------------------------------------------------------------------------------------
def kernel_source(kernel) -> str:
    """The source of the learner's kernel: a string as is, else the function's (decorators included)."""
    if isinstance(kernel, str):
        return textwrap.dedent(kernel)
    fn = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None) or kernel
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise ValueError(f"kernel_source: cannot read the source of {kernel!r} ({e}); pass the source as a string")


_RUNS: dict = {}


def _simulate(action: str, name: str, source: str, *extra: str, timeout: float = 300) -> dict:
    """Run `python -m gpt2lab.explain.puzzle_sim ACTION NAME FILE ...` with the simulator on; its JSON answer.
    The same request twice in one session is answered from memory (the check's panel and trace come together)."""
    key = (action, name, source, extra)
    if key in _RUNS:
        return _RUNS[key]
    with tempfile.TemporaryDirectory(prefix="gpt2lab-puzzle-") as folder:
        path = os.path.join(folder, f"{name}_{hashlib.sha1(source.encode()).hexdigest()[:8]}.py")
        with open(path, "w") as f:
            f.write(HEADER + "\n\n" + source)
        proc = run_simulated("gpt2lab.explain.puzzle_sim", action, name, path, *extra, timeout=timeout,
                             what=f"puzzle {name}")
    _RUNS[key] = answer = json.loads(proc.stdout)
    return answer


def _result_from(d: dict) -> CheckResult:
    return CheckResult(**d)


def check_puzzle(name: str, kernel) -> CheckResult:
    """The panel for the learner's kernel (a function or its source): OK, or FAIL with the failing case, where
    the values differ, an out-of-bounds index or a race. The traced launch of the first case is on
    `result.trace` (None for the CPU puzzle)."""
    p = puzzle(name)
    if p.device == "cpu":
        if isinstance(kernel, str):
            kernel = load_kernel(name, kernel)
        result, trace = run_puzzle_check(name, kernel)
    else:
        answer = _simulate("check", name, kernel_source(kernel))
        result = _result_from(answer["result"])
        from .cudatrace import Trace
        trace = Trace.from_json(answer["trace"]) if answer.get("trace") else None
    result.trace = trace
    return result


def load_kernel(name: str, source: str):
    """exec HEADER + source here and return the function `name` it defines (ValueError when none)."""
    space: dict = {}
    exec(compile(HEADER + "\n\n" + source, f"<puzzle {name}>", "exec"), space)
    if name not in space:
        raise ValueError(f"the puzzle cell must define a function named {name}")
    return space[name]


def draw_puzzle(name: str, kernel):
    """The learner's own kernel drawn from its traced launch (the first case of the check); the check's panel
    instead when the kernel could not finish that launch (not written yet, out of bounds, ...)."""
    from .puzzle_draw import draw
    if puzzle(name).device == "cpu":
        raise ValueError(f"draw_puzzle: {name} runs on the CPU, there are no CUDA threads to draw")
    result = check_puzzle(name, kernel)
    if result.trace is None:     # the kernel stopped before its first launch finished: its panel says why
        return result
    return draw(puzzle(name), result.trace)


# ---------------------------------------------------------------------------------------------------------
# plug in: the model with the learner's kernel
# ---------------------------------------------------------------------------------------------------------
def plug_in(name: str, kernel, block: int | None = None):
    """A gpt2.kernel_model.Kernels with the learner's kernel in place of ours for puzzle `name`'s entry point:
    KernelGPT2(config, kernels=plug_in(...)). A CUDA kernel runs on whatever arrays the model holds -- numpy
    buffers in the simulator, device arrays on a GPU (pass block=256 there). block: threads per block."""
    from gpt2lab.gpt2.kernel_model import Kernels
    p = puzzle(name)
    return Kernels(**{p.entry: p.plug(kernel, block or p.plug_block)})


def plug_batch() -> tuple[np.ndarray, np.ndarray]:
    """The micro model's batch: the running sentence (repeated) as ASCII codes, (B, T) inputs and targets."""
    B, T = PLUG_BATCH
    codes = np.frombuffer((SENTENCE + " ") .encode("ascii") * 2, dtype=np.uint8).astype(np.int64)
    x = np.stack([codes[b * T: b * T + T] for b in range(B)])
    y = np.stack([codes[b * T + 1: b * T + T + 1] for b in range(B)])
    return x, y


def train_plugged(name: str, kernel, steps: int = 4, seed: int = 0) -> dict:
    """Train the micro GPT-2 (PLUG_MODEL) `steps` steps on one batch with the learner's kernel plugged in, every
    step verified by gpt2's VerifiedBackend. {"losses": [...], "reports": [ParityReport.to_dict()]}.
    Runs in this process: the simulator must be on for a CUDA puzzle (train_with arranges that)."""
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_backend import NumbaBackend, VerifiedBackend
    from gpt2lab.gpt2.train import OptimConfig
    backend = VerifiedBackend(NumbaBackend(GPTConfig(**PLUG_MODEL), OptimConfig(grad_clip=1.0), seed,
                                  kernels=plug_in(name, kernel)), every=1, log=lambda line: None)
    x, y = plug_batch()
    losses = []
    for _ in range(steps):
        losses.append(float(backend.loss_and_grads(x, y)))
        backend.optimizer_step(PLUG_LR)
    return {"losses": losses, "reports": [r.to_dict() for r in backend.reports]}


@dataclass
class PlugRun:
    """A training run of the micro model with the learner's kernel: per step the loss and the parity verdict.
    Shown as a table; `ok` when every verified step matched PyTorch."""
    name: str
    op: str
    losses: list
    reports: list

    @property
    def ok(self) -> bool:
        return all(r["summary"]["ok"] for r in self.reports)

    def first_failure(self) -> dict | None:
        """The first failing parity row (a dict: op, layer, direction, tensor, ratio), or None."""
        return next((r["summary"]["first_failure"] for r in self.reports if not r["summary"]["ok"]), None)

    def op_rows(self, step: int = 0) -> list:
        """The parity rows of the learner's op at verified step number `step` (0: the first)."""
        return [r for r in self.reports[step]["rows"] if r["op"] == self.op]

    def lines(self) -> list[str]:
        out = [f"the micro GPT-2 trained {len(self.losses)} steps with your {self.name} as its {self.op} kernel"]
        for loss, rep in zip(self.losses, self.reports):
            s = rep["summary"]
            worst = s["worst"].get(self.op, {})
            ratios = ", ".join(f"{d} {v:.2g}" for d, v in worst.items())
            out.append(f"  step {s['step']}: loss {loss:.4f}  parity {'OK' if s['ok'] else 'MISMATCH'} "
                       f"({s['checked']} tensors; {self.op}: ours/torch32 {ratios})")
        first = self.first_failure()
        if first is not None:
            out.append(f"  first mismatch: op {first['op']}, tensor {first['tensor']} ({first['direction']}), "
                       f"ours/torch32 {first['ratio']:.3g}")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        import html
        from .palette import FAIL_COLOR, OK_COLOR
        colour = OK_COLOR if self.ok else FAIL_COLOR
        body = "\n".join(html.escape(line) for line in self.lines())
        return (f'<pre style="border-left:6px solid {colour};padding:4px 10px;font-size:13px;'
                f'background:#fafafa">{body}</pre>')


def train_with(name: str, kernel, steps: int = 4, check_first: bool = True):
    """Train the micro GPT-2 with the learner's kernel plugged in, parity-checked every step (a PlugRun table).
    A CUDA kernel runs in the simulator, in a subprocess; the CPU one here. A kernel that fails its check is
    not plugged in: its CheckResult panel comes back instead (check_first=False plugs it in anyway, to watch
    parity catch it)."""
    p = puzzle(name)
    checked = check_puzzle(name, kernel) if check_first else None
    if checked is not None and not checked.ok:   # a kernel failing its check would only crash or derail the model
        checked.problem = "fix the check first -- " + checked.problem
        return checked
    if p.device == "cpu":
        fn = load_kernel(name, kernel) if isinstance(kernel, str) else kernel
        answer = train_plugged(name, fn, steps)
    else:
        answer = _simulate("train", name, kernel_source(kernel), str(steps), timeout=600)
    return PlugRun(name, p.op, answer["losses"], answer["reports"])


__all__ = ["PUZZLES", "Puzzle", "PCase", "HEADER", "PLUG_MODEL", "puzzle", "check_puzzle", "draw_puzzle",
           "train_with", "plug_in", "PlugRun", "kernel_source", "run_puzzle_check", "train_plugged"]
