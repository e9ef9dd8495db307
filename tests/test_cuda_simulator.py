"""gpt2lab.kernels._cudasim.install: numba's CUDA simulator made fit for our kernels, only when asked.

Each check runs in its own process (NUMBA_ENABLE_CUDASIM=1 is read when numba is imported).
"""
import os
import subprocess
import textwrap

import pytest
from simulated import run_in_simulator

# Every thread of one block writes its id into a shared array, a barrier, thread 0 sums the array. The
# allocation is made slow (numpy.empty sleeps and fills with NaN), so that every thread reaches
# cuda.shared.array before the first allocation is stored: the widest possible race window. Unlocked,
# threads get private arrays and thread 0 sums its own id and NaNs.
SHARED_RACE = textwrap.dedent("""
    import sys
    import time
    import numpy as np
    from numba import config, cuda, float32
    assert config.ENABLE_CUDASIM
    import gpt2lab.kernels.layernorm  # noqa: F401  (importing the kernels patches nothing)
    if sys.argv[1:] == ["install"]:
        from gpt2lab.kernels._cudasim import install
        install()

    real_empty = np.empty
    def slow_empty(shape, dtype=float, *args, **kwargs):
        time.sleep(0.25)   # long enough for the next thread to start on a loaded machine (0.02 once was not)
        out = real_empty(shape, dtype, *args, **kwargs)
        out.fill(np.nan)
        return out
    np.empty = slow_empty

    @cuda.jit
    def block_sum(out):
        scratch = cuda.shared.array(48, float32)
        tid = cuda.threadIdx.x
        scratch[tid] = tid
        cuda.syncthreads()
        if tid == 0:
            total = float32(0.0)
            for i in range(48):
                total += scratch[i]
            out[cuda.blockIdx.x] = total

    out = np.zeros(3, np.float32)
    block_sum[3, 48](out)
    print(out.tolist())
    assert out.tolist() == [sum(range(48))] * 3, out
""")

SHUFFLES = textwrap.dedent("""
    import numpy as np
    from numba import cuda, float32, uint32
    from gpt2lab.kernels._cudasim import install
    install()

    @cuda.jit
    def shuffles(out):
        lane = cuda.threadIdx.x
        v = float32(lane)
        out[0, lane] = cuda.shfl_down_sync(uint32(0xFFFFFFFF), v, 1)
        out[1, lane] = cuda.shfl_xor_sync(uint32(0xFFFFFFFF), v, 3)
        out[2, lane] = cuda.shfl_sync(uint32(0xFFFFFFFF), v, 5)

    out = np.zeros((3, 32), np.float32)
    shuffles[1, 32](out)
    lanes = np.arange(32)
    np.testing.assert_array_equal(out[0], np.where(lanes + 1 < 32, lanes + 1, lanes))  # the last lane keeps its own
    np.testing.assert_array_equal(out[1], lanes ^ 3)
    np.testing.assert_array_equal(out[2], np.full(32, 5))
""")

BLOCK_REDUCTIONS = textwrap.dedent("""
    import numpy as np
    from numba import cuda, float32
    from gpt2lab.kernels._cuda import block_max, block_sum
    from gpt2lab.kernels._cudasim import install
    install()

    @cuda.jit
    def reduce(out, x):
        scratch = cuda.shared.array(64, float32)
        v = x[cuda.blockIdx.x, cuda.threadIdx.x]
        s = block_sum(scratch, v)
        m = block_max(scratch, v)   # right after: scratch is reused, so block_sum's last barrier matters
        s2 = block_sum(scratch, v * v)
        out[cuda.blockIdx.x, cuda.threadIdx.x, 0] = s
        out[cuda.blockIdx.x, cuda.threadIdx.x, 1] = m
        out[cuda.blockIdx.x, cuda.threadIdx.x, 2] = s2

    x = np.random.default_rng(0).integers(-50, 50, (3, 32)).astype(np.float32)  # exact sums in float32
    out = np.zeros((3, 32, 3), np.float32)
    reduce[3, 32](out, x)
    for b in range(3):  # every thread of every block got its block's totals
        np.testing.assert_array_equal(out[b, :, 0], x[b].sum())
        np.testing.assert_array_equal(out[b, :, 1], x[b].max())
        np.testing.assert_array_equal(out[b, :, 2], (x[b] * x[b]).sum())
""")


