"""Which thread touched which memory: a traced run of the CUDA layernorm kernel (GPU-Puzzles' `show()`).

numba's CUDA simulator runs every CUDA thread as Python code, so a kernel's
arrays can be replaced by recording proxies: each `inp[r, i]` read or `out[r, i] = ...` write logs
(block, thread, array, index, op, phase, value). `phase` counts the `syncthreads` barriers the thread
has passed, so events in one phase happened between the same two barriers. Shared memory is recorded
the same way (the simulator's `cuda.shared.array` is patched to hand out a proxy).

The simulator is switched on by NUMBA_ENABLE_CUDASIM=1, read when numba is first imported, and it must
never leak into the caller (a notebook has already imported numba for the CPU kernels). So the run
happens in a subprocess:

    trace = trace_layernorm("v2", inp (N, C) float32)      # runs `python -m gpt2lab.explain.cudatrace`

which passes the trace back as JSON. The pictures (`access_diagram`, `reduction_diagram`) are computed from
the trace, never drawn by hand.
"""
from __future__ import annotations

import itertools
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from .simulator import child_ready, run_simulated

KERNELS = ("v1", "v2")
READ_COLOR = "#9ecae1"     # forward blues: a read is light,
WRITE_COLOR = "#08519c"    # a write dark
IDLE_COLOR = "#f0f0f0"


class Event(NamedTuple):
    """One memory access by one CUDA thread. index is the flat (C-order) element index."""
    seq: int
    block: int
    thread: int
    array: str
    index: int
    op: str          # "read", "write" or "atomic" (an atomic read-add-write)
    phase: int       # barriers (syncthreads) this thread had passed
    value: float


@dataclass
class Trace:
    """A traced kernel launch. shapes: array name -> shape; outputs: array name -> values after the run."""
    kernel: str
    grid: int
    block: int
    shapes: dict
    events: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    direction: str = "forward"
    label: str = ""            # the title of any other kernel's trace (a puzzle's); layernorm's is built
    shared: list = field(default_factory=list)   # names of the shared-memory arrays (one copy per block)

    def title(self) -> str:
        if self.label:
            return self.label
        N, C = self.shapes["inp"]
        return (f"layernorm_{self.direction}_kernel_{self.kernel}[grid={self.grid}, block={self.block}]"
                f"  (N={N}, C={C})")

    def select(self, **where) -> list[Event]:
        """Events whose fields equal `where`, e.g. trace.select(array="scratch", block=0)."""
        return [e for e in self.events if all(getattr(e, k) == v for k, v in where.items())]

    def to_json(self) -> str:
        d = asdict(self)
        d["events"] = [list(e) for e in self.events]
        d["outputs"] = {k: np.asarray(v).tolist() for k, v in self.outputs.items()}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "Trace":
        d = json.loads(text)
        d["events"] = [Event(*e) for e in d["events"]]
        d["shapes"] = {k: tuple(v) for k, v in d["shapes"].items()}
        d["outputs"] = {k: np.asarray(v, dtype=np.float32) for k, v in d["outputs"].items()}
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------
# inside the simulator (the subprocess)
# ---------------------------------------------------------------------------------------------------------

class Recorder:
    """Collects events from every simulated thread. list.append is atomic under the GIL."""

    def __init__(self):
        self.events: list[Event] = []
        self._seq = itertools.count()

    def log(self, array: str, shape, index, op: str, value) -> None:
        block, thread_id, phase = where()
        flat = int(np.ravel_multi_index(index if isinstance(index, tuple) else (index,), shape))
        self.events.append(Event(next(self._seq), block, thread_id, array, flat, op, phase, float(value)))


def where() -> tuple[int, int, int]:
    """(block, thread, phase) of the calling simulated CUDA thread; 2-D and 3-D ids flattened x-fastest."""
    from gpt2lab.kernels._cudasim import current_thread   # here: importing this module loads no numba
    thread = current_thread()   # the simulated CUDA thread: it knows its blockIdx and threadIdx
    gx, gy, _ = (tuple(thread._manager._grid_dim) + (1, 1))[:3]
    b = thread.blockIdx
    return int(b.x + gx * (b.y + gy * b.z)), int(thread.thread_id), getattr(thread, "phase", 0)


