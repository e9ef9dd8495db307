"""Run Python in numba's CUDA simulator, in a child process: the simulator is chosen by NUMBA_ENABLE_CUDASIM
when numba is first imported, so it must never reach the test process itself (which runs the CPU tests)."""
import json
import os
import subprocess
import sys


def run_in_simulator(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """`python ARGS...` (e.g. "-c", SCRIPT, ... or "-m", MODULE, ...) with the simulator on. check: assert it
    exited 0, showing the end of its stderr when not."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-4000:]
    return proc


def measure_in_simulator(probe, versions):
    """`python -m gpt2lab.kernels.accuracy --device cudasim` for one probe and versions: its JSON rows."""
    args = ["-m", "gpt2lab.kernels.accuracy", "--device", "cudasim", "--probe", probe, "--json"]
    for v in versions:
        args += ["--version", v]
    proc = run_in_simulator(*args, timeout=300)
    return json.loads(proc.stdout)
