"""The CUDA kernels, run in numba's CUDA simulator at tiny shapes.

Each check runs `gpt2lab verify --device cudasim` in its own process: the simulator is switched on by an
environment variable read when numba is imported, and must never leak into the CPU tests.
"""
import json
import os
import subprocess
import sys

import pytest

from kernel_ops import IMPLEMENTED


def run_verify(*args):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    return subprocess.run([sys.executable, "-m", "gpt2lab.kernels.verify_cli", "--device", "cudasim", *args],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.cudasim
@pytest.mark.parametrize("op", IMPLEMENTED)
def test_cudasim_matches_pytorch(op):
    proc = run_verify("--op", op, "--json")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    assert rows and all(r["device"] == "cudasim" for r in rows)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, json.dumps(bad, indent=1)
    assert proc.returncode == 0
