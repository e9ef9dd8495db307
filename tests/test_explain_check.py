"""explain.check.cmp: the one-line compare cell."""
import numpy as np
import torch

from gpt2lab.explain.check import cmp


def test_exact_match_prints_exact_and_ok(capsys):
    assert cmp("dx", np.arange(6, dtype=np.float32), torch.arange(6, dtype=torch.float32))
    line = capsys.readouterr().out
    assert "exact: True" in line and "close: True" in line and line.rstrip().endswith("OK")


def test_close_but_not_exact():
    a = np.ones(4, dtype=np.float32)
    assert cmp("dw", a + 1e-7, a, quiet=True)
    assert not np.array_equal(a + 1e-7, a)


def test_far_is_fail_and_reports_max_diff(capsys):
    assert not cmp("db", np.array([1.0, 2.0]), np.array([1.0, 2.5]))
    out = capsys.readouterr().out
    assert "max diff: 5.0e-01" in out and "FAIL" in out


def test_shape_mismatch_is_fail_not_broadcast(capsys):
    assert not cmp("dbias", np.zeros((1, 3)), np.zeros(3))
    assert "shape mismatch" in capsys.readouterr().out


def test_nan_is_never_close():
    assert not cmp("nan", np.array([np.nan]), np.array([0.0]), quiet=True)


def test_torch_tensor_with_grad_and_python_numbers():
    t = torch.tensor([1.5], requires_grad=True) * 2
    assert cmp("t", t, [3.0], quiet=True)
    assert cmp("scalar", 0.1 + 0.2, 0.3, quiet=True)


def test_tolerance_scales_with_the_reference_so_tiny_gradients_are_checked():
    ref = np.full(5, 3e-4)
    assert not cmp("tiny", ref * 1.1, ref, quiet=True)   # 10% off: a fixed atol of 1e-5 would pass this
    assert cmp("tiny", ref * (1 + 1e-6), ref, quiet=True)
    assert cmp("zeros", np.zeros(3), np.zeros(3), quiet=True)
    assert not cmp("zeros", np.full(3, 1e-3), np.zeros(3), quiet=True)