def _run_simulated(script: str, *args: str) -> subprocess.CompletedProcess:
    return run_in_simulator("-c", script, *args, timeout=300, check=False)


@pytest.mark.cudasim
def test_every_thread_of_a_block_gets_the_same_shared_array():
    proc = _run_simulated(SHARED_RACE, "install")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


@pytest.mark.cudasim
def test_without_install_the_race_shows():
    """The race test can fail: numba's own simulator (nothing installed; importing our kernels patches
    nothing) hands threads private "shared" arrays in the slowed-down allocation."""
    proc = _run_simulated(SHARED_RACE)
    assert proc.returncode != 0 and "AssertionError" in proc.stderr, proc.stdout + proc.stderr[-3000:]


@pytest.mark.cudasim
def test_warp_shuffles_read_the_source_lane():
    proc = _run_simulated(SHUFFLES)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


@pytest.mark.cudasim
def test_block_reductions_give_every_thread_its_blocks_total():
    proc = _run_simulated(BLOCK_REDUCTIONS)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


# install()'s blocks (_cudasim._run_block) keep numba's barrier rules: threads that return early do not hold
# it shut, every barrier call orders all running threads (each round reads what every thread wrote before it),
# and a thread that raises is named in the launch's error, the others stopped at their barrier instead of
# waiting for it. Run twice: with install(), and with numba's own polling manager (the same rules).
BARRIER_RULES = textwrap.dedent("""
    import sys
    import numpy as np
    from numba import cuda, float32
    if sys.argv[1:] == ["install"]:
        from gpt2lab.kernels._cudasim import install
        install()

    @cuda.jit
    def rounds(out, n_rounds):
        # every round: each thread writes its value, a barrier, reads its left neighbour's, a barrier.
        # Threads 40.. return at once (a block's tail past the data), so they never reach a barrier.
        buf = cuda.shared.array(64, float32)
        tid = cuda.threadIdx.x
        if tid >= 40:
            return
        v = float32(tid)
        for r in range(n_rounds):
            buf[tid] = v
            cuda.syncthreads()
            v = buf[(tid + 39) % 40]
            cuda.syncthreads()
        out[cuda.blockIdx.x, tid] = v

    out = np.zeros((2, 40), np.float32)
    rounds[2, 64](out, 5)
    np.testing.assert_array_equal(out, np.tile((np.arange(40) - 5) % 40, (2, 1)))   # 5 shifts to the right

    @cuda.jit
    def one_fails(out):
        tid = cuda.threadIdx.x
        cuda.syncthreads()
        if tid == 7:
            raise ValueError("thread seven")
        cuda.syncthreads()
        out[tid] = 1

    try:
        one_fails[1, 16](np.zeros(16, np.float32))
    except ValueError as e:
        print("raised:", e)
    else:
        raise AssertionError("the failing thread's error was not raised")
""")


@pytest.mark.cudasim
@pytest.mark.parametrize("installed", [True, False], ids=["install", "numba"])
def test_barriers_keep_numbas_rules(installed):
    proc = _run_simulated(BARRIER_RULES, *(["install"] if installed else []))
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "raised: tid=[7, 0, 0] ctaid=[0, 0, 0]: thread seven" in proc.stdout, proc.stdout


