"""explain.exercises / exercise / solutions: every check passes its solution and fails wrong answers with a panel,
never an exception."""
import numpy as np
import pytest

from gpt2lab.datasets.bpe import count_pairs
from gpt2lab.explain import solutions as S
from gpt2lab.explain.check import first_mismatch
from gpt2lab.explain.exercise import CheckResult
from gpt2lab.explain.exercises import EXERCISES, check, check_pair_counts


def not_written(*args):
    raise NotImplementedError("write me, then run the check below")


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_every_solution_passes_and_the_skeleton_fails_without_raising(name):
    right = check(name, S.SOLUTIONS[name])
    assert right and right.verdict == "OK" and repr(right).startswith("OK")
    skeleton = check(name, not_written)
    assert not skeleton and repr(skeleton).startswith("FAIL")
    assert "not written yet" in skeleton.problem and skeleton.given
    assert f'show_solution("{name}")' in repr(skeleton)


def test_solutions_are_revealed_on_request(capsys):
    S.show_solution("pair_counts")
    out = capsys.readouterr().out
    assert out.startswith("def pair_counts(chunks):") and "freq" in out
    with pytest.raises(ValueError, match="no exercise named 'nope'"):
        S.show_solution("nope")
    with pytest.raises(ValueError, match="no exercise named 'nope'"):
        check("nope", S.pair_counts)


def test_a_failing_panel_shows_input_expected_got_and_hint():
    r = check_pair_counts(lambda chunks: count_pairs({ids: 1 for ids in chunks}), text="to be or not to be")
    assert not r
    assert r.given == "chunks = {(1, 2, 1, 2): 3, (2, 1): 1}"
    assert r.problem == "the count of pair (1, 2) is wrong" and (r.expected, r.got) == ("6", "2")
    assert "counts[pair] += freq" in r.hint
    text, page = repr(r), r._repr_html_()
    for word in ("FAIL", "input", "expected", "got", "hint", "the count of pair (1, 2) is wrong"):
        assert word in text and word in page
    assert "Traceback" not in text


def test_an_exception_in_the_learners_code_is_a_fail_line_not_a_crash():
    r = check("causal_softmax", lambda s: s[None] @ np.ones(3))
    assert not r and r.problem.startswith("your function raised ValueError")
    assert not check("pair_counts", 42) and "expected a function" in check("pair_counts", 42).problem


def test_the_panel_is_html_escaped():
    r = CheckResult("x", False, ["<b>"], given="<script>", problem="a < b")
    assert "<script>" not in r._repr_html_() and "&lt;script&gt;" in r._repr_html_()


# --- each exercise rejects the classic mistakes, with the hint that fits ---

def pairs_unweighted(chunks):
    return count_pairs({ids: 1 for ids in chunks})


def embedding_assign_not_add(dx, ids, V, maxT):
    dwte, dwpe = np.zeros((V, dx.shape[-1]), np.float32), np.zeros((maxT, dx.shape[-1]), np.float32)
    dwte[ids] += dx                       # buffered: a repeated id keeps one gradient
    dwpe[:ids.shape[1]] = dx.sum(0)
    return dwte, dwpe


def softmax_no_mask(scaled):
    e = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_no_max(scaled):
    T = scaled.shape[0]
    with np.errstate(all="ignore"):
        e = np.exp(np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, scaled))
        return e / e.sum(axis=1, keepdims=True)


def backward_no_seed(root):
    from gpt2lab.explain.autograd import topological_order
    for node in reversed(topological_order(root)):   # forgets root.grad = 1: nothing to pass on
        node._backward()


def backward_forward_order(root):
    from gpt2lab.explain.autograd import topological_order
    root.grad = 1.0
    for node in topological_order(root):             # inputs first: they pass on gradients not yet arrived
        node._backward()


def adamw_no_bias_correction(p, g, m, v, t, lr, b1, b2, eps, wd):
    p -= lr * wd * p
    m[:] = b1 * m + (1 - b1) * g
    v[:] = b2 * v + (1 - b2) * g * g
    p -= lr * m / (np.sqrt(v) + eps)


def adamw_rebinds_m(p, g, m, v, t, lr, b1, b2, eps, wd):
    m = b1 * m + (1 - b1) * g              # a new array: the caller's m stays zero
    v[:] = b2 * v + (1 - b2) * g * g
    S.adamw_update(p, g, m.copy(), v.copy(), t, lr, b1, b2, eps, wd)


@pytest.mark.parametrize("name,wrong,problem,hint", [
    ("pair_counts", pairs_unweighted, "the count of pair", "+= freq"),
    ("embedding_backward", embedding_assign_not_add, "dwte[", "np.add.at"),
    ("embedding_backward", lambda dx, ids, V, T: S.embedding_backward(dx, ids, V, T)[0], "as a tuple", ""),
    ("causal_softmax", softmax_no_mask, "weights[", "-inf"),
    ("causal_softmax", softmax_no_max, "not a finite number", "subtract each row's max"),
    ("causal_softmax", lambda s: s[:-1], "wrong shape", ""),
    ("backward", backward_no_seed, "every gradient is still 0", "root.grad = 1.0"),
    ("backward", backward_forward_order, ".grad is wrong", "reverse order"),
    ("layernorm_backward_np", lambda *a: (S.layernorm_backward_np(*a)[0],) + S.layernorm_backward_np(*a)[1:][::-1],
     "dgamma", "sum of dout * norm"),
    ("layernorm_backward_np", lambda *a: S.layernorm_backward_np(*a)[0], "as a tuple", ""),
    ("adamw_update", adamw_no_bias_correction, "params[", "bias correction"),
    ("adamw_update", adamw_rebinds_m, "m[", "in place"),
])
def test_wrong_answers_fail_with_a_matching_hint(name, wrong, problem, hint):
    r = check(name, wrong)
    assert not r and r.verdict == "FAIL"
    assert problem in r.problem and hint in r.hint and r.given


def test_first_mismatch_points_at_the_worst_element():
    ref = np.zeros((2, 3))
    ours = ref.copy()
    ours[1, 2] = 0.5
    m = first_mismatch("dw", ours, ref)
    assert m.problem.startswith("dw[1, 2] differs") and (m.expected, m.got) == ("0", "0.5")
    assert first_mismatch("dw", ref, ref) is None
    assert "missing" in first_mismatch("dw", None, ref).problem
    assert "wrong shape" in first_mismatch("dw", ref[0], ref).problem
