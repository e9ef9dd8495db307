"""gpt2lab.explain.cudatrace: the traced simulator run is the real kernel (its outputs are layer norm), the
events say which thread touched what (v1: a thread walks its own row; v2: a block per row, a tree
reduction whose stride halves), the simulator never leaks into this process, and the diagrams draw."""
import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from gpt2lab.explain import cudatrace as CT  # noqa: E402

INP = np.random.default_rng(3).normal(0.5, 2.0, (2, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def v2():
    return CT.trace_layernorm("v2", INP, block=8)


@pytest.fixture(scope="module")
def v1():
    return CT.trace_layernorm("v1", INP, block=4)


def layernorm(x):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def test_the_simulator_stays_in_the_subprocess(v2):
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") != "1"
    from numba import config
    assert not config.ENABLE_CUDASIM


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_traced_run_computes_layernorm(name, request):
    t = request.getfixturevalue(name)
    out = t.outputs
    np.testing.assert_allclose(out["mean"], INP.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(out["out"], layernorm(INP) * out["weight"] + out["bias"], atol=1e-5)
    assert t.shapes["inp"] == (2, 16)
    assert f"layernorm_forward_kernel_{name}" in t.title() and "(N=2, C=16)" in t.title()


def test_v2_one_block_per_row_coalesced(v2):
    assert (v2.grid, v2.block) == (2, 8)
    reads = v2.select(array="inp", op="read")
    # every element is read by exactly one thread of the block owning its row, 3 times (mean, var, write)
    grid = CT.access_grid(v2, "inp")
    assert grid.shape == (16, 32)
    assert np.all(grid.sum(axis=0) == 3)
    for e in reads:
        row, ch = divmod(e.index, 16)
        assert e.block == row and ch % 8 == e.thread
    # at each thread's first step, threads 0..7 read neighbouring channels 0..7: a coalesced load
    order = CT.first_touch(v2, "inp")
    assert [int(np.flatnonzero(order[t] == 0)[0]) for t in range(8)] == list(range(8))
    writes = v2.select(array="out", op="write")
    assert sorted(e.index for e in writes) == list(range(32))
    assert [e.thread for e in v2.select(array="mean", op="write")] == [0, 0]   # thread 0 writes the cache


def test_v2_tree_reduction_steps(v2):
    steps = CT.reduction_steps(v2, block=0, reduction=0)
    assert [s.kind for s in steps] == ["store", "stride", "stride", "stride", "broadcast"]
    assert [s.stride for s in steps] == [0, 4, 2, 1, 0]
    assert [s.phase for s in steps] == [0, 1, 2, 3, 4]                # what the slider and the captions show
    assert [s.barrier for s in steps] == list(range(steps[0].barrier, steps[0].barrier + 5))
    assert CT.reduction_steps(v2, block=0, reduction=1)[0].phase == 0 < steps[-1].barrier
    assert steps[1].writes == [(t, t) for t in range(4)]
    assert sorted(steps[1].reads) == sorted([(t, t) for t in range(4)] + [(t, t + 4) for t in range(4)])
    assert steps[-1].reads == [(t, 0) for t in range(8)]
    partial = np.array([INP[0, t] + INP[0, t + 8] for t in range(8)])
    np.testing.assert_allclose(steps[0].scratch, partial, rtol=1e-5)
    np.testing.assert_allclose(steps[1].scratch[:4], partial[:4] + partial[4:], rtol=1e-5)
    np.testing.assert_allclose(steps[3].scratch[0], INP[0].sum(), rtol=1e-5)
    # the second reduction sums the squared deviations of the row; block 1 reduces row 1
    var_steps = CT.reduction_steps(v2, block=0, reduction=1)
    np.testing.assert_allclose(var_steps[-1].scratch[0], 16 * INP[0].var(), rtol=1e-4)
    np.testing.assert_allclose(CT.reduction_steps(v2, 1)[-1].scratch[0], INP[1].sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="2 reductions"):
        CT.reduction_steps(v2, 0, 2)
    assert "stride 4" in CT.step_caption(steps[1]) and "threads 0..3" in CT.step_caption(steps[1])


def test_v1_one_thread_per_row(v1):
    assert (v1.grid, v1.block) == (1, 4)
    threads = {e.thread for e in v1.events}
    assert threads == {0, 1}                                   # threads 2, 3 have no row: they return
    order = CT.first_touch(v1, "inp")
    np.testing.assert_array_equal(order[0, :16], np.arange(16))    # thread 0 walks row 0, element by element
    assert np.all(order[0, 16:] == -1) and np.all(order[1, :16] == -1)
    assert not v1.select(array="scratch")                      # no shared memory
    with pytest.raises(ValueError, match="0 reductions"):
        CT.reduction_steps(v1)


def test_diagrams(v1, v2):
    fig = CT.reduction_diagram(v2)
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes][1] == f"phase {CT.reduction_steps(v2)[1].phase}: stride 4"
    assert "layernorm_forward_kernel_v2[grid=2, block=8]" in fig._suptitle.get_text()
    from matplotlib.text import Annotation
    texts = fig.axes[1].texts
    assert sum(not isinstance(t, Annotation) for t in texts) == 0     # small panels: no values (they would not fit)
    assert sum(isinstance(t, Annotation) for t in texts) == 4         # an arrow for each element added in
    one = CT.reduction_diagram(v2, step=1)
    assert len(one.axes) == 1 and "stride 4" in one.axes[0].get_title()
    assert sum(not isinstance(t, Annotation) for t in one.axes[0].texts) == 4   # the four values written
    fig = CT.access_diagram(v1)
    assert "2 idle threads" in fig.axes[0].get_title()


@pytest.fixture(scope="module")
def bwd():
    return CT.trace_layernorm("v2", INP, block=8, direction="backward")


def test_v2_backward_atomics_from_every_block(bwd):
    o = bwd.outputs
    norm = layernorm(INP)
    np.testing.assert_allclose(o["dweight"], (o["dout"] * norm).sum(0), atol=1e-5)
    np.testing.assert_allclose(o["dbias"], o["dout"].sum(0), atol=1e-5)
    dnorm = o["dout"] * o["weight"]
    rstd = 1 / np.sqrt(INP.var(-1, keepdims=True) + 1e-5)
    dinp = rstd * (dnorm - dnorm.mean(-1, keepdims=True) - norm * (dnorm * norm).mean(-1, keepdims=True))
    np.testing.assert_allclose(o["dinp"], dinp, atol=1e-5)
    assert "layernorm_backward_kernel_v2[grid=2, block=8]" in bwd.title()
    # every dweight element gets one atomic add from each block (row): that is why they must be atomic
    atomics = bwd.select(array="dweight", op="atomic")
    assert len(atomics) == 32
    for i in range(16):
        assert sorted((e.block, e.thread) for e in atomics if e.index == i) == [(0, i % 8), (1, i % 8)]
    assert not bwd.select(array="dweight", op="write")
    grid = CT.access_grid(bwd, "dweight", op="atomic")
    assert grid.shape == (16, 16) and np.all(grid.sum(axis=0) == 2)
    # its two block sums: of dnorm, then of dnorm * norm
    steps = CT.reduction_steps(bwd, 1, 1)
    np.testing.assert_allclose(steps[-1].scratch[0], (dnorm * norm)[1].sum(), rtol=1e-4)
    fig = CT.reduction_diagram(bwd, 0, 1)
    assert "sum of dnorm * norm" in fig._suptitle.get_text()
    fig = CT.access_diagram(bwd, "dweight", op="atomic")
    assert "atomics of dweight" in fig.axes[0].get_title()


def test_json_round_trip(v2):
    back = CT.Trace.from_json(v2.to_json())
    assert back.events == v2.events and back.shapes == v2.shapes
    np.testing.assert_array_equal(back.outputs["out"], v2.outputs["out"])
    assert CT.Trace.from_json(back.to_json()).events == v2.events


def test_bad_input_is_refused_before_any_run():
    with pytest.raises(ValueError, match="kernel must be one of"):
        CT.trace_layernorm("v9")
    with pytest.raises(ValueError, match="power-of-two"):
        CT.trace_layernorm("v2", block=6)
    with pytest.raises(ValueError, match="too big"):
        CT.trace_layernorm("v2", np.zeros((64, 128)))
    with pytest.raises(ValueError, match="direction must be"):
        CT.trace_layernorm("v2", direction="sideways")
    with pytest.raises(ValueError, match="v2 only"):
        CT.trace_layernorm("v1", direction="backward")
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        CT.trace_layernorm("v2", np.zeros(16))


def test_main_refuses_without_the_simulator(capsys):
    assert CT.main(["v2", "8"]) == 2
    assert "NUMBA_ENABLE_CUDASIM" in capsys.readouterr().err
