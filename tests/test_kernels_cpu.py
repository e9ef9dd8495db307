"""Every kernel on the CPU against PyTorch autograd, at GPT-2 shapes and awkward ones."""
import numpy as np
import pytest

from gpt2lab.kernels.check import check_op, compare, format_table, get_spec
from kernel_ops import IMPLEMENTED


@pytest.mark.parametrize("op", IMPLEMENTED)
def test_cpu_matches_pytorch(op):
    spec = get_spec(op)
    rows = check_op(spec, "cpu")
    assert rows, f"{op}: nothing was checked"
    assert all(r.ok for r in rows), "\n" + format_table([r for r in rows if not r.ok])
    # forward and backward both covered (adamw has no backward: it is the step that consumes gradients),
    # and an awkward shape with T=1 among the shapes
    assert {r.direction for r in rows} == ({"fwd"} if op == "adamw" else {"fwd", "bwd"})
    assert any(s.get("T") == 1 for s in spec.shapes["cpu"]) or op == "adamw"


@pytest.mark.parametrize("op", IMPLEMENTED)
def test_harness_catches_a_wrong_kernel(op):
    """The check must be able to fail: perturb one output of each version by 0.1% and expect FAIL."""
    spec = get_spec(op)
    shape = spec.shapes["cpu"][-1]
    tensor = next(iter(spec.reference(spec.make_inputs(shape, np.random.default_rng(0)))))
    for vname, run in spec.versions["cpu"].items():
        def broken(inputs, run=run):
            out = run(inputs)
            out[tensor] = out[tensor] * np.float32(1.001)
            return out
        bad = type(spec)(**{**spec.__dict__, "versions": {"cpu": {vname: broken}}})
        rows = check_op(bad, "cpu", shapes=[shape])
        assert any(not r.ok and r.tensor == tensor for r in rows), format_table(rows)


def test_compare_rule():
    ref = np.array([1.0, -2.0, 0.0])
    assert compare(ref + 1e-7, ref, 1e-6, 1e-5)[2]
    assert not compare(ref + 1e-3, ref, 1e-6, 1e-5)[2]
    assert not compare(np.array([np.nan, 0, 0]), ref, 1, 1)[2]
    assert not compare(ref[:2], ref, 1, 1)[2]


def test_a_teaching_versions_failure_is_shown_but_expected():
    """A version listed in OpSpec.teaching is judged and shown like any other; its FAIL is labelled and does
    not fail the harness, while the same FAIL of any other version does."""
    from gpt2lab.kernels.check import passed
    spec = get_spec("gelu")
    run = spec.versions["cpu"]["vector"]

    def sloppy(inputs):
        out = run(inputs)
        out["out"] = out["out"] * np.float32(1.001)
        return out
    shapes = spec.shapes["cpu"][-1:]
    for teaching in ((), ("sloppy",)):
        bad = type(spec)(**{**spec.__dict__, "versions": {"cpu": {"sloppy": sloppy}}, "teaching": teaching})
        rows = check_op(bad, "cpu", shapes=shapes)
        table = format_table(rows)
        assert passed(rows) == bool(teaching) and not all(r.ok for r in rows)
        assert ("FAIL (teaching)" in table) == bool(teaching)
