"""numba's CUDA simulator from a lesson: one way to start it, and `verify_in_simulator(op)`.

The simulator runs every CUDA thread in Python, so a CUDA kernel can be run and checked on a laptop.
It is switched on by NUMBA_ENABLE_CUDASIM=1, read once, when numba is first imported; a lesson has already
imported numba for the CPU kernels, so every simulated run happens in a child process (`run_simulated`),
and the variable never reaches the notebook's own process. The traced kernels (cudatrace.py), the puzzles
(puzzles.py) and the verification below all start their child here.

    >>> sim = verify_in_simulator("layernorm")     # the verification harness, every CUDA version of the op
    >>> sim                                        # the table: ours err, torch32 err, the ratio, OK/FAIL
    >>> assert sim.ok
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


def run_simulated(module: str, *args: str, stdin: str | None = None, timeout: float = 300,
                  what: str | None = None, ok_codes=(0,)) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS...` with the CUDA simulator on (and numba's low-occupancy warnings off: every
    simulated grid is small). Raises RuntimeError with the child's last error lines when its exit status is
    not in `ok_codes`, or when it has not finished after `timeout` seconds (it is stopped), naming `what`
    (default: the module). The simulator's report of a stuck thread goes to stderr as it comes."""
    # the simulator's line about a thread that never hands back (_cudasim.stall_message): shown in the lesson as
    # soon as the child prints it, not only once the run ends (a spin that never ends never ends)
    from gpt2lab.kernels._cudasim import STALL_PREFIX
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS="0")
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    out, err = [], []

    def relay_stderr():
        for line in proc.stderr:
            err.append(line)
            if line.startswith(STALL_PREFIX):
                print(line, end="", file=sys.stderr, flush=True)

    readers = [threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=relay_stderr, daemon=True)]
    for r in readers:
        r.start()
    try:
        if stdin is not None:
            proc.stdin.write(stdin)
        proc.stdin.close()
        proc.wait(timeout=timeout)
    except BaseException as e:   # the timeout, or the learner's interrupt: the child must not run on
        proc.kill()
        proc.wait()
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
        for r in readers:
            r.join(5)
        raise RuntimeError(f"{what or module}: the simulator run did not finish in {timeout:g} s and was "
                           f"stopped:\n{''.join(err)[-3000:]}") from None
    for r in readers:
        r.join()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), "".join(err))
    if done.returncode not in ok_codes:
        raise RuntimeError(f"{what or module}: the simulator run failed:\n{done.stderr[-3000:]}")
    return done


def child_ready(prog: str, use: str) -> bool:
    """In a child started by run_simulated: True when the simulator is on; else one line on stderr saying to
    run it through `use`, and False."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        print(f"{prog}: run with NUMBA_ENABLE_CUDASIM=1 (use {use} from Python)", file=sys.stderr)
        return False
    return True


@dataclass
class SimulatorCheck:
    """What `verify_in_simulator` found: the verification rows (dicts, as `gpt2lab verify --json` prints them),
    whether every counted row passed (`ok`) and how long the simulator took."""
    op: str
    rows: list
    ok: bool
    seconds: float

    def table(self) -> str:
        from gpt2lab.kernels.check import Row, format_table
        return format_table([Row(**r) for r in self.rows])

    def __repr__(self) -> str:
        verdict = "all OK" if self.ok else "FAIL: a kernel disagrees with PyTorch beyond float32's own error"
        return f"{self.table()}\n{self.op} in the CUDA simulator: {verdict} ({self.seconds:.1f} s)"


def verify_in_simulator(op: str, version: str | None = None, timeout: float = 600) -> SimulatorCheck:
    """Run `gpt2lab verify --device cudasim --op OP [--version V]` in a child process and return its rows.

    The harness is the one `gpt2lab verify` and the tests use (kernels/check.py): each CUDA version of `op` on
    awkward shapes, against PyTorch in float64 and float32. A FAIL is not an error here: it comes back as
    `ok == False`, so a lesson can show the table and then assert.
    """
    from gpt2lab.kernels.check import OPS
    if op not in OPS:
        raise ValueError(f"verify_in_simulator: unknown op {op!r}; choose from {', '.join(OPS)}")
    args = ["--device", "cudasim", "--op", op, "--json", *(["--version", version] if version else [])]
    t0 = time.perf_counter()
    # exit 1 = some check failed, which the rows show; anything else is a crash
    proc = run_simulated("gpt2lab.kernels.verify_cli", *args, timeout=timeout, ok_codes=(0, 1),
                         what=f"verify_in_simulator({op!r})")
    return SimulatorCheck(op, json.loads(proc.stdout), proc.returncode == 0, time.perf_counter() - t0)


__all__ = ["run_simulated", "child_ready", "SimulatorCheck", "verify_in_simulator"]
