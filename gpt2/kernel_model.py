"""GPT-2 on our own kernels, llm.c style: flat buffers, named views, forward and backward as plain kernel calls.

Nothing here computes anything itself: every number comes out of a kernel in `gpt2lab.kernels` (numba on the
CPU, or CUDA when the buffers are device arrays). The model is four flat float32 buffers and two for the batch:

    params       wte, wpe, ln1w, ..., lnfb        (see gpt2/buffers.py for every shape)
    grads        the same views: d loss / d param  (zeroed by zero_grad, accumulated by backward)
    m, v         AdamW's first and second moments, the same views again
    acts         encoded, ln1, ..., probs, losses  sized for (B, T); per-layer tensors have a leading L axis
    grads_acts   d loss / d activation for the tensors a gradient flows through; lean (the default): the
                 blocks share one block's worth, as only the stream's gradient passes between blocks

`forward` and `backward` read top to bottom like llm.c's gpt2_forward / gpt2_backward. The backward kernels
*accumulate* (d += ...), which is what makes the residual stream and the tied embedding simple: the residual
gradient arrives from two places and is summed, and wte's gradient gets the lm_head matmul's part and then the
encoder's scatter-add on top.

On a GPU the host does as little as it can per step (issue 14's lean host path): every buffer is made once
for the batch shape (the batch itself goes into a preallocated device buffer, with the encoder backward's
token runs, in one copy), each block's views are made once, zeroing is one driver memset per buffer, the
kernels are launched through `@cuda_kernel` (no per-call type dispatch) and the loss and grad norm are
reduced on the device and come back in one small copy: `forward(..., read_loss=False)`, backward, then
`loss_and_grad_norm()` -- that read is the step's only device-to-host copy (NumbaBackend does this).

The fused path, `KernelGPT2(config, fused=True)` (`gpt2lab train`'s default on a GPU, `--fused` on the CPU;
the class's own default stays the per-op path the lessons take apart): `forward_fused` and `backward_fused`,
the same model on fewer, fused kernels -- flash attention (an activation "lse" (L, B, NH, T) in place of the
T x T att, which is then not allocated) and each residual add fused into the LayerNorm that reads it (the
residual backward calls disappear), on the CPU and CUDA; on CUDA also the fused classifier and the one-launch
AdamW (the CPU keeps crossentropy and AdamW per tensor: those two have no CPU kernels). docs/kernels.md "The
fused path" has the wiring.

    >>> model = KernelGPT2(GPTConfig.preset("tiny"))            # GPT-2 init, same numbers as GPT2 + init_params
    >>> loss = model.forward(idx, targets)                      # idx, targets: (B, T) ints
    >>> model.zero_grad(); model.backward(); model.adamw_step(lr=1e-3)
"""
from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import config as numba_config
from numba import cuda

from gpt2lab.kernels._cuda import memset_zero, view
from gpt2lab.kernels._validate import on_host
from gpt2lab.kernels.adamw import adamw_update, adamw_update_flat
from gpt2lab.kernels.attention import (attention_backward, attention_backward_flash, attention_forward,
                                       attention_forward_flash)
from gpt2lab.kernels.crossentropy import crossentropy_backward, crossentropy_forward, fused_classifier
from gpt2lab.kernels.encoder import encoder_backward, encoder_forward, token_runs
from gpt2lab.kernels.gelu import gelu_backward, gelu_forward
from gpt2lab.kernels.layernorm import layernorm_backward, layernorm_forward
from gpt2lab.kernels.matmul import matmul_backward, matmul_forward
from gpt2lab.kernels.residual import residual_backward, residual_forward
from gpt2lab.kernels.residual_layernorm import residual_layernorm_backward, residual_layernorm_forward

from .buffers import (BLOCK_GRAD_NAMES, DECAYED, FUSED_LAYER_ACT_NAMES, LAYER_ACT_NAMES, LAYER_NAMES, PARAM_NAMES,
                      FlatBuffer, StepScalars, act_shapes, fill, from_reference_names, grad_act_shapes, is_cuda,
                      keeps_probs, named_view, param_shapes, scale, sum_of_squares, to_reference_names)
from .config import GPTConfig

DEVICES = ("cpu", "cuda", "cudasim")


def _layer_views(views: dict, names, L: int) -> list[dict]:
    """[{name: views[name][l] for name in names} for each layer l]: the per-layer slices, made once."""
    return [{name: views[name][l] for name in names} for l in range(L)]


