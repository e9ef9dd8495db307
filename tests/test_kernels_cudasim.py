"""The CUDA kernels, run in numba's CUDA simulator at tiny shapes.

Each check runs `gpt2lab verify --device cudasim` in its own process: the simulator is switched on by an
environment variable read when numba is imported, and must never leak into the CPU tests.
"""
import json

import pytest

from kernel_ops import IMPLEMENTED
from simulated import run_in_simulator


def run_verify(*args):
    return run_in_simulator("-m", "gpt2lab.kernels.verify_cli", "--device", "cudasim", *args, timeout=900,
                            check=False)   # exit 1 = a FAIL row, which the test shows itself


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
