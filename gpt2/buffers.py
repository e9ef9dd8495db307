"""Flat buffers with named views, llm.c style: the memory layout of the kernel-backed GPT-2.

One allocation per kind of state (parameters, their gradients, AdamW's m and v, activations, activation
gradients). Each named tensor is a contiguous slice of it, reshaped: `views["qkvw"]` is (L, 3C, C) and
`views["qkvw"][l]` is layer l's (3C, C) weight, itself contiguous, so every kernel sees plain C-contiguous
float32 arrays. Zeroing all gradients is one fill of one buffer; AdamW walks named 1-D slices of the flat
buffers.

On the CPU the buffers are numpy arrays; on "cuda" (or numba's simulator, "cudasim") they are numba device
arrays and the views are device-array views, so the same kernel entry points dispatch to the CUDA kernels.

Shapes (V vocab, maxT block_size, L layers, C channels, NH heads, B batch, T time):

    parameters (llm.c order)            activations
    wte      (V, C)                      encoded   (B, T, C)          wte[idx] + wpe[t]
    wpe      (maxT, C)                   ln1       (L, B, T, C)       + ln1_mean, ln1_rstd (L, B, T)
    ln1w     (L, C)                      qkv       (L, B, T, 3C)
    ln1b     (L, C)                      atty      (L, B, T, C)       attention output, heads side by side
    qkvw     (L, 3C, C)                  att       (L, B, NH, T, T)   softmax(q k^T / sqrt(hs)), causal
    qkvb     (L, 3C)                     attproj   (L, B, T, C)       (fused path: lse (L, B, NH, T) in att's place)
    attprojw (L, C, C)                   residual2 (L, B, T, C)       residual + attproj
    attprojb (L, C)                      ln2       (L, B, T, C)       + ln2_mean, ln2_rstd (L, B, T)
    ln2w     (L, C)                      fch       (L, B, T, 4C)
    ln2b     (L, C)                      fch_gelu  (L, B, T, 4C)
    fcw      (L, 4C, C)                  fcproj    (L, B, T, C)
    fcb      (L, 4C)                     residual3 (L, B, T, C)       residual2 + fcproj: the block's output
    fcprojw  (L, C, 4C)                  lnf       (B, T, C)          + lnf_mean, lnf_rstd (B, T)
    fcprojb  (L, C)                      logits    (B, T, V)
    lnfw     (C,)                        probs     (B, T, V)
    lnfb     (C,)                        losses    (B, T)
"""
from __future__ import annotations

import math

import numpy as np
from numba import config as numba_config
from numba import cuda, float64, njit, prange

from gpt2lab.kernels._cuda import GRID_STRIDE_BLOCK, block_sum, memset_zero
from gpt2lab.kernels._cuda import kernel as cuda_kernel
from gpt2lab.kernels._validate import check_block, on_host

from .config import GPTConfig, decays

PARAM_NAMES = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb")

ACT_NAMES = ("encoded", "ln1", "ln1_mean", "ln1_rstd", "qkv", "atty", "att", "attproj", "residual2",
             "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3",
             "lnf", "lnf_mean", "lnf_rstd", "logits", "probs", "losses")

# The activations with a leading layer axis (L, ...): block l's own are acts[name][l].
LAYER_ACT_NAMES = ("ln1", "ln1_mean", "ln1_rstd", "qkv", "atty", "att", "attproj", "residual2",
                   "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3")
# The fused path's (flash attention): the softmax's log-sum-exp per query row in place of the T x T att.
FUSED_LAYER_ACT_NAMES = tuple("lse" if n == "att" else n for n in LAYER_ACT_NAMES)

# Activation gradients exist for the tensors a gradient flows through. The LayerNorm caches (mean, rstd) and
# the softmax cache att and probs are only read by the backward kernels, so they get none.
# Laid out with the block gradients side by side (one span, zeroed in one fill) and logits, losses last.
GRAD_ACT_NAMES = ("encoded", "residual3", "lnf", "ln1", "qkv", "atty", "attproj", "residual2", "ln2", "fch",
                  "fch_gelu", "fcproj", "logits", "losses")
# The gradients that live and die inside one block's backward: only the stream's gradient, residual3, passes
# from block l to block l-1. A lean model (KernelGPT2's default) gives every block the same one block's worth of
# these (llm.c's CUDA trainer does the same), zeroed before each block's backward: 17C floats per token in
# place of L x 17C, 2.2 GiB of the 124M model's step at B=4, T=1024.
BLOCK_GRAD_NAMES = ("ln1", "qkv", "atty", "attproj", "residual2", "ln2", "fch", "fch_gelu", "fcproj")

