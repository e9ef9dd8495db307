"""Our kernels against PyTorch on the same device, timed side by side in one process (`gpt2lab bench`'s ops).

For each op, forward+backward at GPT-2 124M shapes (B=4, C=768, V=50257; T=64 and T=256): the median
time of ours and of PyTorch eager (autograd), and the ratio ours/torch (below 1: we are faster). Machines
here are shared and noisy: the two sides of a ratio are interleaved, repeated, and reduced to medians
(`side_by_side`); never read one number alone. The whole training step is timed by gpt2/bench.py, the
tokenizer by datasets/bench_bpe.py, and the command that runs all three is gpt2/bench_cli.py.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

SHAPES = ({"B": 4, "T": 64, "C": 768, "V": 50257, "NH": 12}, {"B": 4, "T": 256, "C": 768, "V": 50257, "NH": 12})


def median_time(fn, reps: int, sync=lambda: None) -> float:
    """Median seconds of `fn()` over `reps` runs, after one warm-up run (compilation, caches)."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def side_by_side(ours, theirs, reps: int, sync=lambda: None) -> tuple[float, float]:
    """Median times of `ours` and `theirs`, measured in alternating rounds so load hits both alike."""
    ours()
    theirs()
    sync()
    a, b = [], []
    for _ in range(reps):
        for fn, acc in ((ours, a), (theirs, b)):
            t0 = time.perf_counter()
            fn()
            sync()
            acc.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


# ------------------------------------------------------------------ per-op cases
# Each builder returns (ours, torch) zero-argument closures doing forward + backward once.

def _rng():
    return np.random.default_rng(0)


def _f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


class Case:
    """Arrays for one op at one shape, on the host or the GPU, and the torch tensors beside them.

    matmul_version: the version "ours" uses for the matmul ops (None: the default; `gpt2lab bench --matmul`)."""

    def __init__(self, device: str, matmul_version: str | None = None):
        import torch
        self.device = device
        self.matmul_version = matmul_version
        self.torch_device = "cuda" if device == "cuda" else "cpu"
        self.torch = torch

    def arr(self, a):
        if self.device == "cuda":
            from numba import cuda
            return cuda.to_device(a)
        return a

    def zeros(self, *shape, dtype=np.float32):
        return self.arr(np.zeros(shape, dtype))

    def t(self, a, grad=False):
        return self.torch.tensor(a, device=self.torch_device, requires_grad=grad)


def _bench_encoder(c: Case, s):
    from .encoder import encoder_backward, encoder_forward
    B, T, C, V = s["B"], s["T"], s["C"], s["V"]
    rng = _rng()
    idx = rng.integers(0, V, (B, T)).astype(np.int32)
    wte, wpe, dout = _f32(rng, V, C), _f32(rng, 1024, C), _f32(rng, B, T, C)
    out, dwte, dwpe = c.zeros(B, T, C), c.zeros(V, C), c.zeros(1024, C)
    d_idx, d_wte, d_wpe, d_dout = c.arr(idx), c.arr(wte), c.arr(wpe), c.arr(dout)

    def ours():
        encoder_forward(out, d_idx, d_wte, d_wpe)
        encoder_backward(dwte, dwpe, d_dout, d_idx)

    t_wte, t_wpe, t_idx, t_dout = c.t(wte, True), c.t(wpe, True), c.t(idx.astype(np.int64)), c.t(dout)
    pos = c.torch.arange(T, device=c.torch_device)

    def theirs():
        (t_wte[t_idx] + t_wpe[pos]).backward(t_dout)
    return ours, theirs


def _bench_layernorm(c: Case, s):
    from .layernorm import EPS, layernorm_backward, layernorm_forward
    B, T, C = s["B"], s["T"], s["C"]
    rng = _rng()
    x, w, b, dout = _f32(rng, B, T, C), _f32(rng, C), _f32(rng, C), _f32(rng, B, T, C)
    out, mean, rstd = c.zeros(B, T, C), c.zeros(B, T), c.zeros(B, T)
    dx, dw, db = c.zeros(B, T, C), c.zeros(C), c.zeros(C)
    dX, dW, dB, dD = c.arr(x), c.arr(w), c.arr(b), c.arr(dout)

    def ours():
        layernorm_forward(out, mean, rstd, dX, dW, dB)
        layernorm_backward(dx, dw, db, dD, dX, dW, mean, rstd)
    tx, tw, tb, td = c.t(x, True), c.t(w, True), c.t(b, True), c.t(dout)
    F = c.torch.nn.functional

    def theirs():
        F.layer_norm(tx, (C,), tw, tb, EPS).backward(td)
    return ours, theirs


