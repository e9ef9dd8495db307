"""Will every CUDA kernel launch on an H100? ptxas's resource counts against the launches the launchers make.

PTX compiling is not enough: a kernel that compiles can still be refused at launch ("too many resources
requested for launch") or spill registers to slow local memory. A block is refused when

    threads > 1024 (or > the kernel's launch bound, `.maxntid` in its PTX),
    registers a thread x threads > 65536 (the registers of one SM; allocated per warp, 256 at a time),
    static shared memory > 48 KiB (ptxas refuses to assemble it), or static + dynamic > 227 KiB,

the limits of compute capability 9.0 (sm_90, H100) in the CUDA C++ Programming Guide's table of technical
specifications per compute capability; the per-warp allocation unit and the 1 KiB of shared memory the
system reserves per block are those of NVIDIA's occupancy calculator for 9.0.

Where the numbers come from, without a GPU:
  * registers, static shared memory, stack frame and spills: `ptxas -v --gpu-name sm_90` (CUDA's assembler) on
    the PTX of `_cuda.compile_ptx`, the PTX a GPU's driver would assemble. The driver's own assembler may
    count a few registers differently; "ptxas 13.0, sm_90, not a GPU".
  * the largest block each kernel is launched with: `LARGEST_BLOCK` below, read from the launchers and built
    from the very constants they use (attention.BLOCK, layernorm.BLOCK, matmul.THREADS_X ...). That is the
    honest source: the only shape-dependent block, layernorm's `block_threads(C)`, is capped by
    layernorm.BLOCK, so the cap is the largest launch at any shape (GPT-2's C = 768 reaches it; a recorded
    run at a small config would not). A simulator run would also understate: numba's simulator runs every
    thread in Python, and the launchers pick smaller blocks there (fused_classifier: 32 threads, not BLOCK).
    No kernel uses dynamic shared memory (no launch passes a third configuration value), so it is 0.
    tests/test_kernels_resources.py checks the table against real launches: in the simulator, with every
    kernel's body skipped (the host side alone, seconds), the model at GPT-2's width (default and fused), the
    verification harness's shapes of every op and version, and a split matmul v4; no recorded launch may be
    larger than the table, and every listed kernel must be launched.

`python -m gpt2lab.kernels.resources` prints the table (docs/figures.md keeps one);
tests/test_kernels_resources.py asserts every listed kernel fits, and that an oversized one does not.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import importlib
import os
import re
import shutil
import subprocess
import tempfile

from ._cuda import ceil_div

KIB = 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    """One GPU architecture's launch limits (see the module docstring)."""
    arch: str
    threads_per_block: int = 1024
    registers_per_sm: int = 64 * KIB          # 32-bit registers; also the most one block may use
    register_unit: int = 256                  # registers are allocated per warp, in units of this many
    static_smem_per_block: int = 48 * KIB
    smem_per_block: int = 227 * KIB           # static + dynamic (the dynamic part needs an opt-in)
    smem_per_sm: int = 228 * KIB
    smem_reserved_per_block: int = 1 * KIB    # the system's share of every block's shared memory
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32
    warp: int = 32


H100 = Limits(arch="sm_90")


@dataclasses.dataclass(frozen=True)
class Usage:
    """What ptxas reports for one kernel: registers a thread, bytes of static shared memory, bytes of stack
    frame a thread (local memory: local arrays and spills), spill stores and loads (bytes), its launch bound
    (PTX .maxntid, threads; None when it has none) and any error ptxas gave."""
    registers: int
    smem: int = 0
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    max_threads: int | None = None
    errors: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Launch:
    """A kernel's largest block: threads, dynamic shared memory (bytes), and where the launcher sets it."""
    threads: int
    where: str
    dynamic_smem: int = 0


# ---------------------------------------------------------------- ptxas
def find_ptxas() -> str | None:
    """ptxas on PATH, else the newest /usr/local/cuda*/bin/ptxas; None when there is none."""
    found = shutil.which("ptxas")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/ptxas"))
    return candidates[-1] if candidates else None


@functools.cache
def ptx_version_supported(ptxas: str) -> str:
    """The newest PTX ISA version `ptxas` assembles (e.g. "9.0"), read from its answer to a far newer one."""
    probe = ".version 99.0\n.target sm_90\n.address_size 64\n"
    out = _run_ptxas(ptxas, probe, ["--gpu-name", "sm_90"])
    found = re.search(r"current version is '([\d.]+)'", out)
    if not found:
        raise RuntimeError(f"ptxas: cannot tell which PTX version {ptxas} supports: {out.strip()[:200]}")
    return found.group(1)