@functools.lru_cache(maxsize=64)
def _takes_runs(fn) -> bool:
    """Whether an encoder_backward entry point accepts runs= (ours and the injected faults do; a learner's
    plugged-in kernel may not, and then gets the plain call)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "runs" or p.kind is p.VAR_KEYWORD for p in params)


@dataclass
class Kernels:
    """Every kernel entry point the model calls, by name: the one place a kernel is swapped -- an injected
    fault (gpt2/faults.py), or a learner's own kernel plugged into the real model. Defaults: gpt2lab.kernels.

        KernelGPT2(config, kernels=Kernels(gelu_forward=my_gelu))
    """
    encoder_forward: Callable = encoder_forward
    encoder_backward: Callable = encoder_backward
    layernorm_forward: Callable = layernorm_forward
    layernorm_backward: Callable = layernorm_backward
    matmul_forward: Callable = matmul_forward
    matmul_backward: Callable = matmul_backward
    attention_forward: Callable = attention_forward
    attention_backward: Callable = attention_backward
    gelu_forward: Callable = gelu_forward
    gelu_backward: Callable = gelu_backward
    residual_forward: Callable = residual_forward
    residual_backward: Callable = residual_backward
    crossentropy_forward: Callable = crossentropy_forward
    crossentropy_backward: Callable = crossentropy_backward
    adamw_update: Callable = adamw_update
    # the fused path's (KernelGPT2(..., fused=True)): flash attention and residual + LayerNorm on every
    # device; the fused classifier and the one-launch AdamW on CUDA only (no CPU kernels of them exist)
    attention_forward_flash: Callable = attention_forward_flash
    attention_backward_flash: Callable = attention_backward_flash
    residual_layernorm_forward: Callable = residual_layernorm_forward
    residual_layernorm_backward: Callable = residual_layernorm_backward
    fused_classifier: Callable = fused_classifier
    adamw_update_flat: Callable = adamw_update_flat


# The Kernels entry points each path calls (what an injected fault must hit: gpt2/faults.py asks `calls`).
_UNFUSED_ONLY = {"attention_forward", "attention_backward", "residual_forward", "residual_backward"}
_FUSED = {"attention_forward_flash", "attention_backward_flash", "residual_layernorm_forward",
          "residual_layernorm_backward"}
_FUSED_CUDA = {"fused_classifier", "adamw_update_flat"}
_FUSED_CUDA_REPLACES = {"crossentropy_forward", "crossentropy_backward", "adamw_update"}


def entry_points(fused: bool, device: str) -> frozenset[str]:
    """The names of the Kernels entry points a training step of KernelGPT2(fused=..., device=...) calls."""
    every = {f for f in Kernels.__dataclass_fields__}
    if not fused:
        return frozenset(every - _FUSED - _FUSED_CUDA)
    if is_cuda(device):
        return frozenset(every - _UNFUSED_ONLY - _FUSED_CUDA_REPLACES)
    return frozenset(every - _UNFUSED_ONLY - _FUSED_CUDA)


class KernelGPT2:
    """GPT-2 whose forward, backward and AdamW are our numba kernels over flat buffers.

    config: the model shape. device: "cpu" (numpy buffers, numba CPU kernels), "cuda" (numba device arrays,
    CUDA kernels) or "cudasim" (the same on numba's CUDA simulator; NUMBA_ENABLE_CUDASIM=1 must be set before
    numba is imported). seed: the initial weights are `init_params(config, seed)`, the very numbers the
    reference GPT2 gets, so the two can be compared from step 0; pass init=False for all zeros (then load).
    kernels: the entry points to call (default: gpt2lab.kernels'); `model.kernels` can be swapped later too.
    fused (off here: the per-op path is the one the lessons read; `gpt2lab train` turns it on for a GPU,
    gpt2/choices.default_fused): forward_fused and
    backward_fused in place of forward and backward. On every device: flash attention (an activation "lse"
    (L, B, NH, T) in place of att (L, B, NH, T, T), which is not allocated; the backward rebuilds att from
    lse) and each residual add fused into the LayerNorm that reads its result (the residual backward calls
    disappear: the stream's gradient is each branch's dout). On CUDA also: the fused classifier (loss and
    dlogits in one kernel, probs not written unless `write_probs` is set, as live parity does) in place of
    crossentropy_forward + _backward, and AdamW as one launch over the flat buffers (adamw_update_flat) in
    place of one per tensor. On the CPU those two stay crossentropy_forward/_backward and adamw_update per
    tensor (they have no CPU kernels). `entry_points(fused, device)` names what each path calls.
    lean (on by default): keep only what a training step needs. Every block's backward reuses one block's
    activation gradients (buffers.BLOCK_GRAD_NAMES; only the stream's, residual3, is kept per block), and the
    fused classifier's path has no probs buffer. A ParityMonitor sets `model.lean = False` (it reads every
    block's gradients and the probs); the next forward then allocates the full buffers.
    """

    def __init__(self, config: GPTConfig, device: str = "cpu", seed: int = 0, init: bool = True,
                 kernels: Kernels | None = None, fused: bool = False, lean: bool = True):
        if device not in DEVICES:
            raise ValueError(f"KernelGPT2: device must be one of {DEVICES}, got {device!r}")
        if device == "cudasim" and not numba_config.ENABLE_CUDASIM:
            raise ValueError("KernelGPT2: device 'cudasim' needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
        if device == "cudasim":
            from gpt2lab.kernels._cudasim import install
            install()  # warp shuffles and race-free shared arrays for numba's simulator
        if device == "cuda" and not (numba_config.ENABLE_CUDASIM or cuda.is_available()):
            raise ValueError("KernelGPT2: device 'cuda' but numba sees no CUDA GPU")
        self.config, self.device, self.fused = config, device, bool(fused)
        # the fused classifier and the one-launch AdamW: CUDA kernels only, so the CPU's fused path keeps the others
        self.fused_head = self.fused and is_cuda(device)
        self.calls = entry_points(self.fused, device)   # the Kernels entry points a step calls
        self.layer_act_names = FUSED_LAYER_ACT_NAMES if self.fused else LAYER_ACT_NAMES
        self.write_probs = False                     # fused: also write probs (live parity reads them)
        self.dlosses_for = None                      # fused: the (B, T) dlosses = 1/(B*T) was filled for
        self.kernels = kernels if kernels is not None else Kernels()
        shapes = param_shapes(config)
        self.params_memory = FlatBuffer(shapes, device)
        self.grads_memory = FlatBuffer(shapes, device)
        self.m_memory = FlatBuffer(shapes, device)   # AdamW first moment
        self.v_memory = FlatBuffer(shapes, device)   # AdamW second moment
        self.params = self.params_memory.views()
        self.grads = self.grads_memory.views()
        # block l's own views, made once: slicing a device array makes a new object each time (host time in
        # every step, hundreds of slices), so forward and backward index these lists instead
        self.layer_params = _layer_views(self.params, LAYER_NAMES, config.n_layer)
        self.layer_grads = _layer_views(self.grads, LAYER_NAMES, config.n_layer)
        self.layer_acts, self.layer_grads_acts = [], []
        self.step = 0                                # AdamW steps taken (bias correction uses step + 1 next)
        # activations are allocated by the first forward, for its (B, T)
        self.acts_memory = self.grads_acts_memory = None
        self.acts, self.grads_acts = {}, {}
        self.capacity = (0, 0)                       # the (B, T) the activation buffers can hold
        # lean: wanted (a ParityMonitor switches it off); allocated_lean: what the buffers were made for, which
        # their views and the backward's zeroing follow; the next forward reallocates when the two differ
        self.lean = self.allocated_lean = bool(lean)
        self.B = self.T = 0
        self.inputs = self.targets = None            # the batch of the last forward (host or device int32)
        # on a GPU: the batch's device buffer and its host staging copy, int32, N = B*T of the capacity:
        # [idx (N) | targets (N) | order (N) | starts (N + 1)] (order, starts: the encoder backward's token runs)
        self.tokens_memory = self.tokens_host = None
        self.runs = None                             # (order, starts) views of the last batch, on the device
        self.mean_loss = None
        self.loss_pending = False                    # forward(..., read_loss=False): the loss is on the device
        # on a GPU: the loss sum and grad norm of a step, computed there and read back in one small copy
        self.scalars = StepScalars() if is_cuda(device) else None
        if self.fused_head:   # adamw_update_flat's tensor table: where each tensor ends, and whether it is decayed
            ends = np.cumsum([math.prod(shape) for shape in shapes.values()]).astype(np.int64)
            self.region_end = cuda.to_device(ends)
            self.region_decay = cuda.to_device(np.array([n in DECAYED for n in shapes], dtype=np.float32))
        if init:
            from .model import init_params
            self.load_params(init_params(config, seed))

    # ------------------------------------------------------------ memory
    def _shapes(self, B: int, T: int, lean: bool) -> tuple[dict, dict]:
        """(activation shapes, activation-gradient shapes) for (B, T), lean or not."""
        acts = act_shapes(self.config, B, T, self.fused, probs=keeps_probs(lean, self.fused_head))
        return acts, grad_act_shapes(self.config, B, T, lean)

    def _ensure_capacity(self, B: int, T: int) -> None:
        """Make the activation buffers hold (B, T): reallocate only when B or T grows past what they hold, or
        `lean` changed."""
        capB, capT = self.capacity
        grown = B > capB or T > capT or bool(self.lean) != self.allocated_lean
        if grown:
            capB, capT = max(B, capB), max(T, capT)
            self.acts_memory = self.grads_acts_memory = None   # free the old pair before making the new one
            self.allocated_lean = bool(self.lean)
            acts, grads = self._shapes(capB, capT, self.allocated_lean)
            self.acts_memory = FlatBuffer(acts, self.device)
            self.grads_acts_memory = FlatBuffer(grads, self.device)
            self.block_grads_span = self.grads_acts_memory.span(BLOCK_GRAD_NAMES)   # zeroed per block when lean
            if is_cuda(self.device):   # the batch's ids: uploaded into this buffer, never a new allocation
                self.tokens_memory = cuda.device_array(4 * capB * capT + 1, dtype=np.int32)
                self.tokens_host = np.zeros(4 * capB * capT + 1, dtype=np.int32)
            self.capacity = (capB, capT)
            self.dlosses_for = None
        if grown or (B, T) != (self.B, self.T):
            acts, grads = self._shapes(B, T, self.allocated_lean)
            self.acts = self.acts_memory.views(acts)
            self.grads_acts = self.grads_acts_memory.views(grads)
            L = self.config.n_layer
            self.layer_acts = _layer_views(self.acts, self.layer_act_names, L)
            # block l's gradient views; lean: the block gradients are one block's, [0], the same for every l
            self.layer_grads_acts = [{n: self.grads_acts[n][0 if self.allocated_lean and n in BLOCK_GRAD_NAMES else l]
                                      for n in BLOCK_GRAD_NAMES + ("residual3",)} for l in range(L)]
            self.B, self.T = B, T

    def _batch(self, a, name: str):
        """(B, T) token ids -> int32 C-contiguous numpy, checked (on the host, before any upload)."""
        if hasattr(a, "detach"):  # a torch tensor
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        # checked before the cast to int32: a cast would truncate 3.7 to 3 and wrap 2**32 + 5 to 5
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"KernelGPT2.forward: {name} must be integer token ids, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"KernelGPT2.forward: {name} must be (B, T), got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= self.config.vocab_size):
            raise ValueError(f"KernelGPT2.forward: {name} must be token ids in [0, {self.config.vocab_size}), "
                             f"got values in [{a.min()}, {a.max()}]")
        return np.ascontiguousarray(a, dtype=np.int32)

    def _upload(self, idx: np.ndarray, targets) -> None:
        """idx, targets (None or (B, T)) and the token runs of idx (kernels.encoder.token_runs) into the
        preallocated device buffer, in one host-to-device copy; sets self.inputs, self.targets, self.runs."""
        n, N, host = idx.size, self.capacity[0] * self.capacity[1], self.tokens_host
        order, starts = token_runs(idx)
        host[:n] = idx.reshape(-1)
        if targets is not None:
            host[N:N + n] = targets.reshape(-1)
        host[2 * N:2 * N + n] = order
        host[3 * N:3 * N + starts.size] = starts
        self.tokens_memory.copy_to_device(host)
        dev = self.tokens_memory
        self.inputs = dev[:n].reshape(idx.shape)
        self.targets = None if targets is None else dev[N:N + n].reshape(idx.shape)
        self.runs = (dev[2 * N:2 * N + n], dev[3 * N:3 * N + starts.size])

    # ------------------------------------------------------------ forward
    def forward(self, idx, targets=None, read_loss: bool = True):
        """idx: (B, T) int token ids, T <= block_size; targets: (B, T) int or None.

        Fills every activation (self.acts; the logits are self.logits, (B, T, V)). Returns the mean
        cross-entropy loss as a float, or None without targets. read_loss=False (a GPU step): leave the
        per-token losses on the device and return None; `loss_and_grad_norm()` reads the loss later, in the
        same copy as the grad norm, so a training step makes one device-to-host copy.
        A fused model (fused=True) runs forward_fused after taking the batch.
        """
        self._take_batch(idx, targets)
        if self.fused:
            return self.forward_fused(read_loss)
        L, NH = self.config.n_layer, self.config.n_head
        p, a, k = self.params, self.acts, self.kernels

        k.encoder_forward(a["encoded"], self.inputs, p["wte"], p["wpe"])          # wte[idx] + wpe[t]
        for l in range(L):
            la, lp = self.layer_acts[l], self.layer_params[l]   # block l's views, made once (see _layer_views)
            residual = a["encoded"] if l == 0 else self.layer_acts[l - 1]["residual3"]   # the block's input stream
            # x + attn(ln_1(x))
            k.layernorm_forward(la["ln1"], la["ln1_mean"], la["ln1_rstd"], residual,
                                lp["ln1w"], lp["ln1b"])
            k.matmul_forward(la["qkv"], la["ln1"], lp["qkvw"], lp["qkvb"])
            k.attention_forward(la["atty"], la["att"], la["qkv"], NH)
            k.matmul_forward(la["attproj"], la["atty"], lp["attprojw"], lp["attprojb"])
            k.residual_forward(la["residual2"], residual, la["attproj"])
            # x + mlp(ln_2(x))
            k.layernorm_forward(la["ln2"], la["ln2_mean"], la["ln2_rstd"], la["residual2"],
                                lp["ln2w"], lp["ln2b"])
            k.matmul_forward(la["fch"], la["ln2"], lp["fcw"], lp["fcb"])
            k.gelu_forward(la["fch_gelu"], la["fch"])
            k.matmul_forward(la["fcproj"], la["fch_gelu"], lp["fcprojw"], lp["fcprojb"])
            k.residual_forward(la["residual3"], la["residual2"], la["fcproj"])
        k.layernorm_forward(a["lnf"], a["lnf_mean"], a["lnf_rstd"], self.layer_acts[L - 1]["residual3"], p["lnfw"],
                            p["lnfb"])
        k.matmul_forward(a["logits"], a["lnf"], p["wte"], None)                   # lm_head, tied to wte
        if self.targets is not None:
            k.crossentropy_forward(a["losses"], a["probs"], a["logits"], self.targets)
        return self._mean_loss(read_loss)

    def forward_fused(self, read_loss: bool = True):
        """The fused forward (fused=True) on the batch `forward` took: flash attention (out and lse, no T x T
        att) and each residual add fused into the LayerNorm that reads its result -- residual2 = x + attproj
        into ln_2, residual3 = residual2 + fcproj into the next block's ln_1 (after the last block, ln_f). So
        only block 0's ln_1 is a plain LayerNorm. On CUDA the loss comes from the fused classifier, which
        also writes dlogits for the backward. Call it through forward(idx, targets)."""
        B, T, L, NH = self.B, self.T, self.config.n_layer, self.config.n_head
        p, a, k = self.params, self.acts, self.kernels

        k.encoder_forward(a["encoded"], self.inputs, p["wte"], p["wpe"])          # wte[idx] + wpe[t]
        first = self.layer_acts[0]
        k.layernorm_forward(first["ln1"], first["ln1_mean"], first["ln1_rstd"], a["encoded"],
                            self.layer_params[0]["ln1w"], self.layer_params[0]["ln1b"])
        for l in range(L):
            la, lp = self.layer_acts[l], self.layer_params[l]
            residual = a["encoded"] if l == 0 else self.layer_acts[l - 1]["residual3"]   # the block's input stream
            # x + attn(ln_1(x)), its sum normalised by ln_2 in the same pass
            k.matmul_forward(la["qkv"], la["ln1"], lp["qkvw"], lp["qkvb"])
            k.attention_forward_flash(la["atty"], la["lse"], la["qkv"], NH)
            k.matmul_forward(la["attproj"], la["atty"], lp["attprojw"], lp["attprojb"])
            k.residual_layernorm_forward(la["residual2"], la["ln2"], la["ln2_mean"], la["ln2_rstd"],
                                         residual, la["attproj"], lp["ln2w"], lp["ln2b"])
            # x + mlp(ln_2(x)), its sum normalised by the next LayerNorm: block l+1's ln_1, or ln_f
            k.matmul_forward(la["fch"], la["ln2"], lp["fcw"], lp["fcb"])
            k.gelu_forward(la["fch_gelu"], la["fch"])
            k.matmul_forward(la["fcproj"], la["fch_gelu"], lp["fcprojw"], lp["fcprojb"])
            if l + 1 < L:
                na, nlp = self.layer_acts[l + 1], self.layer_params[l + 1]   # the next block's
                ln, w, b = (na["ln1"], na["ln1_mean"], na["ln1_rstd"]), nlp["ln1w"], nlp["ln1b"]
            else:
                ln, w, b = (a["lnf"], a["lnf_mean"], a["lnf_rstd"]), p["lnfw"], p["lnfb"]
            k.residual_layernorm_forward(la["residual3"], *ln, la["residual2"], la["fcproj"], w, b)
        k.matmul_forward(a["logits"], a["lnf"], p["wte"], None)                   # lm_head, tied to wte
        if self.targets is not None and self.fused_head:   # loss and dlogits (for backward) in one kernel
            if self.dlosses_for != (B, T):   # once per batch shape: the fused backward never zeroes it
                fill(self.grads_acts["losses"], 1.0 / (B * T))
                self.dlosses_for = (B, T)
            k.fused_classifier(a["losses"], self.grads_acts["logits"], a.get("probs"), a["logits"], self.targets,
                               self.grads_acts["losses"], self.write_probs)
        elif self.targets is not None:
            k.crossentropy_forward(a["losses"], a["probs"], a["logits"], self.targets)
        return self._mean_loss(read_loss)

    def _take_batch(self, idx, targets) -> None:
        """Check idx, targets; size the buffers for (B, T); set self.inputs, self.targets (on a GPU: uploaded)."""
        if np.ndim(idx) != 2:
            raise ValueError(f"KernelGPT2.forward: idx must be (B, T) token ids, got shape {tuple(np.shape(idx))}")
        B, T = np.shape(idx)
        if T > self.config.block_size:
            raise ValueError(f"KernelGPT2.forward: T = {T} exceeds block_size {self.config.block_size}")
        if targets is not None and tuple(np.shape(targets)) != (B, T):
            raise ValueError(f"KernelGPT2.forward: targets must be (B, T) = {(B, T)}, got {tuple(np.shape(targets))}")
        self._ensure_capacity(B, T)
        self.inputs = self._batch(idx, "idx")
        self.targets = None if targets is None else self._batch(targets, "targets")
        if is_cuda(self.device):
            self._upload(self.inputs, self.targets)

    def _mean_loss(self, read_loss: bool):
        """The forward's mean loss from the per-token losses (None without targets, or left on the device)."""
        B, T = self.B, self.T
        self.mean_loss, self.loss_pending = None, False
        if self.targets is None:
            return None
        if not read_loss:
            self.loss_pending = True
        elif self.scalars is not None:   # summed on the device: one 8-byte number comes back
            self.mean_loss = self.scalars.read(losses=view(self.acts["losses"], B * T))[0] / (B * T)
        else:                            # the mean over B*T tokens, in float64
            self.mean_loss = float(self.acts["losses"].astype(np.float64).mean())
        return self.mean_loss

    @property
    def logits(self):
        """(B, T, V) logits of the last forward (a view into the activations: host or device array)."""
        return self.acts["logits"]

    # ------------------------------------------------------------ backward
    def zero_grad(self) -> None:
        """grads = 0: the backward kernels accumulate, so each step starts from zero."""
        fill(self.grads_memory.memory, 0.0)

    def backward(self) -> None:
        """Accumulate d mean_loss / d param into self.grads, from the activations of the last forward(idx, targets).
        A fused model (fused=True) runs backward_fused."""
        if self.mean_loss is None and not self.loss_pending:
            raise RuntimeError("KernelGPT2.backward: call forward(idx, targets) with targets first")
        if self.fused:
            return self.backward_fused()
        B, T, L, NH = self.B, self.T, self.config.n_layer, self.config.n_head
        a, ga, k = self.acts, self.grads_acts, self.kernels
        fill(self.grads_acts_memory.memory, 0.0)  # activation gradients are per batch: start each backward at 0
        # loss = mean of B*T per-token losses, so each one's gradient is 1 / (B*T)
        fill(ga["losses"], 1.0 / (B * T))
        k.crossentropy_backward(ga["logits"], ga["losses"], a["probs"], self.targets)
        self._head_backward()
        for l in reversed(range(L)):
            la, lp, lg, lga = self.layer_acts[l], self.layer_params[l], self.layer_grads[l], self._block_grads(l)
            residual, dresidual = self._block_input(l)
            # back through x + mlp(ln_2(x)): the stream's gradient goes both ways round the residual
            k.residual_backward(lga["residual2"], lga["fcproj"], lga["residual3"])
            k.matmul_backward(lga["fch_gelu"], lg["fcprojw"], lg["fcprojb"], lga["fcproj"],
                              la["fch_gelu"], lp["fcprojw"])
            k.gelu_backward(lga["fch"], la["fch"], lga["fch_gelu"])
            k.matmul_backward(lga["ln2"], lg["fcw"], lg["fcb"], lga["fch"], la["ln2"], lp["fcw"])
            k.layernorm_backward(lga["residual2"], lg["ln2w"], lg["ln2b"], lga["ln2"], la["residual2"],
                                 lp["ln2w"], la["ln2_mean"], la["ln2_rstd"])
            # back through x + attn(ln_1(x))
            k.residual_backward(dresidual, lga["attproj"], lga["residual2"])
            k.matmul_backward(lga["atty"], lg["attprojw"], lg["attprojb"], lga["attproj"],
                              la["atty"], lp["attprojw"])
            k.attention_backward(lga["qkv"], lga["atty"], la["qkv"], la["att"], NH)
            k.matmul_backward(lga["ln1"], lg["qkvw"], lg["qkvb"], lga["qkv"], la["ln1"], lp["qkvw"])
            k.layernorm_backward(dresidual, lg["ln1w"], lg["ln1b"], lga["ln1"], residual,
                                 lp["ln1w"], la["ln1_mean"], la["ln1_rstd"])
        self._encoder_backward()

    def backward_fused(self) -> None:
        """The fused backward (fused=True), after forward_fused. The residual backward adds are gone: an add
        passes its gradient unchanged to both summands, so each branch's last matmul reads the stream's
        gradient itself as its dout (d fcproj = d residual3, d attproj = d residual2: ga["fcproj"] and
        ga["attproj"] stay zero), and each fused LayerNorm backward adds the stream's gradient from above to
        its own dinp. Attention's backward rebuilds att from lse, tile by tile."""
        B, T, L, NH = self.B, self.T, self.config.n_layer, self.config.n_head
        a, ga, k = self.acts, self.grads_acts, self.kernels
        if self.fused_head:
            # dlogits came with the loss (the fused classifier wrote it); zero what lies before it: the
            # activation-gradient regions are laid out with logits and losses last (buffers.GRAD_ACT_NAMES)
            memset_zero(self.grads_acts_memory.memory[:self.grads_acts_memory.offsets["logits"]])
        else:
            fill(self.grads_acts_memory.memory, 0.0)
            fill(ga["losses"], 1.0 / (B * T))
            k.crossentropy_backward(ga["logits"], ga["losses"], a["probs"], self.targets)
        self._head_backward()
        for l in reversed(range(L)):
            la, lp, lg, lga = self.layer_acts[l], self.layer_params[l], self.layer_grads[l], self._block_grads(l)
            residual, dresidual = self._block_input(l)
            # back through x + mlp(ln_2(x)): d fcproj is d residual3 itself
            k.matmul_backward(lga["fch_gelu"], lg["fcprojw"], lg["fcprojb"], lga["residual3"],
                              la["fch_gelu"], lp["fcprojw"])
            k.gelu_backward(lga["fch"], la["fch"], lga["fch_gelu"])
            k.matmul_backward(lga["ln2"], lg["fcw"], lg["fcb"], lga["fch"], la["ln2"], lp["fcw"])
            k.residual_layernorm_backward(lga["residual2"], lg["ln2w"], lg["ln2b"], lga["ln2"], lga["residual3"],
                                          la["residual2"], lp["ln2w"], la["ln2_mean"], la["ln2_rstd"])
            # back through x + attn(ln_1(x)): d attproj is d residual2 itself
            k.matmul_backward(lga["atty"], lg["attprojw"], lg["attprojb"], lga["residual2"],
                              la["atty"], lp["attprojw"])
            k.attention_backward_flash(lga["qkv"], lga["atty"], la["qkv"], la["atty"], la["lse"], NH)
            k.matmul_backward(lga["ln1"], lg["qkvw"], lg["qkvb"], lga["qkv"], la["ln1"], lp["qkvw"])
            k.residual_layernorm_backward(dresidual, lg["ln1w"], lg["ln1b"], lga["ln1"], lga["residual2"],
                                          residual, lp["ln1w"], la["ln1_mean"], la["ln1_rstd"])
        self._encoder_backward()

    def _head_backward(self) -> None:
        """From dlogits back through lm_head (its share of dwte) and ln_f, into the last block's stream gradient."""
        p, g, a, ga, L = self.params, self.grads, self.acts, self.grads_acts, self.config.n_layer
        self.kernels.matmul_backward(ga["lnf"], g["wte"], None, ga["logits"], a["lnf"], p["wte"])
        self.kernels.layernorm_backward(self.layer_grads_acts[L - 1]["residual3"], g["lnfw"], g["lnfb"], ga["lnf"],
                                        self.layer_acts[L - 1]["residual3"], p["lnfw"], a["lnf_mean"], a["lnf_rstd"])

    def _block_input(self, l: int) -> tuple:
        """(block l's input stream, its gradient): the embeddings' for block 0, else block l-1's output's."""
        if l == 0:
            return self.acts["encoded"], self.grads_acts["encoded"]
        return self.layer_acts[l - 1]["residual3"], self.layer_grads_acts[l - 1]["residual3"]

    def _block_grads(self, l: int) -> dict:
        """Block l's activation-gradient views, ready for its backward (whose kernels accumulate). lean: they
        are the one block's every block shares, still holding block l+1's sums, so they are zeroed first (block
        L-1's were zeroed with the rest of the buffer)."""
        if self.allocated_lean and l < self.config.n_layer - 1:   # the buffers' own layout, not the wish:
            fill(self.block_grads_span, 0.0)                         # lean may be switched off after a forward
        return self.layer_grads_acts[l]

    def _encoder_backward(self) -> None:
        """dwte, dwpe += the encoder's scatter-add of d encoded, on top of lm_head's share of dwte."""
        g, ga, k = self.grads, self.grads_acts, self.kernels
        if self.runs is not None and _takes_runs(k.encoder_backward):   # the token runs came with the batch
            k.encoder_backward(g["wte"], g["wpe"], ga["encoded"], self.inputs, runs=self.runs)
        else:
            k.encoder_backward(g["wte"], g["wpe"], ga["encoded"], self.inputs)

    # ------------------------------------------------------------ optimizer
    def grad_norm(self) -> float:
        """The global L2 norm of all parameter gradients (wte once: it is one tensor)."""
        if self.scalars is not None:   # on the device, into the preallocated scalars: nothing allocated
            return math.sqrt(self.scalars.read(grads=self.grads_memory.memory)[1])
        return float(np.sqrt(sum_of_squares(self.grads_memory.memory)))

    def loss_and_grad_norm(self) -> tuple[float, float]:
        """(mean loss, global grad norm) after forward(idx, targets, read_loss=False) and backward: both
        reduced on the device and read back in one copy (on the CPU: computed here). Sets mean_loss."""
        if self.loss_pending and self.scalars is not None:
            N = self.B * self.T
            loss_sum, sumsq = self.scalars.read(losses=view(self.acts["losses"], N), grads=self.grads_memory.memory)
            self.mean_loss, self.loss_pending = loss_sum / N, False
            return self.mean_loss, math.sqrt(sumsq)
        if self.loss_pending:
            self.mean_loss, self.loss_pending = float(self.acts["losses"].astype(np.float64).mean()), False
        return self.mean_loss, self.grad_norm()

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale all gradients so their global norm is at most max_norm (torch's clip_grad_norm_ formula).

        Returns the norm before clipping."""
        norm = self.grad_norm()
        if norm > max_norm:
            self.scale_grads(max_norm / (norm + 1e-6))
        return norm

    def scale_grads(self, factor: float) -> None:
        """grads *= factor (one kernel over the flat buffer on a GPU)."""
        scale(self.grads_memory.memory, factor)

    def adamw_step(self, lr: float, beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                   weight_decay: float = 0.1) -> None:
        """One AdamW update of every parameter from self.grads; weight decay on the matrices only (DECAYED)."""
        self.step += 1  # 1-based inside the kernel: bias corrections 1 - beta^step
        if self.fused_head:
            self.kernels.adamw_update_flat(self.params_memory.memory, self.grads_memory.memory, self.m_memory.memory,
                                           self.v_memory.memory, self.region_end, self.region_decay, self.step, lr,
                                           beta1, beta2, eps, weight_decay)
            return
        for name in PARAM_NAMES:
            decay = weight_decay if name in DECAYED else 0.0
            self.kernels.adamw_update(self.params_memory.flat(name), self.grads_memory.flat(name),
                                      self.m_memory.flat(name), self.v_memory.flat(name), self.step, lr, beta1,
                                      beta2, eps, decay)

    # ------------------------------------------------------------ sampling
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int | None = 0) -> np.ndarray:
        """Append max_new_tokens tokens to idx (B, T) ints; returns (B, T + max_new_tokens) int64 numpy.

        temperature <= 0: greedy (argmax). top_k keeps the k most likely tokens. Each step runs the full forward
        on the last block_size tokens and copies the last position's logits to the host. The draw itself uses
        torch.multinomial with torch.Generator().manual_seed(seed), exactly as the reference GPT2.generate does
        with that generator, so the same weights and seed give the same tokens (up to float rounding at a
        boundary between two tokens' probability intervals).
        """
        import torch

        from .model import sample_next

        idx = np.array(idx.detach().cpu().numpy() if hasattr(idx, "detach") else idx, dtype=np.int64)
        if idx.ndim != 2:
            raise ValueError(f"KernelGPT2.generate: idx must be (B, T), got shape {idx.shape}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        maxT = self.config.block_size
        # allocate once for the longest context this call will see, not again at every new token
        self._ensure_capacity(idx.shape[0], min(maxT, idx.shape[1] + max_new_tokens))
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -maxT:]
            self.forward(idx_cond)
            T = idx_cond.shape[1]
            logits = self.acts["logits"]            # only the last position's (B, V) matter; a device array
            last = on_host(logits)[:, T - 1, :]
            logits = torch.from_numpy(np.array(last, dtype=np.float32))           # (B, V), a copy
            idx_next = sample_next(logits, temperature, top_k, generator)
            idx = np.concatenate([idx, idx_next.numpy().astype(np.int64)], axis=1)
        return idx

    # ------------------------------------------------------------ named access
    def params_view(self, name: str):
        """The parameter `name` as a view (writes go into the model): one of PARAM_NAMES, e.g. "qkvw" (L, 3C, C),
        or a reference name for one layer's tensor, e.g. "transformer.h.1.attn.c_attn.weight" (3C, C)."""
        return named_view(self.params, self.config, name)

    def grads_view(self, name: str):
        """The gradient of parameter `name`, named as in params_view."""
        return named_view(self.grads, self.config, name)

    @property
    def activations(self) -> dict:
        """name -> view of every activation of the last forward (per-layer ones are (L, ...): index [l])."""
        return self.acts

    def layer_activations(self, l: int) -> dict:
        """Block l's activations: ln1, qkv, att (B, NH, T, T) (fused: lse (B, NH, T)), ..., residual3 (its output)."""
        return {name: self.acts[name][l] for name in self.layer_act_names}

    # ------------------------------------------------------------ conversions
    def _named(self, buffer: FlatBuffer) -> dict[str, np.ndarray]:
        """A parameter-shaped buffer as the reference GPT2's name -> float32 numpy copy (buffers.py)."""
        return to_reference_names(buffer, self.config)

    def _load_named(self, buffer: FlatBuffer, named: dict) -> None:
        """The inverse of _named: the reference GPT2's name -> array into a parameter-shaped buffer."""
        from_reference_names(buffer, self.config, named)

    def params_numpy(self) -> dict[str, np.ndarray]:
        """Every parameter as the reference GPT2's name -> float32 numpy copy (GPT2.params_numpy's format)."""
        return self._named(self.params_memory)

    def load_params(self, named: dict) -> None:
        """Copy parameters in from the reference GPT2's name -> numpy array or tensor (lm_head.weight ignored)."""
        self._load_named(self.params_memory, named)

    def to_state_dict(self) -> dict:
        """The reference GPT2's state_dict: name -> float32 CPU tensor, lm_head.weight included and tied to wte,
        so GPT2(config).load_state_dict(model.to_state_dict()) works."""
        import torch
        sd = {name: torch.from_numpy(a) for name, a in self.params_numpy().items()}
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
        return sd

    @classmethod
    def from_torch(cls, source, config: GPTConfig | None = None, device: str = "cpu") -> "KernelGPT2":
        """A KernelGPT2 with the weights of a reference GPT2 module or its state dict (config required then)."""
        if hasattr(source, "state_dict"):
            config = config or source.config
            source = source.state_dict()
        if config is None:
            raise ValueError("KernelGPT2.from_torch: pass config= with a state dict (n_head is not in the shapes)")
        model = cls(config, device=device, init=False)
        model.load_params(source)
        return model

    def optimizer_state(self) -> dict:
        """AdamW's state in the trainer's format: {"step", "m": {ref name: array}, "v": {...}}."""
        return {"step": self.step, "m": self._named(self.m_memory), "v": self._named(self.v_memory)}

    def load_optimizer_state(self, state: dict) -> None:
        self._load_named(self.m_memory, state["m"])
        self._load_named(self.v_memory, state["v"])
        self.step = int(state["step"])