def _bench_matmul_shape(c: Case, s, OC, C):
    from .matmul import matmul_backward, matmul_forward
    B, T = s["B"], s["T"]
    rng = _rng()
    x, w, b, dout = _f32(rng, B, T, C), _f32(rng, OC, C, scale=0.02), _f32(rng, OC), _f32(rng, B, T, OC)
    out, dx, dw, db = c.zeros(B, T, OC), c.zeros(B, T, C), c.zeros(OC, C), c.zeros(OC)
    dX, dW, dBias, dD = c.arr(x), c.arr(w), c.arr(b), c.arr(dout)

    def ours():
        matmul_forward(out, dX, dW, dBias, version=c.matmul_version)
        matmul_backward(dx, dw, db, dD, dX, dW, version=c.matmul_version)
    tx, tw, tb, td = c.t(x, True), c.t(w, True), c.t(b, True), c.t(dout)
    F = c.torch.nn.functional

    def theirs():
        F.linear(tx, tw, tb).backward(td)
    return ours, theirs


def _bench_matmul(c, s):
    return _bench_matmul_shape(c, s, 4 * s["C"], s["C"])


def _bench_matmul_lm_head(c, s):
    return _bench_matmul_shape(c, s, s["V"], s["C"])


def _attention_inputs(c: Case, s):
    """qkv, dout (numpy) and PyTorch's attention forward+backward on them: the torch side of both benches."""
    B, T, C, NH = s["B"], s["T"], s["C"], s["NH"]
    rng = _rng()
    qkv, dout = _f32(rng, B, T, 3 * C), _f32(rng, B, T, C)
    tq, td = c.t(qkv, True), c.t(dout)
    torch = c.torch
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool, device=c.torch_device))

    def theirs():
        q, k, v = tq.split(C, dim=2)
        q, k, v = (z.view(B, T, NH, C // NH).transpose(1, 2) for z in (q, k, v))
        a = (q @ k.transpose(-2, -1)) * (1.0 / (C // NH) ** 0.5)
        a = torch.softmax(a.masked_fill(~mask, float("-inf")), dim=-1)
        (a @ v).transpose(1, 2).reshape(B, T, C).backward(td)
    return qkv, dout, theirs


def _bench_attention(c: Case, s):
    from .attention import attention_backward, attention_forward
    B, T, C, NH = s["B"], s["T"], s["C"], s["NH"]
    qkv, dout, theirs = _attention_inputs(c, s)
    out, att, dqkv = c.zeros(B, T, C), c.zeros(B, NH, T, T), c.zeros(B, T, 3 * C)
    dQ, dD = c.arr(qkv), c.arr(dout)

    def ours():
        attention_forward(out, att, dQ, NH)
        attention_backward(dqkv, dD, dQ, att, NH)
    return ours, theirs


def _bench_attention_flash(c: Case, s, version=None):
    """attention's flash pair (out and lse, no T x T att; CUDA `version`, None: the default) against the same
    PyTorch attention."""
    from .attention import attention_backward_flash, attention_forward_flash
    B, T, C, NH = s["B"], s["T"], s["C"], s["NH"]
    qkv, dout, theirs = _attention_inputs(c, s)
    out, lse, dqkv = c.zeros(B, T, C), c.zeros(B, NH, T), c.zeros(B, T, 3 * C)
    dQ, dD = c.arr(qkv), c.arr(dout)

    def ours():
        attention_forward_flash(out, lse, dQ, NH, version=version)
        attention_backward_flash(dqkv, dD, dQ, out, lse, NH, version=version)
    return ours, theirs


def _bench_residual_layernorm(c: Case, s):
    """residual + LayerNorm fused (one op in our model's place of residual + layernorm) against PyTorch's two."""
    from .layernorm import EPS
    from .residual_layernorm import residual_layernorm_backward, residual_layernorm_forward
    B, T, C = s["B"], s["T"], s["C"]
    rng = _rng()
    a, b, w, bias = _f32(rng, B, T, C), _f32(rng, B, T, C), _f32(rng, C), _f32(rng, C)
    dout, dres = _f32(rng, B, T, C), _f32(rng, B, T, C)
    res, out, mean, rstd = c.zeros(B, T, C), c.zeros(B, T, C), c.zeros(B, T), c.zeros(B, T)
    dinp, dw, db = c.zeros(B, T, C), c.zeros(C), c.zeros(C)
    dA, dB_, dW, dBias, dD, dR = c.arr(a), c.arr(b), c.arr(w), c.arr(bias), c.arr(dout), c.arr(dres)

    def ours():
        residual_layernorm_forward(res, out, mean, rstd, dA, dB_, dW, dBias)
        residual_layernorm_backward(dinp, dw, db, dD, dR, res, dW, mean, rstd)
    ta, tb, tw, tbias, td, tr = c.t(a, True), c.t(b, True), c.t(w, True), c.t(bias, True), c.t(dout), c.t(dres)
    F, torch = c.torch.nn.functional, c.torch

    def theirs():
        r = ta + tb
        torch.autograd.backward([F.layer_norm(r, (C,), tw, tbias, EPS), r], [td, tr])
    return ours, theirs


def _bench_gelu(c: Case, s):
    from .gelu import gelu_backward, gelu_forward
    B, T, C = s["B"], s["T"], 4 * s["C"]
    rng = _rng()
    x, dout = _f32(rng, B, T, C), _f32(rng, B, T, C)
    out, dx, dX, dD = c.zeros(B, T, C), c.zeros(B, T, C), c.arr(x), c.arr(dout)

    def ours():
        gelu_forward(out, dX)
        gelu_backward(dx, dX, dD)
    tx, td = c.t(x, True), c.t(dout)
    F = c.torch.nn.functional

    def theirs():
        F.gelu(tx, approximate="tanh").backward(td)
    return ours, theirs


def _bench_residual(c: Case, s):
    from .residual import residual_backward, residual_forward
    B, T, C = s["B"], s["T"], s["C"]
    rng = _rng()
    a, b, dout = _f32(rng, B, T, C), _f32(rng, B, T, C), _f32(rng, B, T, C)
    out, da, db = c.zeros(B, T, C), c.zeros(B, T, C), c.zeros(B, T, C)
    dA, dB_, dD = c.arr(a), c.arr(b), c.arr(dout)

    def ours():
        residual_forward(out, dA, dB_)
        residual_backward(da, db, dD)
    ta, tb, td = c.t(a, True), c.t(b, True), c.t(dout)

    def theirs():
        (ta + tb).backward(td)
    return ours, theirs


def _bench_crossentropy(c: Case, s):
    from .crossentropy import crossentropy_backward, crossentropy_forward
    B, T, V = s["B"], s["T"], s["V"]
    rng = _rng()
    logits, targets = _f32(rng, B, T, V), rng.integers(0, V, (B, T)).astype(np.int32)
    dlosses = np.full((B, T), 1.0 / (B * T), np.float32)
    losses, probs, dlogits = c.zeros(B, T), c.zeros(B, T, V), c.zeros(B, T, V)
    dL, dT, dDL = c.arr(logits), c.arr(targets), c.arr(dlosses)

    def ours():
        crossentropy_forward(losses, probs, dL, dT)
        crossentropy_backward(dlogits, dDL, probs, dT)
    tl, tt = c.t(logits, True), c.t(targets.astype(np.int64))
    F = c.torch.nn.functional

    def theirs():
        F.cross_entropy(tl.view(-1, V), tt.view(-1)).backward()
    return ours, theirs


def _adamw_n(device: str) -> int:
    return 124_475_904 if device == "cuda" else 7_000_000  # 124M on a GPU; ~tiny-config size on the CPU


def _bench_adamw(c: Case, s):
    from .adamw import adamw_update
    n = _adamw_n(c.device)
    rng = _rng()
    p, g = _f32(rng, n), _f32(rng, n)
    dP, dG, m, v = c.arr(p.copy()), c.arr(g), c.zeros(n), c.zeros(n)
    step = [0]

    def ours():
        step[0] += 1
        adamw_update(dP, dG, m, v, step[0], 1e-4, 0.9, 0.95, 1e-8, 0.1)
    tp = c.torch.nn.Parameter(c.t(p.copy()))
    tp.grad = c.t(g)
    # foreach=False: the plain per-tensor loop, the fairest match of one fused elementwise kernel
    opt = c.torch.optim.AdamW([tp], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False)
    return ours, opt.step


OP_BENCHES = {
    "encoder": _bench_encoder, "layernorm": _bench_layernorm, "matmul": _bench_matmul,
    "matmul_lm_head": _bench_matmul_lm_head, "attention": _bench_attention, "gelu": _bench_gelu,
    "residual": _bench_residual, "crossentropy": _bench_crossentropy, "adamw": _bench_adamw,
    # new kernels not called by the model yet (docs/kernels.md): timed so a GPU run measures them
    "attention_flash": _bench_attention_flash, "residual_layernorm": _bench_residual_layernorm,
    "attention_flash_v5": lambda c, s: _bench_attention_flash(c, s, "v5"),
    "attention_flash_v6": lambda c, s: _bench_attention_flash(c, s, "v6"),
}
# a CUDA version of an op, beside its default: no CPU version to time
CUDA_ONLY_OPS = ("attention_flash_v5", "attention_flash_v6")


# ------------------------------------------------------------------ the work each op must do
# What one forward + backward of each op case above must move and compute, to turn its time into a rate.
# Bytes: every input read once and every output written once (float32 and int32: 4 bytes), the least any
# kernel can move; the gradients are accumulated (+=, as every backward here is), so a gradient is read and
# written. Scratch a kernel keeps for itself is not counted (that is the kernel's cost, not the op's).
# FLOPs: the matmul's and attention's multiply-adds exactly (2 flops each; attention's causal half only,
# the softmax left out); the other ops are bound by memory, and their flops are the arithmetic per element
# of their formula, counted by hand (tanh and exp as one), so treat those as "about".
F32 = 4


def _work_encoder(s, device):
    B, T, C = s["B"], s["T"], s["C"]
    N = B * T
    # fwd: idx, N rows of wte, T rows of wpe -> out; bwd: dout, idx -> dwte rows and dwpe (+=)
    return F32 * ((N + N * C + T * C + N * C) + (N * C + N + 2 * N * C + 2 * T * C)), 3 * N * C


def _layernorm_bytes(N, C):
    # fwd: x, w, b -> out, mean, rstd; bwd: dout, x, w, mean, rstd -> dx, dw, db (+=)
    return F32 * ((N * C + 2 * C + N * C + 2 * N) + (2 * N * C + C + 2 * N + 2 * N * C + 4 * C))


def _work_layernorm(s, device):
    N, C = s["B"] * s["T"], s["C"]
    return _layernorm_bytes(N, C), (8 + 14) * N * C   # ~8 flops per element forward, ~14 backward


def _matmul_work(N, C, OC):
    # fwd: inp (N, C), weight (OC, C), bias -> out (N, OC); bwd: dout, inp, weight -> dinp, dweight, dbias (+=)
    moved = (N * C + OC * C + OC + N * OC) + (N * OC + N * C + OC * C + 2 * N * C + 2 * OC * C + 2 * OC)
    return F32 * moved, matmul_flops(N, C, OC) + 2 * N * OC   # + the bias add and the dbias sum


def _work_matmul(s, device):
    return _matmul_work(s["B"] * s["T"], s["C"], 4 * s["C"])


def _work_matmul_lm_head(s, device):
    return _matmul_work(s["B"] * s["T"], s["C"], s["V"])


def _attention_flops(B, T, C):
    # per head and pair (t1 >= t2): q.k and att*v forward (2 * hs multiply-adds), their 4 gradients backward;
    # over the heads hs sums to C; T(T+1)/2 causal pairs
    return 2 * 6 * B * C * T * (T + 1) // 2


def _work_attention(s, device):
    B, T, C, NH = s["B"], s["T"], s["C"], s["NH"]
    N, A = B * T, B * NH * T * T
    # fwd: qkv -> out and att (B, NH, T, T); bwd: dout, qkv, att -> dqkv (+=)
    return F32 * ((3 * N * C + N * C + A) + (N * C + 3 * N * C + A + 6 * N * C)), _attention_flops(B, T, C)


def _work_attention_flash(s, device):
    B, T, C, NH = s["B"], s["T"], s["C"], s["NH"]
    N, L = B * T, B * NH * T
    # fwd: qkv -> out and lse (B, NH, T); bwd: dout, qkv, out, lse -> dqkv (+=)
    return (F32 * ((3 * N * C + N * C + L) + (N * C + 3 * N * C + N * C + L + 6 * N * C)),
            _attention_flops(B, T, C))


def _work_residual_layernorm(s, device):
    N, C = s["B"] * s["T"], s["C"]
    # fwd: a, b, w, bias -> residual, out, mean, rstd; bwd: dout, dresidual, residual, w, mean, rstd -> dinp,
    # dw, db (+=)
    moved = (2 * N * C + 2 * C + 2 * N * C + 2 * N) + (3 * N * C + C + 2 * N + 2 * N * C + 4 * C)
    return F32 * moved, (8 + 14 + 2) * N * C   # layernorm's, the add forward and the dresidual add backward


def _work_gelu(s, device):
    M = s["B"] * s["T"] * 4 * s["C"]
    # fwd: x -> out; bwd: x, dout -> dx (+=); ~9 flops per element forward, ~19 backward
    return F32 * (2 * M + 4 * M), (9 + 19) * M


def _work_residual(s, device):
    M = s["B"] * s["T"] * s["C"]
    # fwd: a, b -> out; bwd: dout -> da, db (+=)
    return F32 * (3 * M + 5 * M), 3 * M


def _work_crossentropy(s, device):
    N, V = s["B"] * s["T"], s["V"]
    # fwd: logits, targets -> losses, probs; bwd: dlosses, probs, targets -> dlogits (+=); ~5 flops per logit
    # forward (max, exp, sum, divide), 3 backward
    return F32 * ((2 * N * V + 2 * N) + (3 * N * V + 2 * N)), 8 * N * V


def _work_adamw(s, device):
    n = _adamw_n(device)
    # p, g, m, v read; p, m, v written; ~16 flops per parameter (both moments, bias corrections, the update)
    return F32 * 7 * n, 16 * n


OP_WORK = {
    "encoder": _work_encoder, "layernorm": _work_layernorm, "matmul": _work_matmul,
    "matmul_lm_head": _work_matmul_lm_head, "attention": _work_attention, "gelu": _work_gelu,
    "residual": _work_residual, "crossentropy": _work_crossentropy, "adamw": _work_adamw,
    "attention_flash": _work_attention_flash, "attention_flash_v5": _work_attention_flash,
    "attention_flash_v6": _work_attention_flash,
    "residual_layernorm": _work_residual_layernorm,
}


def op_work(name: str, shape: dict, device: str = "cuda") -> tuple[int, int]:
    """(bytes, flops) one forward + backward of op case `name` at `shape` must move and compute (see above)."""
    if name not in OP_WORK:
        raise ValueError(f"op_work: name {name!r} is not an op case; choose from {', '.join(OP_WORK)}")
    return OP_WORK[name](shape, device)


# The device's peaks, from NVIDIA's data sheets (not measured): fp32 TFLOP/s without tensor cores, and
# memory GB/s. Matched on the name numba reports (cuda.get_current_device().name): every word of a key must
# appear in it, first match wins, so the specific ones come first.
DEVICE_PEAKS = (
    (("H100", "PCIe"), {"name": "H100 PCIe", "tflops_fp32": 51.0, "gbytes_s": 2000.0}),
    (("H100", "NVL"), {"name": "H100 NVL", "tflops_fp32": 60.0, "gbytes_s": 3900.0}),
    (("H100",), {"name": "H100 SXM", "tflops_fp32": 67.0, "gbytes_s": 3350.0}),
    (("H200", "NVL"), {"name": "H200 NVL", "tflops_fp32": 60.0, "gbytes_s": 4800.0}),
    (("H200",), {"name": "H200 SXM", "tflops_fp32": 67.0, "gbytes_s": 4800.0}),
    (("A100", "80GB", "PCIe"), {"name": "A100 80GB PCIe", "tflops_fp32": 19.5, "gbytes_s": 1935.0}),
    (("A100", "80GB"), {"name": "A100 80GB SXM", "tflops_fp32": 19.5, "gbytes_s": 2039.0}),
    (("A100",), {"name": "A100 40GB", "tflops_fp32": 19.5, "gbytes_s": 1555.0}),
)


def gpu_name() -> str:
    """The name of the GPU numba runs on (e.g. "NVIDIA H100 80GB HBM3"), the name DEVICE_PEAKS is matched on."""
    from numba import cuda
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def device_peaks(device_name: str) -> dict | None:
    """The data-sheet peaks of the GPU named `device_name` ({name, tflops_fp32, gbytes_s, source}), None when the
    table does not know it."""
    words = device_name.upper()
    for keys, peaks in DEVICE_PEAKS:
        if all(k.upper() in words for k in keys):
            return {**peaks, "source": "NVIDIA data sheet (not measured)"}
    return None


def _sync_for(device):
    if device == "cuda":
        import torch
        from numba import cuda

        def sync():
            cuda.synchronize()
            torch.cuda.synchronize()
        return sync
    return lambda: None


def bench_ops(device="cpu", ops=None, reps=7, shapes=SHAPES, progress=print, matmul_version=None,
              rows: list | None = None) -> list[dict]:
    """One row per (op, shape): median ours and torch ms (forward+backward), ours/torch, and the rates ours
    reached: the op's minimum bytes and flops (op_work) over our time, gbytes_s and tflops.

    matmul_version: the matmul version "ours" runs (None: the default; "cublas" with `gpt2lab bench --matmul`).
    rows: the list each row is appended to the moment it is measured (gpt2lab bench passes its output's, so an
    interrupt keeps every finished row); returned."""
    import torch
    torch.set_flush_denormal(True)
    rows, sync = [] if rows is None else rows, _sync_for(device)
    for name in ops or OP_BENCHES:
        if name in CUDA_ONLY_OPS and device != "cuda":
            if ops:
                progress(f"  {name}: skipped (a CUDA version: it needs --device cuda)")
            continue
        for s in shapes if name != "adamw" else shapes[:1]:
            try:
                ours, theirs = OP_BENCHES[name](Case(device, matmul_version), s)
            except ImportError as e:
                progress(f"  {name}: skipped ({e})")
                break
            t_ours, t_torch = side_by_side(ours, theirs, reps, sync)
            moved, flops = op_work(name, s, device)
            row = {"op": name, "shape": f"B={s['B']},T={s['T']}", "device": device, "ours_ms": t_ours * 1e3,
                   "torch_ms": t_torch * 1e3, "ratio": t_ours / t_torch, "bytes": moved, "flops": flops,
                   "gbytes_s": moved / t_ours / 1e9, "tflops": flops / t_ours / 1e12}
            rows.append(row)
            progress(f"  {name:18s} {row['shape']:10s} ours {row['ours_ms']:9.3f} ms  torch "
                     f"{row['torch_ms']:9.3f} ms  ratio {row['ratio']:.2f}  ours {row['gbytes_s']:7.1f} GB/s "
                     f"{row['tflops']:6.2f} TFLOP/s")
    return rows


# ------------------------------------------------------------------ the matmul version ladder
# Every matmul version, forward + backward, at GPT-2 124M's shapes: what each version of kernels/matmul.py
# buys, in achieved TFLOP/s and as a percentage of the fastest reference (cuBLAS on the GPU, the BLAS
# version on the CPU). N = B*T = 4 * 1024 rows on the GPU; on the CPU one small shape, since "loops" is the
# readable version, ~15x slower than "blas".
LADDER_SHAPES = {
    "cuda": ({"name": "c_attn", "N": 4096, "C": 768, "OC": 2304},
             {"name": "attn.c_proj", "N": 4096, "C": 768, "OC": 768},
             {"name": "c_fc", "N": 4096, "C": 768, "OC": 3072},
             {"name": "mlp.c_proj", "N": 4096, "C": 3072, "OC": 768},
             {"name": "lm_head", "N": 4096, "C": 768, "OC": 50257}),
    "cpu": ({"name": "attn.c_proj", "N": 256, "C": 768, "OC": 768},),
}
LADDER_REFERENCE = {"cuda": "cublas", "cpu": "blas"}


def matmul_flops(N: int, C: int, OC: int) -> int:
    """Floating-point operations of one forward + backward: out, dinp and dweight are N*C*OC multiply-adds
    each (2 flops); bias and dbias are negligible."""
    return 6 * N * C * OC


def _ladder_parts(c: Case, s, version) -> dict:
    """Closures doing one product each of `version` at shape s, timed one at a time so a slow product shows:
    on cuda "forward" (bias except at the lm_head), "dinp", and "dweight" with dbias (kernels/matmul.py's
    backward_launchers, the entry point's own three launches); on the CPU "forward" and "backward" (its BLAS
    version does the backward's products in one call)."""
    from . import matmul as mm
    N, C, OC = s["N"], s["C"], s["OC"]
    rng = _rng()
    has_bias = s["name"] != "lm_head"
    x, w, dout = _f32(rng, 1, N, C), _f32(rng, OC, C, scale=0.02), _f32(rng, 1, N, OC)
    b = c.arr(_f32(rng, OC)) if has_bias else None
    out, dx, dw, db = c.zeros(1, N, OC), c.zeros(1, N, C), c.zeros(OC, C), c.zeros(OC) if has_bias else None
    dX, dW, dD = c.arr(x), c.arr(w), c.arr(dout)
    parts = {"forward": lambda: mm.matmul_forward(out, dX, dW, b, version=version)}
    if c.device != "cuda":
        parts["backward"] = lambda: mm.matmul_backward(dx, dw, db, dD, dX, dW, version=version)
        return parts
    dinp_fn, dweight_fn, dbias_fn = mm.backward_launchers(version)
    dx2, dD2, dX2 = dx.reshape(N, C), dD.reshape(N, OC), dX.reshape(N, C)

    def dweight():
        dweight_fn(dw, dD2, dX2)
        if has_bias:
            dbias_fn(db, dD2)
    parts.update(dinp=lambda: dinp_fn(dx2, dD2, dW), dweight=dweight)
    return parts


def bench_matmul_ladder(device="cpu", reps=3, shapes=None, versions=None, progress=print,
                        rows: list | None = None) -> list[dict]:
    """One row per (shape, version): median ms of forward + backward, the sum of its products' medians, each
    timed on its own ("parts": forward, dinp, dweight on cuda; forward, backward on the CPU), achieved TFLOP/s,
    and the version's speed as a percentage of the reference's (LADDER_REFERENCE: cuBLAS on cuda, "blas" on
    cpu); "default" marks the version the model runs. rows: as bench_ops' (a shape's rows are appended when all
    its versions are timed)."""
    from . import matmul as mm
    from ._validate import default_version
    versions = versions or (mm.CUDA_VERSIONS if device == "cuda" else mm.CPU_VERSIONS)
    # the default the model runs here (in the simulator v5)
    reference = LADDER_REFERENCE[device]
    default = default_version("matmul_forward", device == "cuda", mm.DEFAULT_VERSION)
    sync, rows = _sync_for(device), [] if rows is None else rows
    for s in shapes or LADDER_SHAPES[device]:
        parts = {v: {name: median_time(fn, reps, sync) for name, fn in _ladder_parts(Case(device), s, v).items()}
                 for v in versions}
        seconds = {v: sum(p.values()) for v, p in parts.items()}
        for v, t in seconds.items():
            pct = 100 * seconds[reference] / t if reference in seconds else None
            rows.append({"shape": s["name"], "N": s["N"], "C": s["C"], "OC": s["OC"], "device": device,
                         "version": v, "ms": t * 1e3, "tflops": matmul_flops(s["N"], s["C"], s["OC"]) / t / 1e12,
                         "parts": {name: p * 1e3 for name, p in parts[v].items()},
                         "pct_of_reference": pct, "reference": reference, "default": v == default})
            progress(f"  {s['name']:11s} {v:7s} {t * 1e3:9.3f} ms  {rows[-1]['tflops']:7.3f} TFLOP/s"
                     + (f"  {pct:5.1f}% of {reference}" if pct is not None else "")
                     + ("  (default)" if v == default else "")
                     + "  (" + ", ".join(f"{name} {p * 1e3:.3f}" for name, p in parts[v].items()) + " ms)")
    return rows
