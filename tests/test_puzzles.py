"""The kernel puzzles (explain/puzzles.py): each reference solution passes its check, a classic wrong kernel fails
with a panel that says what is wrong (a value and where, an out-of-bounds index, a race), and the solution plugged
into the micro GPT-2 trains with live parity OK -- while a wrong plugged kernel is caught by parity, naming its op.

CUDA puzzles run in numba's simulator in a subprocess (as in a notebook); those tests are marked cudasim.
"""
import os

import numpy as np
import pytest

from gpt2lab.explain import cudatrace as CT
from gpt2lab.explain import puzzles as P
from gpt2lab.explain.puzzle_solutions import PUZZLE_SOLUTIONS
from gpt2lab.explain.solutions import solution_source

CUDA_PUZZLES = [n for n, p in P.PUZZLES.items() if p.device == "cuda"]


def solution(name: str) -> str:
    return P.kernel_source(PUZZLE_SOLUTIONS[name])


def broken(name: str, old: str, new: str) -> str:
    """The solution with one line changed: a classic mistake."""
    source = solution(name)
    assert old in source, f"{name}: {old!r} not in the solution"
    return source.replace(old, new)


# a classic wrong kernel per puzzle, and what its panel must say (a missing barrier gives wrong values or, when the
# simulated threads happen to run in a lucky order, right values and a race: either is a FAIL that says why)
WRONG = {
    "gelu_forward_kernel": (("    if i < n:", "    if i < n + 16:"), "out of bounds"),
    "residual_forward": (("out[i] = inp1[i] + inp2[i]", "inp1[i] += inp2[i]"), "out[4]"),
    "softmax_kernel": (("    m = scratch[0]\n    cuda.syncthreads()", "    m = scratch[0]\n"), ("differs", "race")),
    "layernorm_forward_kernel": (("/ float32(C) + EPS)", "/ float32(C)) + EPS"), "EPS inside the square root"),
    "matmul_tiled_kernel": (("        cuda.syncthreads()                      # all have used",
                             "        # all have used"), ("differs", "race")),
    "encoder_backward_kernel": (("cuda.atomic.add(dwte, (inp[b, t], c), d)", "dwte[inp[b, t], c] += d"),
                                "race on dwte"),
}


def test_every_puzzle_has_a_solution_a_wrong_kernel_and_a_skeleton():
    assert len(P.PUZZLES) >= 6
    assert set(PUZZLE_SOLUTIONS) == set(P.PUZZLES) == set(WRONG)
    for name, p in P.PUZZLES.items():
        assert f"def {name}(" in p.skeleton and "raise NotImplementedError" in p.skeleton
        assert f"def {name}(" in solution_source(name)          # show_solution finds it
    assert {p.op for p in P.PUZZLES.values()} >= {"gelu", "residual", "layernorm", "matmul", "encoder"}


def test_plug_in_swaps_only_the_puzzles_entry_point():
    from gpt2lab.gpt2.kernel_model import Kernels
    kernels = P.plug_in("gelu_forward_kernel", PUZZLE_SOLUTIONS["gelu_forward_kernel"])
    default = Kernels()
    assert kernels.gelu_forward is not default.gelu_forward
    assert kernels.matmul_forward is default.matmul_forward and kernels.gelu_backward is default.gelu_backward
    with pytest.raises(ValueError, match="no puzzle named 'nope'"):
        P.plug_in("nope", None)


# ---------------------------------------------------------------- the race detector, on hand-made traces
def _trace(events, shared=("tile",)):
    return CT.Trace("k", 2, 4, {"tile": (4,), "out": (4,)}, [CT.Event(i, *e) for i, e in enumerate(events)],
                    shared=list(shared))


def test_hazards_a_read_in_the_writing_phase_races_a_read_after_the_barrier_does_not():
    # (block, thread, array, index, op, phase, value)
    racy = _trace([(0, 1, "tile", 1, "write", 0, 1.0), (0, 0, "tile", 1, "read", 0, 1.0)])
    [h] = CT.hazards(racy)
    assert h.array == "tile" and "no barrier" in h.describe((4,))
    ordered = _trace([(0, 1, "tile", 1, "write", 0, 1.0), (0, 0, "tile", 1, "read", 1, 1.0)])
    assert CT.hazards(ordered) == []
    other_block = _trace([(0, 1, "tile", 1, "write", 0, 1.0), (1, 0, "tile", 1, "read", 0, 1.0)])
    assert CT.hazards(other_block) == []          # shared memory: each block has its own


def test_hazards_plain_adds_into_global_memory_race_atomic_ones_do_not():
    plain = _trace([(0, 0, "out", 2, "read", 0, 0.0), (0, 0, "out", 2, "write", 0, 1.0),
                    (1, 3, "out", 2, "read", 5, 1.0), (1, 3, "out", 2, "write", 5, 2.0)])
    assert [h.array for h in CT.hazards(plain)] == ["out"]      # across blocks, no barrier orders them
    atomic = _trace([(0, 0, "out", 2, "atomic", 0, 1.0), (1, 3, "out", 2, "atomic", 0, 2.0)])
    assert CT.hazards(atomic) == []


# ---------------------------------------------------------------- the CPU puzzle, in this process
def test_residual_solution_passes_and_a_wrong_one_fails_with_where():
    ok = P.check_puzzle("residual_forward", solution("residual_forward"))
    assert ok.ok, repr(ok)
    (old, new), word = WRONG["residual_forward"]
    bad = P.check_puzzle("residual_forward", broken("residual_forward", old, new))
    assert not bad.ok and word in bad.problem and bad.expected and bad.got, repr(bad)
    serial = P.check_puzzle("residual_forward", solution("residual_forward").replace("parallel=True", ""))
    assert not serial.ok and "parallel=True" in serial.problem


