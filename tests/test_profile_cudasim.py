"""kernels/profile.py on a real model step, in numba's CUDA simulator (own process).

gpt2/bench.py's profile_step_cuda (what `gpt2lab bench --device cuda --profile` runs) on a micro model on
device "cudasim", its first step profiled (warm=0: one step takes ~15 s in the simulator): every launch of
the step is in the profile under its kernel's name (calls sum to the launch counter's difference), the
shares add up to the step, the result says its clock is the wall clock (the simulator's events carry no
time), and the profile is closed afterwards.
"""
import json
import textwrap

import pytest
from simulated import run_in_simulator

MICRO = dict(block_size=4, vocab_size=11, n_layer=1, n_head=2, n_embd=8)

SCRIPT = textwrap.dedent("""
    import json, sys
    from numba import config
    assert config.ENABLE_CUDASIM, "the simulator must be on in this process"
    from gpt2lab.gpt2.bench import profile_step_cuda
    from gpt2lab.gpt2.config import GPTConfig
    from gpt2lab.kernels import _cuda
    from gpt2lab.kernels.profile import table
    out = profile_step_cuda(GPTConfig(**{micro}), B=2, T=4, warm=0, device="cudasim",
                            progress=lambda m: print(m, file=sys.stderr))
    out.update(closed=_cuda._PROFILER[0] is None, table=table(out, top=5))
    if "fused" in sys.argv:
        out["fused"] = profile_step_cuda(GPTConfig(**{micro}), B=2, T=4, warm=0, device="cudasim", fused=True,
                                         progress=lambda m: None)
    print(json.dumps(out))
""").format(micro=MICRO)


def _profile(*args):
    proc = run_in_simulator("-c", SCRIPT, *args)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def profiled():
    return _profile()


@pytest.mark.cudasim
def test_every_launch_of_the_step_is_in_the_profile_by_name(profiled):
    from gpt2lab.kernels.profile import IDLE, WALL
    assert profiled["clock"] == WALL
    rows = {r["kernel"]: r for r in profiled["rows"]}
    assert sum(r["calls"] for r in rows.values()) == profiled["launch_count"] == profiled["launches"] > 0
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
def test_the_profile_is_closed_after_the_step(profiled):
    assert profiled["closed"] and profiled["config"] == "custom" and profiled["wall_ms"] > 0


@pytest.mark.cudasim
@pytest.mark.slow   # a second simulated step (~10 s); test_host_path_cudasim counts the fused path's launches
def test_the_fused_path_profiles_its_own_kernels_in_fewer_launches():
    profiled = _profile("fused")
    fused = profiled["fused"]
    names = {r["kernel"] for r in fused["rows"]}
    for want in ("attention_forward_flash", "residual_layernorm", "fused_classifier", "adamw_flat"):
        assert any(want in n for n in names), (want, sorted(names))
    assert not any(n.startswith("attention_forward_kernel") for n in names)
    assert fused["fused"] and sum(r["calls"] for r in fused["rows"]) == fused["launch_count"] < profiled["launch_count"]
