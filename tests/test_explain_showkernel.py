"""show_kernel (a lesson shows the code it traces) and verify_in_simulator (the harness in a child process)."""
import functools
import subprocess

import pytest

from gpt2lab.explain import simulator
from gpt2lab.explain.showkernel import kernel_source, show_kernel
from gpt2lab.kernels import gelu as G
from gpt2lab.kernels import layernorm as LNK


def test_show_kernel_gives_the_cuda_kernels_own_source_and_where_it_lives():
    src = show_kernel(LNK.layernorm_forward_kernel_v2)
    lines = open(LNK.__file__).read().splitlines()
    assert src.file == "kernels/layernorm.py"
    assert lines[src.line - 1].startswith("@cuda")              # the line number points at the real source
    assert "def layernorm_forward_kernel_v2(" in src.text and "block_sum" in src.text
    assert str(src).splitlines()[2].startswith(f"{src.line + 1}  def layernorm_forward_kernel_v2")
    assert "layernorm_forward_kernel_v2" in src._repr_html_()


def test_show_kernel_unwraps_njit_and_partial():
    njit_src = kernel_source(G.gelu_forward_loops)
    assert njit_src.text.startswith("@njit(") and "def gelu_forward_loops(out, inp):" in njit_src.text
    assert kernel_source(functools.partial(LNK.layernorm_forward, version="v2")).name == "layernorm_forward"


def test_show_kernel_says_when_there_is_no_source():
    with pytest.raises(TypeError, match="no Python source"):
        show_kernel(len)


def test_verify_in_simulator_runs_the_harness_on_the_simulator():
    sim = simulator.verify_in_simulator("gelu", version="v1")
    assert sim.ok and len(sim.rows) == 2 and {r["device"] for r in sim.rows} == {"cudasim"}
    assert "all OK" in repr(sim) and "ours/torch32" in repr(sim)


def test_verify_in_simulator_reports_a_fail_and_raises_on_a_crash(monkeypatch):
    with pytest.raises(ValueError, match="unknown op 'softmax'"):
        simulator.verify_in_simulator("softmax")
    with pytest.raises(RuntimeError, match="simulator run failed"):
        simulator.verify_in_simulator("gelu", version="no-such-version")
    row = {"op": "gelu", "version": "v1", "device": "cudasim", "direction": "fwd", "tensor": "out",
           "shape": "B=1", "max_abs": 1e-3, "torch32_abs": 1e-7, "ratio": 1e4, "ok": False, "seconds": 0.1,
           "teaching": False}
    failed = subprocess.CompletedProcess([], 1, stdout=__import__("json").dumps([row]), stderr="")
    monkeypatch.setattr(simulator, "run_simulated", lambda *a, **k: failed)   # exit 1: a row FAILed
    sim = simulator.verify_in_simulator("gelu")
    assert not sim.ok and "FAIL" in repr(sim)