def _run_ptxas(ptxas: str, ptx: str, args: list[str]) -> str:
    """ptxas's output (stdout and stderr) for `ptx`, whatever its exit status."""
    with tempfile.TemporaryDirectory(prefix="gpt2lab-ptxas-") as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, *args, path, "-o", os.devnull], capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def ptxas_usage(ptx: str, ptxas: str | None = None, limits: Limits = H100) -> Usage:
    """ptxas -v's Usage of the one kernel (.entry) in `ptx`.

    numba's NVVM may write a newer `.version` line than this ptxas reads (NVVM 13.x writes 9.5, ptxas 13.0
    reads up to 9.0); the line is lowered to what ptxas reads (our kernels use no newer PTX instruction:
    ptxas would reject the PTX, which the result's errors then say).
    """
    ptxas = ptxas or find_ptxas()
    if ptxas is None:
        raise FileNotFoundError("ptxas not found (on PATH or /usr/local/cuda*/bin): it comes with the CUDA toolkit")
    ptx = re.sub(r"^\.version [\d.]+", f".version {ptx_version_supported(ptxas)}", ptx, count=1, flags=re.M)
    usage = parse_ptxas(_run_ptxas(ptxas, ptx, ["-v", "--gpu-name", limits.arch]))
    bound = re.search(r"^\.maxntid (\d+), (\d+), (\d+)", ptx, flags=re.M)
    if bound:
        x, y, z = map(int, bound.groups())
        usage = dataclasses.replace(usage, max_threads=x * y * z)
    return usage


def parse_ptxas(text: str) -> Usage:
    """The Usage in ptxas -v's output for one entry function (its "Used N registers" line and the
    "bytes stack frame" line before it; shared memory only when it has some)."""
    errors = tuple(line.strip() for line in text.splitlines() if re.search(r"\b(error|fatal)\b", line))
    used = re.search(r"Used (\d+) registers(.*)", text)
    if used is None:
        return Usage(registers=0, errors=errors or (f"no 'Used N registers' line in ptxas's output: {text[:200]}",))
    smem = re.search(r"(\d+) bytes smem", used.group(2))
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", text)
    stack, stores, loads = map(int, frame.groups()) if frame else (0, 0, 0)
    return Usage(registers=int(used.group(1)), smem=int(smem.group(1)) if smem else 0, stack=stack,
                 spill_stores=stores, spill_loads=loads, errors=errors)


# ---------------------------------------------------------------- the check
def registers_per_block(registers: int, threads: int, limits: Limits = H100) -> int:
    """Registers a block of `threads` takes: whole warps, each rounded up to the allocation unit."""
    warps = ceil_div(threads, limits.warp)
    per_warp = ceil_div(registers * limits.warp, limits.register_unit) * limits.register_unit
    return warps * per_warp


def launch_problems(usage: Usage, threads: int, dynamic_smem: int = 0, limits: Limits = H100) -> list[str]:
    """Why a block of `threads` (and `dynamic_smem` bytes) of a kernel with `usage` would not launch on
    `limits`'s GPU; [] when it would. Spills are not a refusal (see `spills`)."""
    problems = list(usage.errors)
    if threads > limits.threads_per_block:
        problems.append(f"{threads} threads > {limits.threads_per_block} per block")
    if usage.max_threads is not None and threads > usage.max_threads:
        problems.append(f"{threads} threads > its launch bound of {usage.max_threads}")
    regs = registers_per_block(usage.registers, threads, limits)
    if regs > limits.registers_per_sm:
        problems.append(f"{usage.registers} registers x {threads} threads = {regs} registers > "
                        f"{limits.registers_per_sm} per block")
    if usage.smem > limits.static_smem_per_block:
        problems.append(f"{usage.smem} bytes static shared memory > {limits.static_smem_per_block}")
    if usage.smem + dynamic_smem > limits.smem_per_block:
        problems.append(f"{usage.smem} + {dynamic_smem} bytes shared memory > {limits.smem_per_block}")
    return problems