# Our name -> the reference GPT2's parameter name ({l} = layer) for the per-layer tensors.
LAYER_NAMES = {
    "ln1w": "ln_1.weight", "ln1b": "ln_1.bias",
    "qkvw": "attn.c_attn.weight", "qkvb": "attn.c_attn.bias",
    "attprojw": "attn.c_proj.weight", "attprojb": "attn.c_proj.bias",
    "ln2w": "ln_2.weight", "ln2b": "ln_2.bias",
    "fcw": "mlp.c_fc.weight", "fcb": "mlp.c_fc.bias",
    "fcprojw": "mlp.c_proj.weight", "fcprojb": "mlp.c_proj.bias",
}
GLOBAL_NAMES = {"wte": "transformer.wte.weight", "wpe": "transformer.wpe.weight",
                "lnfw": "transformer.ln_f.weight", "lnfb": "transformer.ln_f.bias"}


def param_shapes(config: GPTConfig) -> dict[str, tuple]:
    """name -> shape of every parameter tensor, in llm.c's order."""
    V, maxT, L, C = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    return {
        "wte": (V, C), "wpe": (maxT, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }


def _decayed() -> frozenset[str]:
    """Our names of the tensors AdamW decays, by config.decays' rule (the one rule for both models), applied
    to one layer's shape: the flat buffers stack the L layers on a leading axis, which would make every
    per-layer bias and LayerNorm gain look like a matrix."""
    shapes = param_shapes(GPTConfig(n_layer=1, n_head=1, n_embd=2, vocab_size=3, block_size=4))
    return frozenset(n for n, s in shapes.items() if decays(n, s[1:] if n in LAYER_NAMES else s))


# AdamW decays the matrices only (nanoGPT's param groups): {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}
DECAYED = _decayed()


def act_shapes(config: GPTConfig, B: int, T: int, fused: bool = False, probs: bool = True) -> dict[str, tuple]:
    """name -> shape of every activation for a batch of B sequences of T tokens.

    fused (KernelGPT2's flash-attention path): "lse" (L, B, NH, T), the log-sum-exp of each attention row, in
    place of "att" (L, B, NH, T, T): the T x T matrix is never stored (the memory point of flash attention).
    probs=False: no "probs" (the fused classifier computes the loss and dlogits without keeping them)."""
    V, L, C, NH = config.vocab_size, config.n_layer, config.n_embd, config.n_head
    attention_cache = {"lse": (L, B, NH, T)} if fused else {"att": (L, B, NH, T, T)}
    shapes = {
        "encoded": (B, T, C),
        "ln1": (L, B, T, C), "ln1_mean": (L, B, T), "ln1_rstd": (L, B, T),
        "qkv": (L, B, T, 3 * C), "atty": (L, B, T, C), **attention_cache,
        "attproj": (L, B, T, C), "residual2": (L, B, T, C),
        "ln2": (L, B, T, C), "ln2_mean": (L, B, T), "ln2_rstd": (L, B, T),
        "fch": (L, B, T, 4 * C), "fch_gelu": (L, B, T, 4 * C), "fcproj": (L, B, T, C),
        "residual3": (L, B, T, C),
        "lnf": (B, T, C), "lnf_mean": (B, T), "lnf_rstd": (B, T),
        "logits": (B, T, V), "probs": (B, T, V), "losses": (B, T),
    }
    if not probs:
        del shapes["probs"]
    return shapes


def grad_act_shapes(config: GPTConfig, B: int, T: int, lean: bool = False) -> dict[str, tuple]:
    """name -> shape of every activation gradient (GRAD_ACT_NAMES, in layout order). lean: the block
    gradients (BLOCK_GRAD_NAMES) hold one block, (1, B, T, ...), which every block reuses."""
    shapes = act_shapes(config, B, T)
    return {k: (1,) + shapes[k][1:] if lean and k in BLOCK_GRAD_NAMES else shapes[k] for k in GRAD_ACT_NAMES}


def nbytes(shapes: dict[str, tuple]) -> int:
    """Bytes of float32 tensors of these shapes (the buffers' element type)."""
    return 4 * sum(math.prod(s) for s in shapes.values())


def keeps_probs(lean: bool, fused_head: bool) -> bool:
    """Whether a model has a probs buffer: all but a lean one on the fused classifier's path (a GPU), whose
    classifier writes the loss and dlogits from the logits and probs only when asked (live parity is not lean)."""
    return not (lean and fused_head)


def step_bytes(config: GPTConfig, B: int, T: int, fused: bool = False, lean: bool = True,
               fused_head: bool = False) -> dict[str, int]:
    """Bytes of KernelGPT2's buffers for a training step on (B, T), by buffer: params, grads, m, v (a copy of
    the parameters each), acts and grads_acts, as the model allocates them for (fused, lean, fused_head: the
    fused classifier's path on a GPU, whose lean model keeps no probs). Kernel scratch is not counted."""
    params = nbytes(param_shapes(config))
    return {"params": params, "grads": params, "m": params, "v": params,
            "acts": nbytes(act_shapes(config, B, T, fused, probs=keeps_probs(lean, fused_head))),
            "grads_acts": nbytes(grad_act_shapes(config, B, T, lean))}


def reference_names(config: GPTConfig) -> dict[str, tuple[str, int | None]]:
    """The reference GPT2's parameter name -> (our name, layer or None). lm_head.weight is wte (tied)."""
    out = {}
    for ours, ref in GLOBAL_NAMES.items():
        out[ref] = (ours, None)
    for l in range(config.n_layer):
        for ours, ref in LAYER_NAMES.items():
            out[f"transformer.h.{l}.{ref}"] = (ours, l)
    return out


# ---------------------------------------------------------------- device helpers
def is_cuda(device: str) -> bool:
    return device in ("cuda", "cudasim")


@cuda_kernel
def fill_kernel(a, value, n):
    """a[i] = value for i < n: zeroing a gradient buffer, or dlosses = 1/(B*T). Grid-stride loop."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        a[i] = value
        i += stride


@cuda_kernel
def scale_kernel(a, factor, n):
    """a[i] *= factor: gradient clipping."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < n:
        a[i] *= factor
        i += stride


@cuda_kernel
def sumsq_kernel(total, a, n):
    """total[0] += sum(a[i]^2), each thread over its grid-stride share then one float64 atomic per thread."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    acc = 0.0
    while i < n:
        x = np.float64(a[i])
        acc += x * x
        i += stride
    cuda.atomic.add(total, 0, acc)


SCALAR_BLOCK = 256  # threads per block of step_scalars_kernel (a power of two, for block_sum's tree)


@cuda_kernel
def step_scalars_kernel(out, losses, n_losses, grads, n_grads):
    """out[0] = sum(losses[:n_losses]); out[1 + b] = one share of sum(grads[:n_grads]^2) for b < gridDim - 1.

    The two numbers a training step reports, in one launch: block 0 sums the per-token losses, blocks 1.. the
    squared gradients (a grid-stride loop over their own share). float64 accumulators and block_sum's tree in
    shared memory; each block writes its own slot, so nothing needs zeroing first, there are no atomics and
    the result has the same bits every run. The host adds the slots (float64) after one copy.
    """
    scratch = cuda.shared.array(SCALAR_BLOCK, float64)
    tid, block = cuda.threadIdx.x, cuda.blockIdx.x
    acc = float64(0.0)
    if block == 0:
        i = tid
        while i < n_losses:
            acc += float64(losses[i])
            i += cuda.blockDim.x
    else:
        i = (block - 1) * cuda.blockDim.x + tid
        stride = (cuda.gridDim.x - 1) * cuda.blockDim.x
        while i < n_grads:
            g = float64(grads[i])
            acc += g * g
            i += stride
    total = block_sum(scratch, acc)
    if tid == 0:
        out[block] = total


CUDA_KERNELS = (
    (fill_kernel, "void(float32[::1], float32, int64)"),
    (scale_kernel, "void(float32[::1], float32, int64)"),
    (sumsq_kernel, "void(float64[::1], float32[::1], int64)"),
    (step_scalars_kernel, "void(float64[::1], float32[::1], int64, float32[::1], int64)"),
)


class StepScalars:
    """The loss sum and the squared grad norm of a step, computed on the device and read back in one copy.

    Allocated once per model (a float64 device array of 1 + G slots and its host mirror): a read allocates
    nothing. `wait_seconds` adds up the time the host spent in the read (waiting for the GPU to finish the
    work queued before it, then the copy): a step's wall time minus it is the host's own time per step.
    """

    def __init__(self, block: int | None = None, grad_blocks: int | None = None):
        """block (a power of two <= SCALAR_BLOCK), grad_blocks: the launch; None: SCALAR_BLOCK and 264 (2 blocks
        per H100 SM) on a GPU, 32 and 2 in the simulator, which runs every thread in Python
        (tests/test_gpu_launches_cudasim.py runs the GPU's block there too)."""
        simulated = bool(numba_config.ENABLE_CUDASIM)
        self.block = block or (32 if simulated else SCALAR_BLOCK)
        self.grad_blocks = grad_blocks or (2 if simulated else 264)
        check_block("StepScalars", "block", self.block, SCALAR_BLOCK)
        self.device = cuda.device_array(1 + self.grad_blocks, dtype=np.float64)
        self.host = np.zeros(1 + self.grad_blocks, dtype=np.float64)
        self.wait_seconds = 0.0

    def read(self, losses=None, grads=None) -> tuple[float, float]:
        """(sum of losses, sum of grads^2), each 0.0 when its array is None; losses, grads: flat float32 device
        arrays. One launch, one device-to-host copy (which waits for the queued work)."""
        import time
        dummy = losses if losses is not None else grads
        n_losses = 0 if losses is None else losses.size
        n_grads = 0 if grads is None else grads.size
        blocks = 1 + (self.grad_blocks if n_grads else 0)
        step_scalars_kernel[blocks, self.block](self.device, dummy if losses is None else losses, n_losses,
                                               dummy if grads is None else grads, n_grads)
        t0 = time.perf_counter()
        self.device.copy_to_host(self.host)
        self.wait_seconds += time.perf_counter() - t0
        return float(self.host[0]), float(self.host[1:blocks].sum())


def launch_config(n: int, simulated: bool) -> tuple[int, int]:
    """(blocks, threads) of a grid-stride kernel over n elements: on a GPU enough blocks of GRID_STRIDE_BLOCK
    for a thread per element, at most 1024 (the loop covers the rest); in the simulator, which runs every
    thread in Python, one block of 32, by far the fastest there. tests/test_gpu_launches_cudasim.py
    runs the GPU's configuration in the simulator too."""
    if simulated:
        return 1, 32
    return max(1, min(math.ceil(n / GRID_STRIDE_BLOCK), 1024)), GRID_STRIDE_BLOCK


def _launch(kernel, n: int, *args) -> None:
    """kernel[grid, block](*args, n) with a grid-stride loop inside, so any grid covers any n."""
    kernel[launch_config(n, bool(numba_config.ENABLE_CUDASIM))](*args, n)


# On the CPU with numba's threads: numpy's fill and *= run on one core, and zeroing a step's activation
# gradients (the tiny config's 51 MB of dlogits among them) took 8 ms of a 136 ms step that way, 2.4 ms so.
@njit(parallel=True, fastmath=True, cache=True)
def _fill_cpu(a, value):
    for i in prange(a.size):
        a[i] = value


@njit(parallel=True, fastmath=True, cache=True)
def _scale_cpu(a, factor):
    for i in prange(a.size):
        a[i] *= factor


def fill(a, value: float) -> None:
    """Set every element of the (contiguous) array `a` to `value`, on the host or the device."""
    if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
        a.fill(value)   # a strided view: reshape would copy, and the fill would land in the copy
    elif isinstance(a, np.ndarray):
        _fill_cpu(a.reshape(-1), a.dtype.type(value))
    elif value == 0 and a.is_c_contiguous():
        memset_zero(a)  # one driver memset, no kernel
    else:
        flat = a.reshape(a.size)
        _launch(fill_kernel, a.size, flat, np.float32(value))


def scale(a, factor: float) -> None:
    """a *= factor, on the host or the device."""
    if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
        a *= a.dtype.type(factor)
    elif isinstance(a, np.ndarray):
        _scale_cpu(a.reshape(-1), a.dtype.type(factor))
    else:
        _launch(scale_kernel, a.size, a.reshape(a.size), np.float32(factor))


@njit(parallel=True, fastmath=True, cache=True)
def _sum_of_squares_cpu(a):
    # a float64 accumulator per thread (numba's prange reduction): no float64 copy of a 7M-element buffer
    total = 0.0
    for i in prange(a.size):
        x = np.float64(a[i])
        total += x * x
    return total


def sum_of_squares(a) -> float:
    """sum(a^2) accumulated in float64, on the host or the device."""
    if isinstance(a, np.ndarray):
        return float(_sum_of_squares_cpu(a.reshape(-1)))
    total = cuda.to_device(np.zeros(1, dtype=np.float64))
    _launch(sumsq_kernel, a.size, total, a.reshape(a.size))
    return float(total.copy_to_host()[0])


def copy_in(dst, src: np.ndarray) -> None:
    """dst[...] = src, where dst is a host or device view and src a host array of the same shape."""
    src = np.ascontiguousarray(src, dtype=np.float32)
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"copy_in: shape {tuple(src.shape)} does not fit a view of shape {tuple(dst.shape)}")
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src)
    else:
        dst.copy_to_device(src)


