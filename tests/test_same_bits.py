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


def test_a_version_is_the_same_as_itself(capsys):
    assert verify_cli.main(["--op", "matmul", "--version", "blas", "--same-as", "blas", *SMALL]) == 0
    table = capsys.readouterr().out
    assert "4 SAME, 0 DIFFERENT" in table and "DIFFERENT\n" not in table


@pytest.mark.parametrize("argv, needle", [
    (["--op", "matmul", "--same-as", "v7"], "give --version too"),
    (["--op", "matmul", "--version", "blas", "--same-as", "v9"], "matmul has no cpu version 'v9'"),
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
