"""Each lesson's exercise, as `make lab` gives it to a learner, fails with a wrong answer and passes with a right one.

The lesson is built by the same code as `make lab` (tools/build_lab.py). Its `exercise` cell is replaced by the
skeleton it ships with, then a wrong answer, then the solution from the package, each followed by the lesson's own
cells up to and including its `check` cell (so a solution cell slipped in between would be caught), all run in one
real kernel. The check must say FAIL (without an error or traceback) twice, then OK.
Only those cells run, after `import numpy as np` (every lesson imports it first): a full lesson run takes minutes
and is `make test-notebooks`' job; the cells after the exercise must not use the learner's function, which is
checked on the source.
"""
import re
import sys
from pathlib import Path

import nbformat
import pytest

from gpt2lab.explain.solutions import solution_source

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from build_lab import learner_notebook  # noqa: E402

# A classic mistake for each exercise: each passes some cases, so the check has to look closely.
WRONG = {
    "pair_counts": '''
def pair_counts(chunks):
    counts = {}
    for ids in chunks:                        # forgets how often each chunk occurs
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
    return counts
''',
    "embedding_backward": '''
def embedding_backward(dx, ids, V, maxT):
    dwte = np.zeros((V, dx.shape[-1]), np.float32)
    dwpe = np.zeros((maxT, dx.shape[-1]), np.float32)
    dwte[ids] += dx                           # a repeated token keeps only one of its gradients
    dwpe[:ids.shape[1]] = dx.sum(0)
    return dwte, dwpe
''',
    "causal_softmax": '''
def causal_softmax(scaled):
    e = np.exp(scaled - scaled.max(axis=1, keepdims=True))   # forgets the mask: tokens see the future
    return e / e.sum(axis=1, keepdims=True)
''',
    "layernorm_backward_np": '''
def layernorm_backward_np(dout, x, gamma, mean, rstd):
    norm = (x - mean[..., None]) * rstd[..., None]
    dx = dout * gamma * rstd[..., None]       # forgets the gradient through mean and rstd
    return dx, (dout * norm).sum((0, 1)), dout.sum((0, 1))
''',
    "backward": '''
def backward(root):
    root.grad = 1.0
    def visit(node):                          # no set of visited nodes: a node reached twice passes its
        node._backward()                      # gradient on twice, and before every path has delivered
        for child in node._prev:
            visit(child)
    visit(root)
''',
    "adamw_update": '''
def adamw_update(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay):
    params -= lr * weight_decay * params
    m[:] = beta1 * m + (1 - beta1) * grads
    v[:] = beta2 * v + (1 - beta2) * grads * grads
    params -= lr * m / (np.sqrt(v) + eps)     # forgets the bias correction
''',
    "mlp_backward": '''
def mlp_backward(dout, x, w_fc, b_fc, w_proj):
    from gpt2lab.explain.mlp import gelu
    h = x @ w_fc.T + b_fc
    dh = dout @ w_proj                        # forgets GELU's derivative: as if the MLP were linear
    return dh @ w_fc, dh.T @ x, dh.sum(0), dout.T @ gelu(h), dout.sum(0)
''',
    "broken_op": '''
def broken_op(rows):
    worst = max(rows, key=lambda r: r["ratio"])   # the largest error: often downstream of the broken kernel
    return worst["op"]
''',
}

LESSONS = sorted((ROOT / "notebooks").glob("0[1-8]_*.py"))


def exercise_cells(nb):
    """(index of the exercise cell, the function it defines, the code cells from after it to its check)."""
    # kernel puzzles (tagged "puzzle" too) have their own tests: tests/test_puzzles.py
    plain = [(i, c.metadata.get("tags", [])) for i, c in enumerate(nb.cells)
             if "puzzle" not in c.metadata.get("tags", [])]
    [k] = [i for i, tags in plain if "exercise" in tags]
    [j] = [i for i, tags in plain if "check" in tags]
    name = re.search(r"^def (\w+)\(", nb.cells[k].source, re.M).group(1)
    return k, name, [c for c in nb.cells[k + 1:j + 1] if c.cell_type == "code"]


def verdicts(outputs) -> str:
    """The text a learner sees under a check cell."""
    texts = []
    for out in outputs:
        assert out.output_type != "error", f"the check raised: {out.get('ename')}: {out.get('evalue')}"
        texts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_every_lesson_has_a_wrong_answer_here():
    assert sorted(exercise_cells(learner_notebook(src))[1] for src in LESSONS) == sorted(WRONG)


@pytest.mark.parametrize("src", LESSONS, ids=lambda p: p.stem)
def test_a_wrong_answer_fails_and_the_solution_passes_in_the_lab_notebook(src):
    from nbclient import NotebookClient
    lesson = learner_notebook(src)
    k, name, checking = exercise_cells(lesson)     # the check cell, and any cell between it and the exercise
    later = "\n".join(c.source for c in lesson.cells[k + 1:] if c.cell_type == "code" and c not in checking)
    assert not re.search(rf"\b{name}\b", later), f"{src.name}: a cell after the exercise uses {name}()"

    attempts = [("skeleton", lesson.cells[k].source), ("wrong", WRONG[name]), ("solution", solution_source(name))]
    run = nbformat.v4.new_notebook(metadata=lesson.metadata)
    run.cells = [nbformat.v4.new_code_cell("import numpy as np")]
    for _, source in attempts:
        run.cells += [nbformat.v4.new_code_cell(source)] + [nbformat.v4.new_code_cell(c.source) for c in checking]
    NotebookClient(run, timeout=300, kernel_name="python3").execute()

    step = 1 + len(checking)
    seen = {what: verdicts(run.cells[step * (i + 1)].outputs) for i, (what, _) in enumerate(attempts)}
    assert seen["skeleton"].startswith("FAIL") and "not written yet" in seen["skeleton"], seen["skeleton"]
    assert seen["wrong"].startswith("FAIL") and "expected" in seen["wrong"], seen["wrong"]
    assert seen["solution"].startswith("OK"), seen["solution"]
    assert "Traceback" not in "".join(seen.values())
