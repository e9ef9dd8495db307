"""`gpt2lab verify --version V --same-as W` (kernels/same_bits.py): one version against another, bit for bit.

On the CPU: matmul's "blas" against its "loops" (the same products, summed in other orders: close, not the same
bits) must come out DIFFERENT, and a version against itself SAME. v8 against v7 in the simulator is in
tests/test_matmul_v4_cublas.py; on a GPU, tools/gpu_candidates.sh runs it.
"""
import json

import numpy as np
import pytest

from gpt2lab.kernels import same_bits, verify_cli

SMALL = ["--shape", '{"B": 3, "T": 1, "C": 37, "OC": 65}']


def test_other_sums_are_different_and_the_exit_says_so(capsys):
    assert verify_cli.main(["--op", "matmul", "--version", "blas", "--same-as", "loops", "--json", *SMALL]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["tensor"] for r in rows} == {"out", "dinp", "dweight", "dbias"}
    assert not any(r["same"] for r in rows) and all(0 < r["max_diff"] < 1e-5 for r in rows), rows


def test_two_runs_of_a_deterministic_version_are_the_same(capsys):
    assert verify_cli.main(["--op", "matmul", "--version", "blas", "--same-as", "blas", *SMALL]) == 0
    table = capsys.readouterr().out
    assert "4 SAME, 0 DIFFERENT" in table and "DIFFERENT\n" not in table


def test_without_op_every_op_with_both_versions_is_checked(capsys):
    """Only matmul has CPU versions named "blas" and "loops"; the others are not asked for them."""
    assert verify_cli.main(["--version", "blas", "--same-as", "loops", "--json"]) == 1
    assert {r["op"] for r in json.loads(capsys.readouterr().out)} == {"matmul"}


@pytest.mark.parametrize("argv, needle", [
    (["--op", "matmul", "--same-as", "v7"], "give --version too"),
    (["--op", "matmul", "--version", "blas", "--same-as", "v9"], "matmul has no cpu version 'v9'"),
    (["--version", "blas", "--same-as", "v9"], "no op has both cpu versions 'blas' and 'v9'"),
])
def test_a_wrong_request_is_one_line(argv, needle, capsys):
    assert verify_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_scratch_is_poisoned_before_each_version_on_a_gpu(monkeypatch):
    """An element the second version never writes must not show the first one's value: both runs start from
    poisoned scratch (on the CPU there is none to poison)."""
    from gpt2lab.kernels import _cuda
    calls = []
    monkeypatch.setattr(_cuda, "poison_scratch", lambda: calls.append("poison"))
    run = lambda inputs: calls.append("run") or {"out": np.zeros(2, np.float32)}  # noqa: E731
    same_bits._run_poisoned(run, {"x": np.ones(2)}, "cudasim")
    same_bits._run_poisoned(run, {"x": np.ones(2)}, "cpu")
    assert calls == ["poison", "run", "run"]


def test_a_shape_or_dtype_mismatch_is_different():
    """The comparison is of bytes and shapes: equal values in another dtype or shape are not the same bits."""
    same, diff = same_bits.compare(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    assert same is False and np.isnan(diff)
    assert same_bits.compare(np.zeros(4, np.float32), np.zeros(4, np.float64))[0] is False
    assert same_bits.compare(np.float32([1, -0.0]), np.float32([1, 0.0])) == (False, 0.0)   # -0 is not +0
    assert same_bits.compare(np.float32([1, 2]), np.float32([1, 2])) == (True, 0.0)
    assert same_bits.compare(None, np.float32([1, 2]))[0] is False   # a tensor the version did not return


def test_each_of_the_two_runs_starts_from_poisoned_scratch_and_runs_apart(monkeypatch):
    """same_bits poisons before each version's run, and runs twice even when the two names are the same."""
    from gpt2lab.kernels import _cuda
    from gpt2lab.kernels.check import OpSpec
    calls = []
    monkeypatch.setattr(_cuda, "poison_scratch", lambda: calls.append("poison"))
    run = lambda name: lambda inputs: calls.append(name) or {"out": np.float32([len(calls)])}  # noqa: E731
    spec = OpSpec("fake", lambda shape, rng: {"x": np.ones(1)}, None, {"cuda": {"a": run("a"), "b": run("b")}},
                  {"cuda": [{"N": 1}]})
    monkeypatch.setattr(same_bits, "get_spec", lambda op: spec)
    rows = same_bits.same_bits("fake", "cuda", "a", "b")
    assert calls == ["poison", "b", "poison", "a"]
    assert [r.same for r in rows] == [False]   # each run returned a different number
    calls.clear()
    assert not same_bits.same_bits("fake", "cuda", "a", "a")[0].same   # two runs, not one compared with itself


def test_nan_on_both_sides_or_a_missing_tensor_is_different():
    """Poison a kernel left unwritten in both versions is NaN in both: not the same bits of a result."""
    nan = np.float32([1, np.nan])
    assert same_bits.compare(nan, nan.copy())[0] is False
    assert same_bits.compare(np.float32([1]), None)[0] is False


def test_the_simulator_reexec_keeps_same_as(monkeypatch):
    import argparse
    seen = {}
    monkeypatch.setattr(verify_cli.os, "execve", lambda exe, argv, env: seen.update(argv=argv, env=env))
    args = argparse.Namespace(op=["matmul"], version="v8", json=False, shape=None, same_as="v7")
    verify_cli._reexec_with_simulator(args)
    argv = seen["argv"]
    assert argv[argv.index("--same-as") + 1] == "v7" and seen["env"]["NUMBA_ENABLE_CUDASIM"] == "1"


POISON = """
import numpy as np
from gpt2lab.kernels import _cuda
before = _cuda.scratch("t", (3,))
before.copy_to_device(np.zeros(3, np.float32))
_cuda.poison_scratch()
after = _cuda.scratch("u", (2,), np.int32)
print(np.isnan(before.copy_to_host()).all(), (after.copy_to_host() == -1).all())
"""


@pytest.mark.cudasim
def test_poison_fills_the_scratch_made_before_and_after_it():
    from simulated import run_in_simulator
    assert run_in_simulator("-c", POISON).stdout.split() == ["True", "True"]