# install() runs a block's threads as greenlets in the launching OS thread, switched at barriers and atomics: no OS
# thread a CUDA thread (numba starts one each, which made simulated steps 2-3x slower; docs/figures.md). One daemon
# thread beside them watches for a thread that never hands back.
ONE_OS_THREAD = textwrap.dedent("""
    import sys
    import threading
    import numpy as np
    from numba import cuda
    if sys.argv[1:] == ["install"]:
        from gpt2lab.kernels._cudasim import install
        install()
    seen = set()

    @cuda.jit
    def where(out):
        seen.add((threading.get_ident(), threading.active_count()))
        cuda.syncthreads()
        out[cuda.blockIdx.x, cuda.threadIdx.x] = cuda.threadIdx.x

    out = np.zeros((2, 64), np.float32)
    where[2, 64](out)
    np.testing.assert_array_equal(out, np.tile(np.arange(64), (2, 1)))
    # every CUDA thread in this OS thread; beside it at most our simulator's one watchdog thread (_cudasim._Watchdog)
    assert {ident for ident, _ in seen} == {threading.get_ident()}, sorted(seen)[:3]
    assert max(count for _, count in seen) <= 2, sorted(seen)[:3]
""")


@pytest.mark.cudasim
@pytest.mark.parametrize("installed", [True, False], ids=["install", "numba"])
def test_a_blocks_threads_run_in_the_launching_os_thread(installed):
    proc = _run_simulated(ONE_OS_THREAD, *(["install"] if installed else []))
    if installed:
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    else:   # the check can fail: numba's own simulator runs each CUDA thread in an OS thread of its own
        assert proc.returncode != 0 and "AssertionError" in proc.stderr, proc.stdout + proc.stderr[-3000:]


# Two things a block of greenlets must still do. A launch that fails unwinds the block's other threads: one left
# suspended inside a device function kept that module's `cuda` bound to the failed launch's fake module, so the
# next launch saw its blockDim and gridDim (a review found it). And a thread spinning on a flag another thread
# sets atomically gets there (threads step aside after each atomic), as on a GPU and in numba's own simulator.
AFTER_A_FAILURE_AND_A_SPIN = textwrap.dedent("""
    import sys
    import numpy as np
    from numba import cuda
    if sys.argv[1:] == ["install"]:
        from gpt2lab.kernels._cudasim import install
        install()

    @cuda.jit(device=True)
    def load(x, i):
        cuda.syncthreads()
        return x[i]

    @cuda.jit
    def dims(out, x):
        tid = cuda.threadIdx.x
        v = load(x, tid)
        out[tid, 0] = cuda.blockDim.x
        out[tid, 1] = cuda.gridDim.x
        out[tid, 2] = v

    try:
        dims[3, 16](np.zeros((16, 3), np.float32), np.ones(8, np.float32))   # threads 8.. index past x
    except IndexError as e:
        print("raised:", e)
    out = np.zeros((4, 3), np.float32)
    dims[1, 4](out, np.full(4, 2, np.float32))
    np.testing.assert_array_equal(out, np.tile([4, 1, 2], (4, 1)))

    @cuda.jit
    def handoff(flag, out):
        tid = cuda.threadIdx.x
        if tid == 0:
            while cuda.atomic.add(flag, 0, 0) == 0:   # waits for thread 32, in another warp
                pass
            out[0] = 1
        elif tid == 32:
            cuda.atomic.exch(flag, 0, 1)

    out = np.zeros(1, np.int32)
    handoff[1, 64](np.zeros(1, np.int32), out)
    assert out[0] == 1
""")