def _out_of_bounds(index, shape) -> bool:
    """True when an integer index is outside shape. Negative indices count as outside: on a GPU there is no
    wrap-around, a[-1] reads whatever lies before the array."""
    idx = index if isinstance(index, tuple) else (index,)
    if len(idx) != len(shape) or not all(isinstance(i, (int, np.integer)) for i in idx):
        return False          # slices and the like: let numpy decide
    return any(not 0 <= int(i) < n for i, n in zip(idx, shape))


class OutOfBounds(IndexError):
    """A simulated thread indexed outside an array; the message names the thread, the array and the index."""


class Recording:
    """A stand-in for a kernel's array: indexing works as on the array, and every access is logged.

    The simulator passes kernel arguments that are not numpy arrays through untouched, so the kernel
    body indexes this object directly.
    """

    def __init__(self, name: str, array: np.ndarray, recorder: Recorder):
        self.name, self.array, self.recorder = name, array, recorder
        self.shape, self.dtype, self.ndim, self.size = array.shape, array.dtype, array.ndim, array.size

    def __getitem__(self, index):
        self._check(index, "read")
        value = self.array[index]
        self.recorder.log(self.name, self.shape, index, "read", value)
        return value

    def __setitem__(self, index, value):
        self._check(index, "write")
        self.array[index] = value
        self.recorder.log(self.name, self.shape, index, "write", self.array[index])

    def _check(self, index, op: str) -> None:
        if _out_of_bounds(index, self.shape):
            block, thread, _ = where()
            at = [int(i) for i in np.atleast_1d(index)]
            raise OutOfBounds(f"out of bounds: block {block}, thread {thread} tried to {op} {self.name}{at} "
                              f"but {self.name} has shape {self.shape}")

    def __len__(self):
        return len(self.array)


class _Active:
    """What the installed hooks log into: swapped per traced launch, the hooks themselves installed once."""
    recorder: Recorder | None = None
    name_shared = staticmethod(lambda key: "scratch")   # (file, line) of the cuda.shared.array call -> a name
    shared_names: set = set()


def _install_hooks(recorder: Recorder, name_shared=None) -> None:
    """Log the next launches into `recorder`: barriers counted per thread, recording shared arrays (one per
    source line, as the simulator does: all threads of a block calling cuda.shared.array on one line get the
    same array), atomic adds logged as one event. The simulator is patched once (kernels/_cudasim.py); later
    calls only swap what the hooks log into. name_shared(key) names a shared array from its (file, line) key;
    default "scratch"."""
    _Active.recorder = recorder
    _Active.name_shared = name_shared or (lambda key: "scratch")
    _Active.shared_names = set()
    from gpt2lab.kernels import _cudasim

    def make_shared(shape, dtype, key):
        name = _Active.name_shared(key)
        _Active.shared_names.add(name)
        return Recording(name, np.zeros(shape, dtype), _Active.recorder)

    def log_atomic(array, index, val):
        array._check(index, "atomically add to")
        old = array.array[index]
        array.array[index] += val
        array.recorder.log(array.name, array.shape, index, "atomic", array.array[index])
        return old

    _cudasim.install()
    _cudasim.install_recorder(make_shared, lambda array: isinstance(array, Recording), log_atomic)


def _backward_arrays(inp: np.ndarray, weight: np.ndarray, rng) -> dict:
    """The backward kernel's arguments (in its order): zeroed gradients, a random dout, the forward's cache."""
    from gpt2lab.kernels.layernorm import EPS
    N, C = inp.shape
    mean = inp.mean(axis=1, dtype=np.float32)
    rstd = (1 / np.sqrt(inp.var(axis=1, dtype=np.float32) + np.float32(EPS))).astype(np.float32)
    return {"dinp": np.zeros((N, C), np.float32), "dweight": np.zeros(C, np.float32),
            "dbias": np.zeros(C, np.float32), "dout": rng.standard_normal((N, C)).astype(np.float32),
            "inp": inp, "weight": weight, "mean": mean, "rstd": rstd}