class FlatBuffer:
    """One float32 allocation holding named tensors back to back, with a view per name.

    shapes: name -> shape, in layout order. The region of each name is sized for `shapes`; `views(smaller)`
    gives views for smaller shapes of the same rank (a batch with fewer rows or a shorter T) using the first
    prod(shape) elements of each region, so shrinking B or T never reallocates.
    """

    def __init__(self, shapes: dict[str, tuple], device: str = "cpu"):
        self.device = device
        self.capacity = {k: tuple(v) for k, v in shapes.items()}
        self.offsets, n = {}, 0
        for name, shape in self.capacity.items():
            self.offsets[name] = n
            n += math.prod(shape)
        self.size = n
        if is_cuda(device):
            self.memory = cuda.device_array(n, dtype=np.float32)
            fill(self.memory, 0.0)
        else:
            self.memory = np.zeros(n, dtype=np.float32)

    def views(self, shapes: dict[str, tuple] | None = None) -> dict:
        """name -> contiguous view of shape shapes[name] (default: the capacity shapes)."""
        shapes = shapes or self.capacity
        out = {}
        for name, shape in shapes.items():
            n = math.prod(shape)
            if n > math.prod(self.capacity[name]):
                raise ValueError(f"FlatBuffer: {name} of shape {shape} exceeds its region {self.capacity[name]}")
            off = self.offsets[name]
            out[name] = self.memory[off:off + n].reshape(shape)
        return out

    def span(self, names) -> object:
        """The 1-D slice of the whole regions of `names`, which must lie side by side in the layout (one fill
        zeroes them all)."""
        order = list(self.capacity)
        first = order.index(names[0])
        if order[first:first + len(names)] != list(names):
            raise ValueError(f"FlatBuffer.span: {names} are not side by side in the layout {order}")
        end = self.offsets[names[-1]] + math.prod(self.capacity[names[-1]])
        return self.memory[self.offsets[names[0]]:end]

    def flat(self, name: str):
        """The 1-D slice of `name`'s whole region (what AdamW updates)."""
        off = self.offsets[name]
        return self.memory[off:off + math.prod(self.capacity[name])]


