"""kernels/profile.py on a real model step, in numba's CUDA simulator (own process).

The first training step (loss_and_grads + optimizer_step; one step takes ~15 s in the simulator) of a micro
model on device "cudasim" inside `with profile()`: every launch of the step is in the profile under its kernel's name (calls sum to the
launch counter's difference), the shares add up to the step, and the result says its clock is the wall
clock (the simulator's events carry no time). A launch after the profile closed adds no mark.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

MICRO = dict(block_size=4, vocab_size=11, n_layer=1, n_head=2, n_embd=8)

SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    sys.setswitchinterval(1e-4)
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.gpt2.kernel_backend import NumbaBackend
    from numba import cuda
    from gpt2lab.kernels._cuda import launch_count, memset_zero
    from gpt2lab.kernels.profile import profile
    x = np.array([[3, 1, 7, 2], [0, 5, 9, 4]])
    y = np.array([[1, 7, 10, 3], [2, 2, 8, 6]])
    b = NumbaBackend(GPTConfig(**{micro}), seed=0, device="cudasim")
    n0 = launch_count()
    with profile() as prof:
        b.loss_and_grads(x, y); b.optimizer_step(1e-2)
    launches = launch_count() - n0
    marks = len(prof.marks)
    memset_zero(cuda.device_array(4, np.float32))   # a launch with no profile open: nothing may be added
    out = dict(prof.as_dict(), counted=launches, marks_after=len(prof.marks), marks=marks, table=prof.table(top=5))
    print(json.dumps(out))
""").format(micro=MICRO)


@pytest.fixture(scope="module")
def profiled():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.cudasim
def test_every_launch_of_the_step_is_in_the_profile_by_name(profiled):
    from gpt2lab.kernels.profile import IDLE, WALL
    assert profiled["clock"] == WALL
    rows = {r["kernel"]: r for r in profiled["rows"]}
    assert sum(r["calls"] for r in rows.values()) == profiled["counted"] == profiled["launches"] > 0
    # the step's kernels by their names: the encoder, a matmul, attention, AdamW and the gradient memsets
    names = set(rows)
    for want in ("encoder_forward", "attention", "adamw", "matmul", "memset_zero"):
        assert any(want in n for n in names), (want, sorted(names))
    assert IDLE in names and rows[IDLE]["calls"] == 0


@pytest.mark.cudasim
def test_the_shares_add_up_to_the_step(profiled):
    rows = profiled["rows"]
    assert profiled["step_ms"] > 0
    assert sum(r["ms"] for r in rows) == pytest.approx(profiled["step_ms"], rel=1e-6)
    assert sum(r["pct"] for r in rows) == pytest.approx(100.0, abs=1e-6)
    kernels = [r for r in rows[:-1]]
    assert [r["ms"] for r in kernels] == sorted((r["ms"] for r in kernels), reverse=True)
    assert "other (" in profiled["table"] and "wall clock" in profiled["table"].splitlines()[0]


@pytest.mark.cudasim
def test_a_closed_profile_records_nothing_more(profiled):
    assert profiled["marks_after"] == profiled["marks"] == profiled["counted"]