def _run_traced(kernel: str, inp: np.ndarray, block: int, direction: str = "forward") -> Trace:
    """Launch layernorm `direction` `kernel` on inp (N, C) with recording arrays. Simulator only."""
    from gpt2lab.kernels import layernorm as L

    N, C = inp.shape
    rng = np.random.default_rng(0)
    weight = (1 + 0.1 * rng.standard_normal(C)).astype(np.float32)
    if direction == "forward":
        arrays = {"out": np.zeros((N, C), np.float32), "mean": np.zeros(N, np.float32),
                  "rstd": np.zeros(N, np.float32), "inp": inp, "weight": weight,
                  "bias": (0.1 * rng.standard_normal(C)).astype(np.float32)}
    else:
        arrays = _backward_arrays(inp, weight, rng)
    recorder = Recorder()
    _install_hooks(recorder)
    args = [Recording(name, a, recorder) for name, a in arrays.items()]
    if kernel == "v1":   # one thread per row: blocks of `block` threads, enough of them to cover N rows
        grid = (N + block - 1) // block
        L.layernorm_forward_kernel_v1[grid, block](*args)
    elif direction == "forward":   # one block per row; the tree reduction needs a power-of-two block
        grid = N
        L.layernorm_forward_kernel_v2[grid, block](*args)
    else:
        grid = N
        L.layernorm_backward_kernel_v2[grid, block](*args)
    events = sorted(recorder.events, key=lambda e: e.seq)
    outs = ("out", "mean", "rstd", "weight", "bias") if direction == "forward" else tuple(arrays)
    return Trace(kernel, grid, block, {k: a.shape for k, a in arrays.items()} | {"scratch": (L.BLOCK,)},
                 events, {k: arrays[k].tolist() for k in outs}, direction)


