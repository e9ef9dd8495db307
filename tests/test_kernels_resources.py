"""Every CUDA kernel launches on an H100 at its largest block (kernels/resources.py): ptxas's registers and
shared memory against compute capability 9.0's limits, checked here so a GPU run does not find it first."""
import importlib
import json
import os
import textwrap

import pytest

from kernel_ops import IMPLEMENTED
from ptx_cache import ptx_of
from simulated import run_in_simulator

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
needs_real_numba = pytest.mark.skipif(SIMULATED, reason="PTX needs the real numba.cuda, not the simulator")


def _ptxas():
    from gpt2lab.kernels.resources import find_ptxas
    return find_ptxas()


needs_ptxas = pytest.mark.skipif(SIMULATED or _ptxas() is None,
                                 reason="needs ptxas (the CUDA toolkit's, on PATH or /usr/local/cuda*/bin) and "
                                        "the real numba.cuda (not NUMBA_ENABLE_CUDASIM=1)")
BUFFERS = "gpt2.buffers"  # the model's own helper kernels (step scalars, fill, scale), beside the ops'


def listed_kernels(where: str):
    """(kernel, signature) of gpt2lab.kernels.<op>'s CUDA_KERNELS, or gpt2lab.gpt2.buffers's."""
    name = f"gpt2lab.{where}" if where == BUFFERS else f"gpt2lab.kernels.{where}"
    return importlib.import_module(name).CUDA_KERNELS


def launch_table() -> dict:
    """kernel -> its largest Launch: kernels.resources's for the ops, and the buffers' (from the constants
    gpt2/buffers.py launches them with; kernels/ may not import gpt2/)."""
    from gpt2lab.gpt2 import buffers
    from gpt2lab.kernels._cuda import GRID_STRIDE_BLOCK
    from gpt2lab.kernels.resources import Launch, largest_blocks
    table = {k: Launch(GRID_STRIDE_BLOCK, "buffers._launch") for k, _ in buffers.CUDA_KERNELS}
    table[buffers.step_scalars_kernel] = Launch(buffers.SCALAR_BLOCK, "buffers.SCALAR_BLOCK")
    return {**largest_blocks(), **table}


@needs_ptxas
@pytest.mark.parametrize("where", [*IMPLEMENTED, BUFFERS])
def test_every_kernel_launches_on_an_h100(where):
    from gpt2lab.kernels.resources import kernel_row
    table = launch_table()
    rows = [kernel_row(k, sig, table[k], ptx=ptx_of(k, sig)) for k, sig in listed_kernels(where)]
    refused = {r.name: r.problems for r in rows if r.problems}
    assert not refused, f"{where}: would not launch on an H100 (sm_90): {refused}"


@needs_real_numba
def test_the_launch_table_lists_exactly_the_listed_kernels():
    """A new kernel needs its largest launch written down (kernels.resources.largest_blocks), a removed one
    leaves no line behind."""
    listed = {k for where in [*IMPLEMENTED, BUFFERS] for k, _ in listed_kernels(where)}
    table = set(launch_table())
    assert not listed - table, f"no largest launch for {sorted(k.__name__ for k in listed - table)}"
    assert not table - listed, f"not in any CUDA_KERNELS: {sorted(k.__name__ for k in table - listed)}"