@pytest.mark.cudasim
def test_a_failed_launch_leaves_nothing_behind_and_a_spin_on_an_atomic_ends():
    """(numba's own simulator fails the first half too: the threads of the failed launch run on after it raised.)"""
    proc = run_in_simulator("-c", AFTER_A_FAILURE_AND_A_SPIN, "install", timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "raised: tid=[8, 0, 0] ctaid=[0, 0, 0]" in proc.stdout, proc.stdout   # the first thread that failed


# A thread that waits in a loop for another thread's plain write never sees it here: threads switch only at
# barriers, after atomics and at their end. That used to be a silent hang of a learner's puzzle; now the
# simulator says so on stderr once a thread has run GPT2LAB_SIM_STALL_S seconds alone. The spin below gives up
# after a few seconds, so the script ends either way.
A_SPIN_ON_A_PLAIN_WRITE = textwrap.dedent("""
    import sys
    import numpy as np
    from numba import cuda
    if sys.argv[1:] == ["install"]:
        from gpt2lab.kernels._cudasim import install
        install()

    @cuda.jit
    def handoff(flag, out):
        tid = cuda.threadIdx.x
        if tid == 0:
            n = 0
            while flag[0] == 0 and n < 3_000_000:   # thread 1's write never comes while this one runs
                n += 1
            out[0] = flag[0]
        elif tid == 1:
            flag[0] = 1

    out = np.zeros(1, np.int32)
    handoff[1, 2](np.zeros(1, np.int32), out)
    print("saw the flag:", out[0])
""")


@pytest.mark.cudasim
@pytest.mark.parametrize("install", [True, False])
def test_a_spin_on_a_plain_write_is_reported(monkeypatch, install):
    monkeypatch.setenv("GPT2LAB_SIM_STALL_S", "0.5")
    proc = run_in_simulator("-c", A_SPIN_ON_A_PLAIN_WRITE, *(["install"] if install else []), timeout=120)
    if install:
        assert "saw the flag: 0" in proc.stdout, proc.stdout
        assert "thread tid=[0, 0, 0] ctaid=[0, 0, 0] has run 0.5 s while the other threads" in proc.stderr, \
            proc.stderr[-2000:]
    else:   # numba's own simulator, OS threads: thread 1 runs, the flag comes, and there is nothing to report
        assert "saw the flag: 1" in proc.stdout and "has run" not in proc.stderr, proc.stdout + proc.stderr[-2000:]


@pytest.mark.parametrize("text, want", [(None, 30.0), ("0.5", 0.5), ("abc", None), ("0", None), ("-2", None),
                                        ("nan", None), ("inf", None)])
def test_the_stall_limit_is_a_positive_number_of_seconds(text, want):
    from gpt2lab.kernels._cudasim import _stall_seconds
    if want is None:
        with pytest.raises(ValueError, match=f"GPT2LAB_SIM_STALL_S must be a positive number of seconds, got {text!r}"):
            _stall_seconds(text, 30.0)
    else:
        assert _stall_seconds(text, 30.0) == want


STUCK_FOREVER = A_SPIN_ON_A_PLAIN_WRITE.replace(" and n < 3_000_000", "").replace(
    "if sys.argv[1:] == [\"install\"]:", "if True:")


@pytest.mark.cudasim
def test_a_lesson_sees_a_stuck_thread_as_it_happens_and_a_timeout_as_one_error(tmp_path, monkeypatch, capfd):
    """explain.simulator.run_simulated (every puzzle, trace and verification of a lesson runs there): the
    simulator's report of a stuck thread reaches the lesson's stderr while the child still runs, and a child
    that never ends is stopped at the timeout with one RuntimeError that carries the report."""
    from gpt2lab.explain.simulator import run_simulated
    from gpt2lab.kernels._cudasim import STALL_PREFIX
    (tmp_path / "stuck_kernel.py").write_text(STUCK_FOREVER)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("GPT2LAB_SIM_STALL_S", "0.5")
    with pytest.raises(RuntimeError, match=r"puzzle stuck: the simulator run did not finish in 8 s") as e:
        run_simulated("stuck_kernel", timeout=8, what="puzzle stuck")
    assert f"{STALL_PREFIX}tid=[0, 0, 0]" in str(e.value)
    assert f"{STALL_PREFIX}tid=[0, 0, 0]" in capfd.readouterr().err   # relayed, not only in the error


def test_the_lessons_relay_knows_the_simulators_stall_line():
    from gpt2lab.kernels._cudasim import STALL_PREFIX, stall_message

    class Fake:   # stall_message reads only the indices
        threadIdx, blockIdx = (1, 0, 0), (2, 0, 0)
    assert stall_message(Fake(), 30).startswith(STALL_PREFIX)