def main(argv=None) -> int:
    """`python -m gpt2lab.explain.cudatrace KERNEL BLOCK` with inp as JSON on stdin; the trace on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    if not child_ready("cudatrace", "trace_layernorm"):
        return 2
    kernel, block = argv[0], int(argv[1])
    direction = argv[2] if len(argv) > 2 else "forward"
    inp = np.asarray(json.loads(sys.stdin.read()), dtype=np.float32)
    sys.stdout.write(_run_traced(kernel, inp, block, direction).to_json())
    return 0


# ---------------------------------------------------------------------------------------------------------
# the caller's side
# ---------------------------------------------------------------------------------------------------------

def _check_args(kernel: str, inp: np.ndarray, block: int, direction: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"trace_layernorm: kernel must be one of {KERNELS}, got {kernel!r}")
    if direction not in ("forward", "backward"):
        raise ValueError(f"trace_layernorm: direction must be 'forward' or 'backward', got {direction!r}")
    if direction == "backward" and kernel != "v2":
        raise ValueError("trace_layernorm: the backward is traced for v2 only (v1's is two kernels)")
    if inp.ndim != 2 or inp.size == 0:
        raise ValueError(f"trace_layernorm: inp must be a non-empty (N, C) array, got shape {inp.shape}")
    if inp.size > 4096:
        raise ValueError(f"trace_layernorm: inp {inp.shape} is too big to trace (at most 4096 elements: "
                         "every simulated thread runs in Python)")
    if not np.all(np.isfinite(inp)):
        raise ValueError("trace_layernorm: inp has non-finite values")
    if kernel == "v2" and (block < 1 or block & (block - 1) or block > 256):
        raise ValueError(f"trace_layernorm: v2's tree reduction needs a power-of-two block <= 256, got {block}")
    if kernel == "v1" and not 1 <= block <= 256:
        raise ValueError(f"trace_layernorm: block must be in 1..256, got {block}")


def trace_layernorm(kernel: str = "v2", inp=None, block: int = 8, direction: str = "forward",
                    timeout: float = 120) -> Trace:
    """Run layernorm `kernel` ("v1" thread per row, "v2" block per row) in numba's CUDA simulator on inp
    (N, C) float32 (default: 2 random rows of 16 channels), recording every memory access.

    direction "backward" runs v2's backward kernel (random dout, the cache from inp): its dweight and dbias
    are atomic adds from every block, logged as op "atomic".
    The simulator runs in a subprocess, so NUMBA_ENABLE_CUDASIM never reaches this process.
    Raises ValueError for a bad kernel, direction, block or input; RuntimeError when the subprocess fails.
    """
    if inp is None:
        inp = np.random.default_rng(0).normal(1.0, 2.0, (2, 16))
    inp = np.ascontiguousarray(inp, dtype=np.float32)
    _check_args(kernel, inp, block, direction)
    proc = run_simulated("gpt2lab.explain.cudatrace", kernel, str(block), direction,
                         stdin=json.dumps(inp.tolist()), timeout=timeout, what="trace_layernorm")
    return Trace.from_json(proc.stdout)


# ---------------------------------------------------------------------------------------------------------
# reading a trace
# ---------------------------------------------------------------------------------------------------------

@dataclass
class ReductionStep:
    """One phase of a shared-memory tree reduction in one block.

    kind: "store" (every thread writes its partial sum), "stride" (thread t < stride adds
    scratch[t + stride] into scratch[t]) or "broadcast" (every thread reads the total scratch[0]).
    reads, writes: (thread, index) pairs; scratch: the scratch values after the phase (blockDim,).
    phase: 0, 1, 2, ... within this reduction (0 = the store), the number every picture and slider shows;
    barrier: the kernel's own barrier phase, counted from its start (the second reduction's store is not 0).
    """
    phase: int
    kind: str
    stride: int
    reads: list
    writes: list
    scratch: np.ndarray
    barrier: int = 0


def reduction_steps(trace: Trace, block: int = 0, reduction: int = 0) -> list[ReductionStep]:
    """The steps of the `reduction`-th block_sum in CUDA block `block` of a v2 trace (0: the sum for the
    mean, 1: the sum of squares for the variance). Raises ValueError when there is none."""
    events = trace.select(array="scratch", block=block)
    phases = sorted({e.phase for e in events})
    groups, current = [], None
    for p in phases:
        ev = [e for e in events if e.phase == p]
        reads = [(e.thread, e.index) for e in ev if e.op == "read"]
        writes = [(e.thread, e.index) for e in ev if e.op == "write"]
        if writes and not reads:       # every thread stores its partial sum: a new reduction starts
            current = []
            groups.append(current)
        if current is not None:
            current.append((p, reads, writes))
    if not 0 <= reduction < len(groups):
        raise ValueError(f"reduction_steps: block {block} of this trace has {len(groups)} reductions, "
                         f"asked for number {reduction}")
    scratch = np.zeros(trace.block)
    steps = []
    for k, (p, reads, writes) in enumerate(groups[reduction]):
        for e in events:
            if e.phase == p and e.op == "write" and e.index < trace.block:
                scratch[e.index] = e.value
        if not reads:
            kind, stride = "store", 0
        elif not writes:
            kind, stride = "broadcast", 0
        else:
            kind = "stride"
            stride = max(i for _, i in reads) - max(i for _, i in writes)
        steps.append(ReductionStep(k, kind, stride, sorted(reads), sorted(writes), scratch.copy(), barrier=p))
    return steps


def step_caption(step: ReductionStep) -> str:
    if step.kind == "store":
        return f"phase {step.phase}: each thread t stores its partial sum in scratch[t]"
    if step.kind == "broadcast":
        return f"phase {step.phase}: every thread reads the total, scratch[0] = {step.scratch[0]:.4g}"
    n = len(step.writes)
    who = "thread 0 adds" if n == 1 else f"threads 0..{n - 1} add"
    return f"phase {step.phase}: stride {step.stride}: {who} scratch[t + {step.stride}] into scratch[t]"


def _draw_step(ax, trace: Trace, step: ReductionStep, values: bool = True) -> None:
    """rows = threads, columns = scratch elements; light = read, dark = write, arrows from read to written."""
    nthreads = n = trace.block
    grid = np.zeros((nthreads, n))
    for t, i in step.reads:
        grid[t, i] = 1
    for t, i in step.writes:
        grid[t, i] = 2
    from matplotlib.colors import ListedColormap
    ax.imshow(grid, cmap=ListedColormap([IDLE_COLOR, READ_COLOR, WRITE_COLOR]), vmin=0, vmax=2, aspect="equal")
    for t, i in step.writes:
        if values:
            ax.text(i, t, f"{step.scratch[i]:.2g}", ha="center", va="center", color="white", fontsize=9)
        for rt, ri in step.reads:
            if rt == t and ri != i:   # the element this thread adds in, arrow into the one it writes
                ax.annotate("", xy=(i + 0.3, t), xytext=(ri - 0.3, t),
                            arrowprops=dict(arrowstyle="->", color="#d95f02", lw=1.2))
    ax.set_xticks(range(n))
    ax.set_yticks(range(nthreads))
    ax.set_xticks(np.arange(-0.5, n), minor=True)
    ax.set_yticks(np.arange(-0.5, nthreads), minor=True)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0, labelsize=9)
    ax.set_xlabel("scratch[i]")
    label = {"store": "store", "broadcast": "read total"}.get(step.kind, f"stride {step.stride}")
    ax.set_title(f"phase {step.phase}: {label}", fontsize=9)


def reduction_diagram(trace: Trace, block: int = 0, reduction: int = 0, step: int | None = None, axes=None):
    """The shared-memory tree reduction of a v2 trace, one panel per phase (or only phase number `step`).

    In each panel rows are the block's threads and columns the scratch elements: light cells are read,
    dark cells written (the one-step view also prints the value), arrows go from the element a thread adds
    in to the one it writes. The stride halves from panel to panel until scratch[0] holds the row's sum.
    """
    import matplotlib.pyplot as plt

    steps = reduction_steps(trace, block, reduction)
    shown = steps if step is None else [steps[step]]
    if axes is None:
        # one step: the stepper's view; several: four panels a row, so the page never shrinks them
        cols = min(len(shown), 4)
        rows = -(-len(shown) // cols)
        size = (2.3 * cols + 0.6, 2.9 * rows + 0.4) if len(shown) > 1 else (7.6, 5.8)
        fig, grid = plt.subplots(rows, cols, figsize=size, squeeze=False)
        for ax in grid.flat[len(shown):]:
            fig.delaxes(ax)
        axes = grid.flat[:len(shown)]
    fig = axes[0].figure
    for ax, s in zip(axes, shown):
        _draw_step(ax, trace, s, values=len(shown) == 1)   # values fit the one-step view's larger cells
    axes[0].set_ylabel(f"threadIdx.x  (block {block})")
    names = {"forward": ("sum of x (for the mean)", "sum of (x - mean)^2 (for the variance)"),
             "backward": ("sum of dnorm", "sum of dnorm * norm")}[trace.direction]
    what = names[reduction] if reduction < 2 else f"reduction {reduction}"
    fig.suptitle(f"{trace.title()}\nblock_sum #{reduction}: {what}", fontsize=10)
    fig.tight_layout()
    return fig


def access_grid(trace: Trace, array: str = "inp", op: str = "read", phase: int | None = None) -> np.ndarray:
    """(threads, elements) int: how often each (block, thread) touched each element of `array`.

    Rows are global thread numbers block * blockDim + thread; columns flat element indices.
    """
    n_threads = trace.grid * trace.block
    size = int(np.prod(trace.shapes[array]))
    grid = np.zeros((n_threads, size), dtype=int)
    for e in trace.events:
        if e.array == array and e.op == op and (phase is None or e.phase == phase):
            grid[e.block * trace.block + e.thread, e.index] += 1
    return grid


def first_touch(trace: Trace, array: str = "inp", op: str = "read") -> np.ndarray:
    """(threads, elements): the order (0, 1, 2, ...) in which each thread first touched each element, -1 if
    never. Neighbouring threads touching neighbouring elements at the same step is a coalesced load."""
    n_threads = trace.grid * trace.block
    size = int(np.prod(trace.shapes[array]))
    order = -np.ones((n_threads, size), dtype=int)
    counts = np.zeros(n_threads, dtype=int)
    for e in trace.events:
        g = e.block * trace.block + e.thread
        if e.array == array and e.op == op and order[g, e.index] < 0:
            order[g, e.index] = counts[g]
            counts[g] += 1
    return order


def access_diagram(trace: Trace, array: str = "inp", op: str = "read", ax=None):
    """Which thread reads which element of `array` (flattened row by row), each cell labelled with the
    thread's step number: v1's thread walks its own row (steps 0, 1, 2, ... along a row), v2's threads of a
    block read neighbouring elements at the same step (a coalesced load)."""
    import matplotlib.pyplot as plt

    order = first_touch(trace, array, op)
    active = np.flatnonzero((order >= 0).any(axis=1))
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(0.32 * order.shape[1] + 1.5, 9.6), 0.3 * max(len(active), 2) + 1.6))
    shown = np.ma.masked_less(order[active], 0)
    ax.imshow(shown, cmap="Blues_r", aspect="auto", vmin=0, vmax=max(order.max(), 1) * 1.6)
    for (r, c), v in np.ndenumerate(order[active]):
        if v >= 0:
            dark = v < order.max() * 0.6   # early reads are dark cells: white text on them
            ax.text(c, r, str(v), ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_yticks(range(len(active)))
    ax.set_yticklabels([f"b{g // trace.block} t{g % trace.block}" for g in active], fontsize=9)
    ax.set_xlabel(f"{array} element (flat: row * C + channel)")
    if len(trace.shapes[array]) == 2:   # a (N, C) array: a line between rows
        N, C = trace.shapes[array]
        for r in range(1, N):
            ax.axvline(r * C - 0.5, color="k", lw=1)
    else:
        ax.set_xlabel(f"{array} element")
    idle = trace.grid * trace.block - len(active)
    ax.set_title(f"{trace.title()}: {op}s of {array}" + (f"  ({idle} idle threads not shown)" if idle else ""),
                 fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


class Hazard(NamedTuple):
    """Two accesses to one element by two threads with nothing ordering them, at least one a write: a race.
    first, second: the two events (second is the later one in the run)."""
    array: str
    first: Event
    second: Event

    def describe(self, shape=None) -> str:
        at = list(np.unravel_index(self.first.index, shape)) if shape else [self.first.index]
        a, b = self.first, self.second
        return (f"{self.array}{[int(i) for i in at]}: block {a.block} thread {a.thread} {_VERB[a.op]} it and "
                f"block {b.block} thread {b.thread} {_VERB[b.op]} it with no barrier between them")


_VERB = {"read": "reads", "write": "writes", "atomic": "atomically adds to"}


def _conflict(a: Event, b: Event, shared: bool) -> bool:
    """Two events on one element race: different threads, at least one a plain write (or an atomic against a
    plain read), and nothing ordering them -- a barrier orders the threads of one block (then their phases
    differ), nothing orders two blocks. Read against read and atomic against atomic never race."""
    if (a.block, a.thread) == (b.block, b.thread):
        return False
    ops = {a.op, b.op}
    if "write" not in ops and ops != {"read", "atomic"}:
        return False
    if a.block != b.block:
        return not shared          # shared memory is per block: two blocks never see each other's
    return a.phase == b.phase


def hazards(trace: Trace, limit: int = 10) -> list[Hazard]:
    """The races of a traced launch (CUDA's racecheck, from the trace): up to `limit` of them, in run order.

    A missing syncthreads shows as a read and a write of one shared element in the same phase by two threads;
    a missing atomic as two threads' plain writes to one global element.
    """
    shared = set(trace.shared) | {"scratch"}
    by_element: dict = {}
    for e in trace.events:
        key = (e.array, e.block if e.array in shared else -1, e.index)
        by_element.setdefault(key, []).append(e)
    found = []
    for (array, _, _), events in by_element.items():
        if all(e.op == "read" for e in events):
            continue
        hit = next(((a, b) for j, b in enumerate(events) for a in events[:j] if _conflict(a, b, array in shared)),
                   None)
        if hit:
            found.append(Hazard(array, *hit))
    return sorted(found, key=lambda h: h.second.seq)[:limit]


__all__ = ["Event", "Trace", "trace_layernorm", "ReductionStep", "reduction_steps", "step_caption",
           "reduction_diagram", "access_grid", "first_touch", "access_diagram", "KERNELS", "Hazard", "hazards"]


if __name__ == "__main__":
    sys.exit(main())