def test_residual_plugged_in_trains_with_parity_ok_and_a_wrong_one_is_named(one_torch_thread):
    run = P.train_with("residual_forward", solution("residual_forward"), steps=3)
    assert run.ok and len(run.losses) == 3 and run.losses[-1] < run.losses[0], repr(run)
    assert run.op_rows() and all(r["ok"] for r in run.op_rows())
    # (WRONG's kernel writes into inp1, the stream itself: parity then names the op that made it, the encoder)
    bad = P.train_with("residual_forward", broken("residual_forward", "inp1[i] + inp2[i]", "inp1[i]"), steps=1,
                      check_first=False)
    assert not bad.ok and bad.first_failure()["op"] == "residual", repr(bad)


# ---------------------------------------------------------------- the CUDA puzzles, in the simulator
@pytest.mark.cudasim
@pytest.mark.parametrize("name", CUDA_PUZZLES)
def test_cuda_solution_passes_with_its_trace(name):
    result = P.check_puzzle(name, solution(name))
    assert result.ok, repr(result)
    assert result.trace is not None and result.trace.events and CT.hazards(result.trace) == []
    import matplotlib
    matplotlib.use("Agg")
    fig = P.draw_puzzle(name, solution(name))          # the same run, from memory: the learner's picture
    assert fig.get_size_inches()[1] * fig.dpi <= 800


@pytest.mark.cudasim
@pytest.mark.parametrize("name", CUDA_PUZZLES)
def test_cuda_wrong_kernel_fails_with_a_useful_panel(name):
    (old, new), word = WRONG[name]
    result = P.check_puzzle(name, broken(name, old, new))
    assert not result.ok, repr(result)
    words = (word,) if isinstance(word, str) else word
    assert any(w in repr(result) for w in words) and "Traceback" not in repr(result), repr(result)
    assert result.hint, repr(result)


@pytest.mark.cudasim
def test_cuda_skeleton_and_a_cell_that_does_not_load_fail_gently():
    skeleton = P.check_puzzle("gelu_forward_kernel", P.GELU.skeleton)
    assert not skeleton.ok and "not written yet" in skeleton.problem
    # drawing and training a kernel that fails its check give the panel back, not a traceback
    assert not P.draw_puzzle("gelu_forward_kernel", P.GELU.skeleton).ok
    assert "fix the check first" in P.train_with("gelu_forward_kernel", P.GELU.skeleton).problem
    broken_cell = P.check_puzzle("gelu_forward_kernel", "@cuda.jit\ndef gelu_forward_kernel(out, inp, n)\n    pass\n")
    assert not broken_cell.ok and "does not load" in broken_cell.problem


# Three verified steps of the micro GPT-2 with the learner's kernel in every launch of its op: 8-11 s each in
# our simulator (puzzle_sim installs it; numba's own took 20-70 s, and lesson 6's matmul over 600 s on a busy
# machine), so every puzzle's plug-in runs in `make test`.
@pytest.mark.cudasim
@pytest.mark.parametrize("name", CUDA_PUZZLES)
def test_cuda_solution_plugged_in_trains_with_parity_ok(name):
    run = P.train_with(name, solution(name), steps=3)
    assert run.ok and run.losses[-1] < run.losses[0], repr(run)
    assert run.op_rows() and all(r["ok"] for r in run.op_rows()), repr(run)


@pytest.mark.cudasim
@pytest.mark.parametrize("name, old, new", [
    ("gelu_forward_kernel", "out[i] = float32(0.5) * x", "out[i] = x"),                       # forgot the 1/2
    ("encoder_backward_kernel", "cuda.atomic.add(dwte, (inp[b, t], c), d)", "dwte[inp[b, t], c] = d"),
])
def test_cuda_wrong_kernel_plugged_in_is_caught_by_parity_naming_its_op(name, old, new):
    run = P.train_with(name, broken(name, old, new), steps=1, check_first=False)
    assert not run.ok and run.first_failure()["op"] == P.PUZZLES[name].op, repr(run)


@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="PTX needs the real numba.cuda")
@pytest.mark.parametrize("name, signature", [
    ("gelu_forward_kernel", "void(float32[::1], float32[::1], int64)"),
    ("softmax_kernel", "void(float32[:, ::1], float32[:, ::1])"),
    ("layernorm_forward_kernel", "void(float32[:, ::1], float32[::1], float32[::1], float32[:, ::1], "
                                 "float32[::1], float32[::1])"),
    ("matmul_tiled_kernel", "void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1])"),
    ("encoder_backward_kernel", "void(float32[:, ::1], float32[:, ::1], float32[:, :, ::1], int32[:, ::1])"),
])
def test_cuda_solutions_compile_to_float32_ptx(name, signature):
    from gpt2lab.kernels._cuda import compile_ptx
    ptx = compile_ptx(PUZZLE_SOLUTIONS[name], signature)
    assert ".entry" in ptx and ".f64" not in ptx


def test_the_lessons_puzzle_cells_are_the_puzzles_skeletons_and_their_checks():
    import jupytext
    from pathlib import Path
    placed = {}
    for src in sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("0*.py")):
        cells = jupytext.read(src).cells
        for i, cell in enumerate(cells):
            tags = cell.get("metadata", {}).get("tags", [])
            if "puzzle" in tags and "exercise" in tags:
                name = cell.source.split("def ", 1)[1].split("(", 1)[0]
                assert cell.source.strip() == P.PUZZLES[name].skeleton.strip(), f"{src.name}: {name}'s skeleton"
                check_cell = cells[i + 1]
                assert "check" in check_cell.metadata.get("tags", [])
                assert f'check("{name}", {name})' in check_cell.source
                placed[name] = src.stem
    assert set(placed) == set(P.PUZZLES), placed