# ---------------------------------------------------------------- the table against real launches
# The launches themselves, recorded in numba's simulator with every kernel's body skipped (only the host side
# runs: ~5 s): the model at GPT-2's width (C = 768, where layernorm.block_threads reaches its cap), default and
# fused paths; the verification harness's shapes of every op and version; one split matmul v4 product.
# `Kernel.launchers` holds every (grid, block) a kernel was launched with. The simulator picks smaller blocks
# for fused_classifier and the buffers' kernels (32 threads), so this bounds the table from below; the table
# (read from the launchers' constants) stays the source.
RECORD = textwrap.dedent("""
    import gc, json, math, numpy as np
    from numba import config, cuda
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.kernels import _cuda, matmul
    _cuda.skip_kernel_bodies()   # keep the configuration, run nothing
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_model import KernelGPT2
    from gpt2lab.kernels.check import verify
    for fused in (False, True):
        model = KernelGPT2(GPTConfig(block_size=4, vocab_size=64, n_layer=1, n_head=12, n_embd=768),
                           device="cudasim", seed=0, fused=fused)
        model.forward(np.array([[3, 1, 7, 2]]), np.array([[1, 7, 10, 3]]))
        model.zero_grad(); model.backward(); model.adamw_step(lr=1e-2)
    verify(device="cudasim")
    dweight = matmul.backward_launchers("v4")[1]   # 1 tile of output, K = 2048: split into partial sums
    dweight(*(cuda.to_device(np.zeros(s, np.float32)) for s in ((64, 64), (2048, 64), (2048, 64))))
    largest = {}
    for k in gc.get_objects():   # every @cuda_kernel that was launched, listed in a CUDA_KERNELS or not
        if isinstance(k, _cuda.Kernel):
            for config in k.launchers:
                block, dynamic = config[1], (config[3] if len(config) > 3 else 0)
                threads = math.prod(block) if isinstance(block, tuple) else block
                t, d = largest.get(k.__name__, (0, 0))
                largest[k.__name__] = (max(t, threads), max(d, dynamic))
    print(json.dumps(largest))
""")
NEVER_LAUNCHED = {"scale_kernel", "sumsq_kernel"}  # buffers' helpers a training step does not call


@pytest.mark.skipif(SIMULATED, reason="starts its own simulator process: run it from the CPU test process")
@pytest.mark.cudasim
def test_no_launch_is_larger_than_the_table():
    recorded = json.loads(run_in_simulator("-c", RECORD, timeout=300).stdout.splitlines()[-1])
    table = {k.__name__: launch for k, launch in launch_table().items()}
    unlisted = set(recorded) - set(table)
    assert not unlisted, f"launched but in no CUDA_KERNELS (so never checked): {sorted(unlisted)}"
    larger = {name: (recorded[name], (t.threads, t.dynamic_smem), t.where) for name, t in table.items()
              if name in recorded and (recorded[name][0] > t.threads or recorded[name][1] > t.dynamic_smem)}
    assert not larger, f"launched with more (threads, dynamic smem) than the table says: {larger}"
    unseen = set(table) - set(recorded) - NEVER_LAUNCHED
    assert not unseen, f"never launched by the recording run, so the table is unchecked for: {sorted(unseen)}"


# ---------------------------------------------------------------- the check can fail
@needs_ptxas
def test_a_52_kb_shared_array_is_refused():
    """13,000 float32 of static shared memory (52,000 bytes > 48 KiB): ptxas says so, and so does the check."""
    from numba import cuda, float32

    from gpt2lab.kernels._cuda import kernel
    from gpt2lab.kernels.resources import launch_problems, ptxas_usage

    @kernel
    def oversized_kernel(out):
        buf = cuda.shared.array(13000, float32)
        buf[cuda.threadIdx.x] = out[cuda.threadIdx.x]
        cuda.syncthreads()
        out[cuda.threadIdx.x] = buf[12999 - cuda.threadIdx.x]

    usage = ptxas_usage(ptx_of(oversized_kernel, "void(float32[::1])"))
    assert usage.smem == 52000
    problems = launch_problems(usage, threads=32)
    assert any("52000 bytes static shared memory > 49152" in p for p in problems), problems


@needs_ptxas
def test_the_register_blocked_matmul_is_refused_past_its_launch_bound():
    """matmul v4 (128 registers, launch_bounds 256 threads): 512 threads break its bound, 1024 also the
    registers of an SM (128 x 1024 = 131072 > 65536)."""
    from gpt2lab.kernels import matmul
    from gpt2lab.kernels.resources import launch_problems, ptxas_usage
    kernel, sig = next((k, s) for k, s in matmul.CUDA_KERNELS if k is matmul.matmul_forward_kernel_v4)
    usage = ptxas_usage(ptx_of(kernel, sig))
    assert usage.max_threads == matmul.THREADS and launch_problems(usage, matmul.THREADS) == []
    assert launch_problems(usage, 512) == ["512 threads > its launch bound of 256"]
    assert any("registers > 65536" in p for p in launch_problems(usage, 1024))