# ---------------------------------------------------------------- to and from the reference GPT2's names
def to_reference_names(buffer: FlatBuffer, config: GPTConfig) -> dict[str, np.ndarray]:
    """A parameter-shaped buffer as the reference GPT2's name -> float32 numpy copy (lm_head.weight left out:
    it is wte)."""
    host = on_host(buffer.memory)
    views = {}
    for name, shape in buffer.capacity.items():
        off = buffer.offsets[name]
        views[name] = host[off:off + int(np.prod(shape))].reshape(shape)
    return {ref: (views[ours] if layer is None else views[ours][layer]).copy()
            for ref, (ours, layer) in reference_names(config).items()}


def from_reference_names(buffer: FlatBuffer, config: GPTConfig, named: dict) -> None:
    """The inverse of to_reference_names: copy the reference GPT2's name -> array (or tensor) into `buffer`.

    Every name must be there (lm_head.weight may be, and is ignored: it is wte) and every shape must match.
    """
    refs = reference_names(config)
    missing = sorted(set(refs) - set(named))
    unexpected = sorted(set(named) - set(refs) - {"lm_head.weight"})
    if missing or unexpected:
        raise ValueError(f"KernelGPT2: state dict has missing {missing[:5]}, unexpected {unexpected[:5]}")
    host = np.zeros(buffer.size, dtype=np.float32)
    for ref, (ours, layer) in refs.items():
        value = named[ref]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        shape = buffer.capacity[ours][1:] if layer is not None else buffer.capacity[ours]
        value = np.asarray(value, dtype=np.float32)
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"KernelGPT2: {ref} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        off = buffer.offsets[ours] + (0 if layer is None else layer * int(np.prod(shape)))
        host[off:off + value.size] = value.reshape(-1)
    copy_in(buffer.memory, host)


def named_view(views: dict, config: GPTConfig, name: str):
    """The view of parameter `name` among `views` (ours: PARAM_NAMES -> (L, ...) or global arrays): our name,
    "lm_head.weight" (= wte), or a reference GPT2 name for one layer's tensor, e.g. "transformer.h.1.ln_1.weight"."""
    if name in views:
        return views[name]
    if name == "lm_head.weight":
        return views["wte"]
    refs = reference_names(config)
    if name in refs:
        ours, layer = refs[name]
        return views[ours] if layer is None else views[ours][layer]
    raise KeyError(f"KernelGPT2: no parameter {name!r}; ours are {', '.join(PARAM_NAMES)} "
                   f"or the reference GPT2's names, e.g. 'transformer.h.0.attn.c_attn.weight'")