def blocks_per_sm(usage: Usage, threads: int, dynamic_smem: int = 0, limits: Limits = H100) -> tuple[int, str]:
    """(resident blocks per SM, what limits them: "threads", "registers", "smem" or "blocks"), with the
    largest shared-memory carve-out."""
    smem = usage.smem + dynamic_smem + limits.smem_reserved_per_block
    warps = ceil_div(threads, limits.warp)
    by = {"blocks": limits.blocks_per_sm,
          "threads": limits.threads_per_sm // (warps * limits.warp),
          "registers": limits.registers_per_sm // max(1, registers_per_block(usage.registers, threads, limits)),
          "smem": limits.smem_per_sm // smem}
    limiter = min(by, key=by.get)
    return by[limiter], limiter


# ---------------------------------------------------------------- the launches
def largest_blocks() -> dict:
    """kernel -> its largest Launch, for every kernel in the ops' CUDA_KERNELS (see the module docstring)."""
    from . import adamw, attention, crossentropy, encoder, gelu, layernorm, matmul, residual, residual_layernorm
    from ._cuda import GRID_STRIDE_BLOCK
    ln_rows = Launch(layernorm.BLOCK, "layernorm.block_threads(C) <= layernorm.BLOCK")
    grid_stride = Launch(GRID_STRIDE_BLOCK, "_cuda.grid_stride")
    table = {
        encoder.encoder_forward_kernel: Launch(encoder.BLOCK, "encoder.BLOCK"),
        encoder.encoder_backward_kernel_v1: Launch(encoder.BLOCK, "encoder.BLOCK"),
        encoder.encoder_backward_kernel_v2: Launch(encoder.BLOCK, "encoder.BLOCK"),
        encoder.encoder_backward_dwte_kernel_v3: Launch(encoder.RUN_THREADS, "encoder.RUN_THREADS"),
        encoder.encoder_backward_dwpe_kernel_v3: Launch(encoder.BLOCK, "encoder.BLOCK"),
        layernorm.layernorm_forward_kernel_v1: Launch(layernorm.ROW_THREADS, "layernorm.ROW_THREADS"),
        layernorm.layernorm_backward_dinp_kernel_v1: Launch(layernorm.ROW_THREADS, "layernorm.ROW_THREADS"),
        layernorm.layernorm_backward_params_kernel_v1: Launch(layernorm.ROW_THREADS, "layernorm.ROW_THREADS"),
        layernorm.layernorm_forward_kernel_v2: ln_rows,
        layernorm.layernorm_backward_kernel_v2: ln_rows,
        layernorm.layernorm_backward_dinp_kernel_v4: ln_rows,
        layernorm.layernorm_forward_kernel_v3: Launch(layernorm.WARPS_PER_BLOCK * layernorm.WARP,
                                                      "layernorm.WARPS_PER_BLOCK * WARP"),
        layernorm.layernorm_backward_kernel_v3: Launch(layernorm.WARPS_PER_BLOCK * layernorm.WARP,
                                                       "layernorm.WARPS_PER_BLOCK * WARP"),
        layernorm.layernorm_backward_params_kernel_v4: Launch(layernorm.PARAM_COLS * layernorm.PARAM_LANES,
                                                              "layernorm.PARAM_COLS x PARAM_LANES"),
        **_matmul_blocks(matmul),
        **_attention_blocks(attention),
        crossentropy.crossentropy_forward_kernel_v1: Launch(128, "crossentropy._launch_forward: 128"),
        crossentropy.crossentropy_forward_kernel_v2: Launch(crossentropy.BLOCK, "crossentropy.BLOCK"),
        crossentropy.crossentropy_forward_kernel_v3: Launch(crossentropy.BLOCK, "crossentropy.BLOCK"),
        crossentropy.crossentropy_backward_kernel: grid_stride,
        crossentropy.fused_classifier_kernel: Launch(crossentropy.BLOCK, "crossentropy.BLOCK (32 in the simulator)"),
    }
    for mod in (adamw, gelu, residual):
        table.update({k: grid_stride for k, _ in mod.CUDA_KERNELS})
    table.update({k: ln_rows for k, _ in residual_layernorm.CUDA_KERNELS})
    return table


def _matmul_blocks(matmul) -> dict:
    tile = Launch(matmul.TILE * matmul.TILE, "matmul._grid_2d: TILE x TILE")
    table = {k: tile for k in (*matmul.FORWARD_KERNELS.values(), *(ks[0] for ks in matmul.BACKWARD_KERNELS.values()),
                               *(ks[1] for ks in matmul.BACKWARD_KERNELS.values()))}
    table.update({k: Launch(256, "matmul.backward_launchers: 256") for k in (
        matmul.matmul_backward_dbias_kernel, matmul.matmul_backward_dbias_kernel_v3)})
    table.update({k: Launch(matmul.THREADS_X * matmul.THREADS_Y, "matmul.gemm_v4: THREADS_X x THREADS_Y")
                  for kernels in matmul.BLOCKED_KERNELS.values() for k in kernels.values()})
    table[matmul.matmul_split_sum_kernel_v4] = Launch(256, "matmul.gemm_v4: 256")
    table[matmul.matmul_backward_dbias_kernel_v4] = Launch(matmul.BIAS_COLS * matmul.BIAS_LANES,
                                                           "matmul.BIAS_COLS x BIAS_LANES")
    return table


def _attention_blocks(attention) -> dict:
    tiled = (attention.attention_forward_kernel_v3, attention.attention_forward_flash_kernel,
             attention.attention_backward_flash_dkv_kernel, attention.attention_backward_flash_dq_kernel)
    table = {k: Launch(attention.BLOCK, "attention.BLOCK (_launch_rows)") for k, _ in attention.CUDA_KERNELS}
    table.update({k: Launch(attention.TILE, "attention.TILE") for k in tiled})
    table.update({k: Launch(attention.FLASH_THREADS, "attention.FLASH_THREADS")
                  for k in (*attention.flash_v5_kernels(attention.HS_MAX),
                            *attention.flash_v6_kernels(attention.HS_MAX))})
    return table


# ---------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Row:
    """One kernel's line of the table."""
    name: str
    usage: Usage
    launch: Launch
    problems: tuple[str, ...]
    blocks_per_sm: int
    limiter: str


def kernel_row(kernel, signature: str, launch: Launch, ptx: str | None = None, ptxas: str | None = None,
               limits: Limits = H100) -> Row:
    """The Row of one kernel at its largest launch; ptx: its PTX if already compiled (else compile_ptx's)."""
    from ._cuda import compile_ptx
    usage = ptxas_usage(ptx if ptx is not None else compile_ptx(kernel, signature), ptxas, limits)
    blocks, limiter = blocks_per_sm(usage, launch.threads, launch.dynamic_smem, limits)
    return Row(kernel.__name__, usage, launch, tuple(launch_problems(usage, launch.threads, launch.dynamic_smem,
                                                                     limits)), blocks, limiter)


def op_rows(op: str, ptxas: str | None = None) -> list[Row]:
    """A Row for every kernel of gpt2lab.kernels.<op>'s CUDA_KERNELS."""
    mod = importlib.import_module(f"{__package__}.{op}")
    table = largest_blocks()
    return [kernel_row(k, sig, table[k], ptxas=ptxas) for k, sig in mod.CUDA_KERNELS]


def spills(usage: Usage) -> str:
    """'' when the kernel keeps everything in registers; else its stack frame and spills, in bytes."""
    if not (usage.stack or usage.spill_stores or usage.spill_loads):
        return ""
    return f"stack {usage.stack}, spills {usage.spill_stores}/{usage.spill_loads}"


def format_table(rows: list[Row], limits: Limits = H100) -> str:
    """The rows as a markdown table (the one docs/figures.md keeps)."""
    lines = ["| kernel | registers | smem (B) | stack, spill st/ld (B) | threads | blocks/SM (limit) | "
             "occupancy | launches |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        warps = r.blocks_per_sm * ceil_div(r.launch.threads, limits.warp)
        occupancy = f"{100 * warps * limits.warp // limits.threads_per_sm}%"
        verdict = "yes" if not r.problems else "NO: " + "; ".join(r.problems)
        lines.append(f"| {r.name} | {r.usage.registers} | {r.usage.smem} | {spills(r.usage) or '-'} | "
                     f"{r.launch.threads} | {r.blocks_per_sm} ({r.limiter}) | {occupancy} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    """Print the table for every op; exit 0 when every kernel launches, 1 when one does not, 2 without ptxas."""
    from numba import config
    from .check import OPS
    if config.ENABLE_CUDASIM:
        print("resources: PTX needs the real numba.cuda, not the simulator (unset NUMBA_ENABLE_CUDASIM)")
        return 2
    ptxas = find_ptxas()
    if ptxas is None:
        print("resources: ptxas not found (on PATH or /usr/local/cuda*/bin): it comes with the CUDA toolkit")
        return 2
    rows = [row for op in OPS for row in op_rows(op, ptxas)]
    version = re.search(r"release ([\d.]+)", subprocess.run([ptxas, "--version"], capture_output=True,
                                                            text=True).stdout)
    print(f"ptxas {version.group(1) if version else '?'} ({ptxas}), {H100.arch}, not a GPU\n")
    print(format_table(rows))
    bad = [r.name for r in rows if r.problems]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} kernels launch at their largest block"
          + (f"; NOT: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
