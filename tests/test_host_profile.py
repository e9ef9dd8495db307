"""gpt2/host_profile.py: where a training step's host time goes. In numba's simulator (own process) with the
kernels' bodies skipped, so only the host side runs; a function made slow on purpose must top the profile."""
import json
import textwrap

import pytest
from simulated import run_in_simulator

from gpt2lab.gpt2 import host_profile, host_profile_cli


def test_functions_are_grouped_by_where_they_live():
    group = host_profile.group_of
    assert group("/x/site-packages/gpt2lab/kernels/_cuda.py") == "gpt2lab"
    assert group("/x/build/__editable__.gpt2lab-0.1.0-py3-none-any/gpt2lab/gpt2/kernel_model.py") == "gpt2lab"
    assert group("/x/site-packages/numba_cuda/numba/cuda/dispatcher.py") == "numba"
    assert group("/x/site-packages/cuda/core/_launcher.py") == "cuda"
    assert group("~") == "builtin"
    assert group("/usr/lib/python3.11/functools.py") == "other"


@pytest.mark.parametrize("argv, needle", [
    (["--config", "huge"], "--config huge: unknown"),
    (["--steps", "0"], "--steps must be positive"),
    (["--config", "tiny", "--seq", "4096"], "longer than tiny's context"),
])
def test_a_bad_argument_is_one_line(argv, needle, capsys):
    assert host_profile_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


SLOWED = textwrap.dedent("""
    import json, time
    from gpt2lab.gpt2 import host_profile
    from gpt2lab.kernels import matmul
    real = matmul.gemm_v4
    def slow_gemm(*args, **kwargs):   # 2 ms of host time in every blocked-matmul launch
        time.sleep(0.002)
        return real(*args, **kwargs)
    matmul.gemm_v4 = slow_gemm
    print(json.dumps(host_profile.host_profile("tiny", B=2, T=8, steps=3, device="cudasim", top=5)))
""")


@pytest.mark.cudasim
def test_the_profile_finds_a_function_made_slow_on_purpose():
    report = json.loads(run_in_simulator("-c", SLOWED, timeout=300).stdout.splitlines()[-1])
    assert report["launches_per_step"] > 100 and report["prepared_launch"] is False   # the simulator's launch
    assert sum(report["groups_pct"].values()) == pytest.approx(100)
    top = report["top"][0]   # the sleep, called once per gemm_v4 call: ~50 a step, 2 ms each
    assert "sleep" in top["function"] and top["group"] == "builtin" and top["calls_per_step"] >= 20
    assert top["own_ms_per_step"] > 0.5 * 2 * top["calls_per_step"]
    assert report["host_ms_per_step"] > 0.5 * 2 * top["calls_per_step"]   # the unprofiled steps slept too