@needs_ptxas
def test_matmul_v8_keeps_its_sums_in_registers():
    """v8 writes out its epilogue's rows so that every index into acc and part is a constant: ptxas then keeps
    all 128 sums in registers (no stack frame, no spills) where v7's rolled epilogue put them in a 512-byte stack."""
    from gpt2lab.kernels import matmul
    from gpt2lab.kernels.resources import ptxas_usage
    signature = dict(matmul.CUDA_KERNELS)
    for version, stack in (("v8", 0), ("v7", 512)):
        for kernel in matmul.BLOCKED_KERNELS[version].values():
            usage = ptxas_usage(ptx_of(kernel, signature[kernel]))
            assert (usage.stack, usage.spill_stores, usage.spill_loads) == (stack, 0, 0), (kernel.__name__, usage)
            assert usage.registers <= 255 and usage.max_threads == matmul.THREADS, (kernel.__name__, usage)


def test_registers_times_threads_at_the_edge():
    """64K registers an SM, allocated per warp in units of 256: 128 x 512 fits, one warp more does not; 65
    registers are allocated as 72, so 1024 threads of them do not fit where 64 do."""
    from gpt2lab.kernels.resources import Usage, launch_problems
    assert launch_problems(Usage(registers=128), 512) == []
    assert launch_problems(Usage(registers=128), 513) == ["128 registers x 513 threads = 69632 registers > 65536 "
                                                          "per block"]
    assert launch_problems(Usage(registers=64), 1024) == []
    assert launch_problems(Usage(registers=65), 1024) != []
    assert launch_problems(Usage(registers=16), 1025)[0] == "1025 threads > 1024 per block"
    assert launch_problems(Usage(registers=16, smem=40 * 1024), 32, dynamic_smem=190 * 1024) != []


def test_blocks_per_sm_names_what_limits_them():
    from gpt2lab.kernels.resources import Usage, blocks_per_sm
    assert blocks_per_sm(Usage(registers=32), 256) == (8, "threads")      # 2048 threads an SM
    assert blocks_per_sm(Usage(registers=128), 256) == (2, "registers")   # 32768 registers a block
    assert blocks_per_sm(Usage(registers=32, smem=32768), 32) == (6, "smem")  # 33 KiB of 228 (1 reserved)
    assert blocks_per_sm(Usage(registers=32), 32) == (32, "blocks")


def test_parse_ptxas_reads_registers_smem_stack_and_spills():
    from gpt2lab.kernels.resources import parse_ptxas
    text = ("ptxas info    : Compiling entry function '_Zk' for 'sm_90'\n"
            "ptxas info    : Function properties for _Zk\n"
            "    72 bytes stack frame, 72 bytes spill stores, 68 bytes spill loads\n"
            "ptxas info    : Used 128 registers, used 1 barriers, 72 bytes cumulative stack size, 16640 bytes smem\n")
    usage = parse_ptxas(text)
    assert (usage.registers, usage.smem, usage.stack, usage.spill_stores, usage.spill_loads) == (128, 16640, 72, 72, 68)
    assert parse_ptxas(text.replace(", 16640 bytes smem", "")).smem == 0
    fatal = "ptxas fatal   : Unsupported .version 9.5"
    assert parse_ptxas(fatal + "\n").errors == (fatal,)


def test_without_ptxas_the_command_says_so_in_one_line(monkeypatch, capsys):
    from gpt2lab.kernels import resources
    monkeypatch.setattr(resources, "find_ptxas", lambda: None)
    assert resources.main() == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and ("ptxas not found" in out or "simulator" in out), out
